"""The FaceCLIP-SDXL family, declared once: names, released files, defaults and licence.

Every surface (pipeline defaults, ``faceclip generate``, the demo, ``faceclip eval run``, training) reads these
values from :data:`FACECLIP_SDXL` through :mod:`faceclip.registry`; none spells them again.
"""

from __future__ import annotations

from faceclip.model_family import GenerationDefaults, ModelFamily, ModelSource

RELEASED_REPO = "ByteDance/FaceCLIP"
RELEASED_ENCODER_FILE = "model/face_clip_encoder.pt"
RELEASED_UNET_FILE = "model/unet.pt"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
"""The SDXL base model FaceCLIP-SDXL was fine-tuned from: its VAE, scheduler and UNet config complete the
released files."""

TINY_RANDOM = "tiny-random"

NEGATIVE_PROMPT = (
    "nude, worst quality, low quality, normal quality, nsfw, abstract, glitch, deformed, mutated, ugly, "
    "disfigured, text, watermark, bad hands, error, jpeg artifacts, blurry, missing fingers, poorly drawn face, "
    "ugly eyes, imperfect eyes, deformed pupils, deformed iris, bad anatomy"
)
"""The negative prompt of the released FaceCLIP-SDXL inference script."""

DEFAULTS = GenerationDefaults(
    height=1152,
    width=864,
    native_size=1024,
    num_inference_steps=50,
    guidance_scale=5.0,
    negative_prompt=NEGATIVE_PROMPT,
)
"""The released script's portrait size and SDXL's defaults (50 Euler steps, guidance 5.0)."""

LICENSE_NOTICE = (
    "The released FaceCLIP weights (ByteDance/FaceCLIP) are licensed CC-BY-NC-4.0: non-commercial use only."
)


def _load(source: ModelSource, **options):
    from faceclip.pipelines.sdxl.loading import load_sdxl_pipeline

    return load_sdxl_pipeline(source, **options)


def _load_encoder(source: ModelSource, **options):
    from faceclip.pipelines.sdxl.loading import load_faceclip_encoder

    return load_faceclip_encoder(source, **options)


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
    load=_load,
    load_encoder=_load_encoder,
)
