"""The released FaceCLIP-SDXL UNet (``model/unet.pt``) -> a diffusers ``UNet2DConditionModel`` in safetensors.

The released file is a pickled state dict of the fine-tuned SDXL UNet in diffusers' own key layout (the
released inference script loads it with ``strict=True`` into ``UNet2DConditionModel``). Conversion therefore
checks rather than renames: it strips an outer wrapper prefix if a training wrapper added one, then compares
every key and shape with a UNet built from the SDXL config on the meta device, and reports all differences
at once before anything is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from faceclip.convert.finite import NonFiniteTensors

logger = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "unet.")
"""Outer prefixes added by DDP, ``torch.compile`` or a training wrapper; stripped when every key has one."""


class UNetConversionError(ValueError):
    """The released UNet file cannot be read as a state dict, or it does not fit the UNet config (missing,
    unexpected or mis-shaped keys)."""


def expected_unet_shapes(config: Mapping[str, object]) -> dict[str, torch.Size]:
    """Keys and shapes of ``UNet2DConditionModel(**config).state_dict()``, built on the meta device (no memory)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(config))
    return {key: value.shape for key, value in unet.state_dict().items()}


def strip_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove outer prefixes in :data:`WRAPPER_PREFIXES` shared by *all* keys (repeatedly, e.g. ``module.unet.``)."""
    out = dict(state_dict)
    while out:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = {key[len(prefix) :]: value for key, value in out.items()}
    return out


def convert_released_unet_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> dict[str, torch.Tensor]:
    """Check a released UNet state dict against ``config`` and return it in the model's key order.

    Args:
        state_dict: the released ``unet.pt`` contents (tensors, possibly on the meta device).
        config: a ``UNet2DConditionModel`` config, e.g. SDXL base's ``unet/config.json``.

    Raises:
        UNetConversionError: listing every missing, unexpected and mis-shaped key.
    """
    source = strip_wrapper_prefix(state_dict)
    expected = expected_unet_shapes(config)
    missing = [key for key in expected if key not in source]
    unexpected = sorted(key for key in source if key not in expected)
    mismatched = [
        f"{key}: {tuple(source[key].shape)} in the file, {tuple(shape)} expected"
        for key, shape in expected.items()
        if key in source and source[key].shape != shape
    ]
    if missing or unexpected or mismatched:
        raise UNetConversionError(_mismatch_message(missing, unexpected, mismatched, len(expected)))
    return {key: source[key] for key in expected}


def load_released_unet_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a pickled UNet state dict safely (``weights_only=True``, memory-mapped).

    Raises:
        UNetConversionError: the file is empty, cut short, not a checkpoint, or holds more than tensors (the
            message names it and how to get the released file).
    """
    from faceclip.hub import WeightsFileError, read_state_dict_file
    from faceclip.pipelines.sdxl.family import RELEASED_REPO, RELEASED_UNET_FILE

    advice = f"Pass the released {RELEASED_UNET_FILE} (hf download {RELEASED_REPO} {RELEASED_UNET_FILE})."
    try:
        return read_state_dict_file(path, advice=advice)
    except WeightsFileError as err:
        raise UNetConversionError(str(err)) from err


def convert_released_unet(
    path: str | os.PathLike,
    config: Mapping[str, object],
    out_dir: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Convert ``model/unet.pt`` into a diffusers UNet folder (``config.json`` + safetensors) at ``out_dir``.

    Tensors holding NaN or infinity are counted as they pass, in one warning naming ``path``.

    Args:
        path: the released pickled UNet state dict.
        config: the SDXL UNet config the weights belong to.
        out_dir: destination folder (created).
        torch_dtype: cast the weights before saving; ``None`` keeps the stored dtype.
        state_dict: the file's contents when already read (:func:`load_released_unet_file`); else it is read.

    Raises:
        UNetConversionError: the file cannot be read as a state dict, or its keys or shapes do not fit
            ``config``.
    """
    if state_dict is None:
        state_dict = load_released_unet_file(path)
    state_dict = convert_released_unet_state_dict(state_dict, config)
    nonfinite = NonFiniteTensors(path)
    state_dict = {
        key: nonfinite.check(key, value).to(torch_dtype or value.dtype) for key, value in state_dict.items()
    }
    nonfinite.warn()
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(config))
    unet.load_state_dict(state_dict, strict=True, assign=True)
    unet.save_pretrained(out_dir, safe_serialization=True)
    logger.info("converted the released UNet %s -> %s", path, out_dir)
    return Path(out_dir)


def _mismatch_message(missing: list[str], unexpected: list[str], mismatched: list[str], total: int) -> str:
    def sample(items: list[str]) -> str:
        shown = ", ".join(items[:5])
        return shown + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")

    lines = [f"The UNet weights do not match the SDXL UNet config ({total} keys expected):"]
    if missing:
        lines.append(f"  {len(missing)} missing: {sample(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected: {sample(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} with another shape: {sample(mismatched)}")
    lines.append(
        "Check that the file is FaceCLIP-SDXL's model/unet.pt and that the UNet config comes from "
        "stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json)."
    )
    return "\n".join(lines)
