"""A Gradio web demo for both model families (needs the ``demo`` extra: ``pip install "faceclip[demo]"``).

Example:
    >>> from faceclip import load_pipeline
    >>> from faceclip.demo import DemoConfig, create_demo, launch_demo
    >>> config = DemoConfig(model_name="tiny-random")
    >>> launch_demo(create_demo(load_pipeline("tiny-random"), config), config)  # doctest: +SKIP

Several models in one page, loaded when chosen (see :class:`ModelPool`):
    >>> from faceclip.demo import DemoModel, ModelPool
    >>> from faceclip.registry import resolve_model
    >>> names = ["tiny-random", "tiny-random-flux"]
    >>> models = [DemoModel.from_source(name, resolve_model(name)) for name in names]
    >>> pool = ModelPool(models, load=lambda name: load_pipeline(name).to(device))  # doctest: +SKIP
    >>> launch_demo(create_demo(pool, config), config)  # doctest: +SKIP
"""

from faceclip.demo.app import DemoConfig, create_demo, launch_demo
from faceclip.demo.handlers import DemoError, FormValues
from faceclip.demo.models import DemoModel, ModelPool

__all__ = ["DemoConfig", "DemoError", "DemoModel", "FormValues", "ModelPool", "create_demo", "launch_demo"]
