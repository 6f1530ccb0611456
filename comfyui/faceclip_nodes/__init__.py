"""FaceCLIP nodes for ComfyUI: load the encoder, align a face, encode face + prompt into SDXL CONDITIONING.

Copy or link this folder into ``ComfyUI/custom_nodes/``. With ComfyUI's V3 node API (``comfy_api.latest``) the
nodes register through :func:`comfy_entrypoint`; older ComfyUI versions read ``NODE_CLASS_MAPPINGS``. ComfyUI
reads ``NODE_CLASS_MAPPINGS`` first when it is set, so it is ``None`` where the V3 API is there.
"""

from __future__ import annotations

import importlib.util

from .legacy import DISPLAY_NAMES, LEGACY_CLASSES
from .model_folder import register_model_folder

register_model_folder()


def has_v3_api() -> bool:
    """Whether ComfyUI's ``comfy_api.latest`` can be imported here."""
    try:
        return importlib.util.find_spec("comfy_api.latest") is not None
    except ImportError:  # no comfy_api package at all
        return False


async def comfy_entrypoint():
    """The V3 extension (ComfyUI calls this at start-up)."""
    from .v3 import FaceCLIPExtension

    return FaceCLIPExtension()


NODE_CLASS_MAPPINGS = None if has_v3_api() else LEGACY_CLASSES
NODE_DISPLAY_NAME_MAPPINGS = None if has_v3_api() else DISPLAY_NAMES

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
