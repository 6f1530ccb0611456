"""The FaceCLIP-SDXL family as the registry lists it: its constants and its loaders in one value."""

from __future__ import annotations

from faceclip.model_family import ModelFamily
from faceclip.pipelines.sdxl.family import (
    DEFAULTS,
    LICENSE_NOTICE,
    RELEASED_ENCODER_FILE,
    RELEASED_REPO,
    RELEASED_UNET_FILE,
    SDXL_BASE,
    TINY_RANDOM,
)
from faceclip.pipelines.sdxl.loading import load_faceclip_encoder, load_sdxl_pipeline

FACECLIP_SDXL = ModelFamily(
    name="faceclip-sdxl",
    title="FaceCLIP-SDXL",
    pipeline_class_name="FaceCLIPStableDiffusionXLPipeline",
    tiny_name=TINY_RANDOM,
    released_repo=RELEASED_REPO,
    released_files=(RELEASED_ENCODER_FILE, RELEASED_UNET_FILE),
    base_model=SDXL_BASE,
    defaults=DEFAULTS,
    license_notice=LICENSE_NOTICE,
    load=load_sdxl_pipeline,
    load_encoder=load_faceclip_encoder,
)
