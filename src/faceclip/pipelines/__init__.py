"""Generation pipelines on diffusers, one folder per model family, and the face input they share.

>>> from faceclip import load_pipeline
>>> pipe = load_pipeline("tiny-random")                       # or the released "ByteDance/FaceCLIP"
>>> images = pipe(face_image="photo.jpg", prompt="a person hiking", num_inference_steps=2).images
"""

from faceclip.pipelines import quiet_diffusers_pipelines  # noqa: F401 (first: see its docstring)
from faceclip.pipelines.face_input import FACE_SIZE, PreparedFace, prepare_face
from faceclip.pipelines.sdxl import FaceCLIPStableDiffusionXLPipeline
from faceclip.pipelines.sdxl.tiny import build_tiny_components

__all__ = [
    "FACE_SIZE",
    "FaceCLIPStableDiffusionXLPipeline",
    "PreparedFace",
    "build_tiny_components",
    "prepare_face",
]
