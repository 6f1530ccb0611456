"""The FaceCLIP-SDXL family's constants, spelled once: names, released files, defaults and licence.

:mod:`faceclip.pipelines.sdxl.registration` bundles them with the loaders into the family's
:class:`~faceclip.model_family.ModelFamily`; every surface reads them from there or from here.
"""

from __future__ import annotations

from faceclip.model_family import GenerationDefaults

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
