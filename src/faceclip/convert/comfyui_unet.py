"""The FaceCLIP-SDXL UNet as one safetensors file for ComfyUI's ``models/diffusion_models/``.

ComfyUI's diffusion-model loader (``UNETLoader`` -> ``comfy.sd.load_diffusion_model``) first detects a UNet from
the keys of the original (LDM) layout, ``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``; a diffusers
layout is only taken as a fallback, when its config matches one of the configs ComfyUI knows. This module writes
the LDM layout, which ComfyUI reads directly: the same tensors as the diffusers UNet, under the LDM names
(no ``model.diffusion_model.`` prefix, as in ComfyUI's own diffusion-model files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from faceclip.convert.finite import NonFiniteTensors
from faceclip.convert.sdxl_unet import (
    UNetConversionError,
    convert_released_unet_state_dict,
    load_released_unet_file,
)

RESNET_PARTS = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
"""diffusers ``ResnetBlock2D`` parts -> the LDM ``ResBlock`` names."""

FIXED_PREFIXES = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "mid_block.resnets.0.": "middle_block.0.",
    "mid_block.attentions.0.": "middle_block.1.",
    "mid_block.resnets.1.": "middle_block.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def block_prefixes(config: Mapping[str, object]) -> dict[str, str]:
    """diffusers module prefixes -> LDM prefixes for a ``UNet2DConditionModel`` config (SDXL or smaller).

    Raises:
        UNetConversionError: a config with per-block ``layers_per_block`` (SDXL has one number).
    """
    layers = config.get("layers_per_block", 2)
    if not isinstance(layers, int):
        raise UNetConversionError(
            f"layers_per_block {layers!r}: only one number for all blocks is supported (SDXL's 2)."
        )
    step = layers + 1
    prefixes = dict(FIXED_PREFIXES)
    for i, _ in enumerate(config["down_block_types"]):
        for j in range(layers):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{1 + i * step + j}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{1 + i * step + j}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * step}.0.op."
    for i, kind in enumerate(config["up_block_types"]):
        for j in range(step):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * step + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * step + j}.1."
        slot = 2 if "CrossAttn" in str(kind) else 1  # the upsampler follows the attention when there is one
        prefixes[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{i * step + layers}.{slot}.conv."
    return prefixes


def ldm_key(key: str, prefixes: Mapping[str, str]) -> str | None:
    """The LDM name of diffusers key ``key`` (``None`` when no prefix fits)."""
    prefix = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
    if prefix is None:
        return None
    rest = key[len(prefix) :]
    if ".resnets." in prefix:
        part = next((p for p in RESNET_PARTS if rest.startswith(p)), None)
        rest = RESNET_PARTS[part] + rest[len(part) :] if part else rest
    return prefixes[prefix] + rest


def to_comfyui_layout(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> dict[str, torch.Tensor]:
    """A diffusers SDXL UNet state dict (checked against ``config``) -> the same tensors under LDM names.

    Raises:
        UNetConversionError: the keys or shapes do not fit ``config``, or a key has no LDM name.
    """
    prefixes = block_prefixes(config)  # the config first: it decides the names
    checked = convert_released_unet_state_dict(state_dict, config)
    renamed = {key: ldm_key(key, prefixes) for key in checked}
    unnamed = [key for key, name in renamed.items() if name is None]
    if unnamed:
        raise UNetConversionError(
            f"{len(unnamed)} UNet keys have no ComfyUI name, e.g. {', '.join(unnamed[:5])}."
        )
    if len(set(renamed.values())) != len(renamed):
        raise UNetConversionError(
            "two UNet keys map to the same ComfyUI name; the UNet config is not SDXL's."
        )
    return {renamed[key]: value for key, value in checked.items()}


def convert_unet_for_comfyui(
    path: str | os.PathLike,
    config: Mapping[str, object],
    out_file: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``path`` (the released ``unet.pt`` or a diffusers UNet safetensors) as one ComfyUI file.

    The file appears at ``out_file`` only when complete; nothing is written when the weights do not fit.

    Raises:
        UNetConversionError: the file cannot be read, or its keys or shapes do not fit ``config``.
    """
    from safetensors.torch import save_file

    from faceclip.outputs import atomic_path

    state_dict = to_comfyui_layout(load_released_unet_file(path), config)
    nonfinite = NonFiniteTensors(path)
    state_dict = {
        key: nonfinite.check(key, value).to(torch_dtype or value.dtype).contiguous()
        for key, value in state_dict.items()
    }
    nonfinite.warn()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_file) as staging:
        save_file(state_dict, str(staging), metadata=dict(metadata or {}))
    return out_file
