"""Import diffusers' pipeline modules without transformers' warnings about image processors we never use.

diffusers' SDXL and FLUX pipeline modules name transformers' CLIP and SigLIP image processors (IP-Adapter
inputs). Without torchvision, which this package keeps out of the environment, transformers prints a warning for
each on first use, in every command. Importing them here once, with transformers' logging at ``error``, lets
transformers make its (silent) fallback; later imports find it done.
"""

from transformers.utils import logging as _transformers_logging

_verbosity = _transformers_logging.get_verbosity()
_transformers_logging.set_verbosity_error()
try:
    import diffusers.pipelines.flux.pipeline_flux
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl  # noqa: F401
finally:
    _transformers_logging.set_verbosity(_verbosity)
