"""Tiny random FaceCLIP-SDXL components: the whole pipeline in seconds on a CPU, for tests and dry runs.

The images they produce are noise. The UNet has SDXL's structure (text-time added conditioning,
cross-attention blocks, linear projections) at a few thousand times fewer parameters; its cross-attention and
added-embedding widths follow the tiny encoder's ``prompt_embeds_dim`` and ``pooled_dim``.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

from faceclip.pipelines.sdxl.architectures import architecture_config

TINY_RANDOM = "tiny-random"
"""The model name that selects these components in ``load_pipeline`` and ``faceclip generate --model``."""

SDXL_TIME_IDS = 6
"""SDXL's added time ids: original size (2), crop top-left (2), target size (2)."""


def build_tiny_components(seed: int = 0) -> dict[str, torch.nn.Module | EulerDiscreteScheduler]:
    """Tiny random ``vae``, ``unet``, ``scheduler`` and ``faceclip_encoder`` with matching sizes.

    Args:
        seed: seeds the random weights; the global RNG is left untouched.

    Returns:
        A dict to pass as ``FaceCLIPStableDiffusionXLPipeline(**components)``; models in eval mode, fp32, CPU.
    """
    from faceclip.models import create_encoder

    encoder = create_encoder("faceclip-tiny", seed=seed)
    unet_config = architecture_config("tiny_unet")
    unet_config.update(
        cross_attention_dim=encoder.prompt_embeds_dim,
        projection_class_embeddings_input_dim=SDXL_TIME_IDS * unet_config["addition_time_embed_dim"]
        + encoder.pooled_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(unet_config).eval()
        vae = AutoencoderKL.from_config(architecture_config("tiny_vae")).eval()
    scheduler = EulerDiscreteScheduler.from_config(architecture_config("sdxl_scheduler"))
    return {"vae": vae, "unet": unet, "scheduler": scheduler, "faceclip_encoder": encoder}
