"""FaceCLIP-SDXL generation on diffusers: the pipeline, its loaders and tiny test components.

>>> from faceclip.pipelines import load_pipeline
>>> pipe = load_pipeline("tiny-random")                       # or the released "ByteDance/FaceCLIP"
>>> images = pipe(face_image="photo.jpg", prompt="a person hiking", num_inference_steps=2).images
"""

from faceclip.pipelines.embedding_cache import CacheInfo
from faceclip.pipelines.face_input import FACE_SIZE, PreparedFace, prepare_face
from faceclip.pipelines.loading import RELEASED_REPO, load_pipeline, load_released_components
from faceclip.pipelines.pipeline_faceclip_sdxl import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_HEIGHT,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_NUM_INFERENCE_STEPS,
    DEFAULT_WIDTH,
    FaceCLIPStableDiffusionXLPipeline,
    FaceCLIPStableDiffusionXLPipelineOutput,
)
from faceclip.pipelines.tiny import TINY_RANDOM, build_tiny_components

__all__ = [
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_HEIGHT",
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_NUM_INFERENCE_STEPS",
    "DEFAULT_WIDTH",
    "FACE_SIZE",
    "RELEASED_REPO",
    "TINY_RANDOM",
    "CacheInfo",
    "FaceCLIPStableDiffusionXLPipeline",
    "FaceCLIPStableDiffusionXLPipelineOutput",
    "PreparedFace",
    "build_tiny_components",
    "load_pipeline",
    "load_released_components",
    "prepare_face",
]
