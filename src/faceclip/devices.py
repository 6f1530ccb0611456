"""Device and dtype choice for the command-line edges (library code never picks a device itself)."""

from __future__ import annotations

import torch

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(name: str | None = "auto") -> torch.device:
    """``"auto"`` -> the available accelerator (CUDA, MPS, ...) or the CPU; otherwise ``torch.device(name)``."""
    if name in (None, "", "auto"):
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return accelerator or torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device: '{name}' is not a device; use auto, cpu, cuda, cuda:1 or mps.") from err


def resolve_dtype(name: str | None, device: torch.device | None = None) -> torch.dtype:
    """``"auto"`` -> bf16 on an accelerator, fp32 on the CPU; else one of fp32, bf16, fp16."""
    if name in (None, "", "auto"):
        return torch.bfloat16 if device is not None and device.type != "cpu" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype: '{name}' is not supported; use one of auto, fp32, bf16, fp16.")
    return DTYPES[name]
