"""A Gradio web demo for FaceCLIP-SDXL (needs the ``demo`` extra: ``pip install "faceclip[demo]"``).

Example:
    >>> from faceclip import load_pipeline
    >>> from faceclip.demo import DemoConfig, create_demo, launch_demo
    >>> config = DemoConfig(model_name="tiny-random")
    >>> launch_demo(create_demo(load_pipeline("tiny-random"), config), config)  # doctest: +SKIP
"""

from faceclip.demo.app import DemoConfig, create_demo, launch_demo
from faceclip.demo.handlers import DemoError, FormValues

__all__ = ["DemoConfig", "DemoError", "FormValues", "create_demo", "launch_demo"]
