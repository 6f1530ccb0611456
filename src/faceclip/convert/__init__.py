"""Converters from the released checkpoint layouts to ours, one module per released file.

- :mod:`faceclip.convert.faceclip_encoder`: ``model/face_clip_encoder.pt`` -> :class:`faceclip.models.FaceCLIPEncoder`;
- :mod:`faceclip.convert.sdxl_unet`: ``model/unet.pt`` -> diffusers' ``UNet2DConditionModel``.

A second model family adds its own modules here.
"""

from faceclip.convert.faceclip_encoder import (
    CheckpointKeyError,
    convert_released_state_dict,
    load_released_state_dict,
    released_key_map,
)
from faceclip.convert.facet5_files import convert_facet5_encoder

__all__ = [
    "CheckpointKeyError",
    "convert_facet5_encoder",
    "convert_released_state_dict",
    "load_released_state_dict",
    "released_key_map",
]
