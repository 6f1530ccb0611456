"""Initialising FaceCLIP's text towers from SDXL's own text encoders.

SDXL base (``stabilityai/stable-diffusion-xl-base-1.0``) ships a CLIP ViT-L/14 text encoder
(``text_encoder/``, no projection) and an OpenCLIP bigG text encoder with projection (``text_encoder_2/``),
both in the ``transformers`` CLIP layout, which is the layout of :class:`faceclip.models.text_tower.CLIPTextTower`
up to prefixes.
"""

from __future__ import annotations

import logging
import os

import torch

from faceclip.hub import resolve_file

logger = logging.getLogger(__name__)

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
SUBFOLDERS = {"l": "text_encoder", "g": "text_encoder_2"}


def sdxl_text_state_to_tower(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers ``CLIPTextModel(WithProjection)`` state dict to ``CLIPTextTower`` keys."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["position_embedding"] = value
        elif key.startswith(("encoder.layers.", "final_layer_norm.")):
            out[key.removeprefix("encoder.")] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # Linear (proj, D) -> Parameter (D, proj)
    return out


def init_text_towers_from_sdxl(
    encoder, source: str | os.PathLike = SDXL_BASE, branches: tuple[str, ...] = ("l", "g")
):
    """Copy SDXL's text encoder weights into the encoder's text towers (in place).

    Args:
        encoder: a :class:`faceclip.models.FaceCLIPEncoder`.
        source: SDXL base hub id or local folder (``text_encoder/model.safetensors``,
            ``text_encoder_2/model.safetensors``).
        branches: which towers to initialise: ``"l"`` from ``text_encoder``, ``"g"`` from ``text_encoder_2``.

    Returns:
        The encoder.

    Raises:
        faceclip.hub.WeightsNotFoundError: a weights file is not available (offline and not cached, wrong path).
        ValueError: a tensor's shape does not fit the tower (wrong SDXL folder or encoder config).
    """
    from safetensors.torch import load_file

    for name in branches:
        subfolder = SUBFOLDERS[name]
        path = resolve_file(
            source, f"{subfolder}/model.safetensors", what=f"SDXL's {subfolder} weights",
            hint="Stage 1 can also start from the text towers already in the encoder (leave "
            "model.init_text_towers_from unset).",
        )  # fmt: skip
        tower = getattr(encoder, f"branch_{name}").text_tower
        mapped = sdxl_text_state_to_tower(load_file(path))
        own = tower.state_dict()
        for key, value in mapped.items():
            if key not in own or own[key].shape != value.shape:
                raise ValueError(
                    f"{path}: '{key}' {tuple(value.shape)} does not fit the branch_{name} text tower "
                    f"({tuple(own[key].shape) if key in own else 'no such key'}); check the encoder config."
                )
        missing = sorted(set(own) - set(mapped))
        tower.load_state_dict(mapped, strict=False)
        if missing:
            logger.warning("branch_%s text tower: %s not in %s, left as they were", name, missing, path)
        logger.info("branch_%s text tower initialised from %s", name, path)
    return encoder
