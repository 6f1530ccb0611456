"""faceclip: FaceCLIP (arXiv 2504.14202), a joint identity-text encoder and FaceCLIP-SDXL.

Data flow: photo -> :mod:`faceclip.face` (detect, align) -> :mod:`faceclip.models` (joint encoder)
-> :mod:`faceclip.pipelines` (SDXL) -> image.

Heavy modules are imported lazily, so ``import faceclip`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "FaceCLIPEncoder": "faceclip.models.encoder",
    "FaceCLIPEncoderOutput": "faceclip.models.encoder",
    "FaceCLIPStableDiffusionXLPipeline": "faceclip.pipelines.sdxl.pipeline_faceclip_sdxl",
    "FaceT5Encoder": "faceclip.models.facet5_encoder",
    "FaceAnalyzer": "faceclip.face",
    "NoFaceFoundError": "faceclip.face",
    "load_image": "faceclip.face",
    "load_pipeline": "faceclip.registry",
}

__all__ = [  # noqa: RUF022 (same order as _LAZY)
    "__version__",
    "FaceCLIPEncoder",
    "FaceCLIPEncoderOutput",
    "FaceCLIPStableDiffusionXLPipeline",
    "FaceT5Encoder",
    "FaceAnalyzer",
    "NoFaceFoundError",
    "load_image",
    "load_pipeline",
]

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.face import FaceAnalyzer, NoFaceFoundError, load_image
    from faceclip.models.encoder import FaceCLIPEncoder, FaceCLIPEncoderOutput
    from faceclip.models.facet5_encoder import FaceT5Encoder
    from faceclip.pipelines.sdxl.pipeline_faceclip_sdxl import FaceCLIPStableDiffusionXLPipeline
    from faceclip.registry import load_pipeline


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'faceclip' has no attribute {name!r}")
