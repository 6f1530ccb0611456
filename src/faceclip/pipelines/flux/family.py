"""The FaceT5-FLUX family's constants, spelled once: names, released files, defaults and licences.

:mod:`faceclip.pipelines.flux.registration` bundles them with the loaders into the family's
:class:`~faceclip.model_family.ModelFamily`; every surface reads them from there or from here.
"""

from __future__ import annotations

from faceclip.model_family import GenerationDefaults

RELEASED_REPO = "ByteDance/FaceCLIP"
"""The same hub repo as FaceCLIP-SDXL: both families' files live in it (``--family`` picks one)."""
RELEASED_ENCODER_FILE = "model/face_t5_encoder.pt"
RELEASED_TRANSFORMER_FILE = "model/dit.pt"
RELEASED_TOKENIZER_FOLDER = "model/tokenizer"
FLUX_BASE = "black-forest-labs/FLUX.1-dev"
"""The base model FaceT5-FLUX was fine-tuned from: its VAE, scheduler and transformer config complete the
released files."""

TINY_RANDOM_FLUX = "tiny-random-flux"

NEGATIVE_PROMPT = (
    "digital painting, 3d render, CGI, cartoon, anime, unreal, stylized, overexposed, glossy skin, wearing mask, "
    "looking away from the camera, wearing glasses, wearing sunglasses, nude, worst quality, low quality, normal "
    "quality, nsfw, abstract, glitch, deformed, mutated, ugly, disfigured, text, watermark, bad hands, error, "
    "jpeg artifacts, blurry, missing fingers, poorly drawn face, ugly eyes, imperfect eyes, deformed pupils, "
    "deformed iris, bad anatomy"
)
"""The negative prompt of the released FaceT5-FLUX inference script (paired with a zero face)."""

DEFAULTS = GenerationDefaults(
    height=1152,
    width=864,
    native_size=1024,
    num_inference_steps=50,
    guidance_scale=1.0,
    negative_prompt=NEGATIVE_PROMPT,
    true_cfg_scale=3.5,
    size_multiple=16,
)
"""The released script's settings: 50 steps at 1152 x 864, distilled guidance 1.0 and true CFG 3.5 (two
transformer passes per step)."""

LICENSE_NOTICE = (
    "The released FaceCLIP weights (ByteDance/FaceCLIP) are licensed CC-BY-NC-4.0, and FaceT5-FLUX is a "
    "fine-tune of FLUX.1-dev, which is under the FLUX.1 [dev] Non-Commercial License: non-commercial use only."
)
