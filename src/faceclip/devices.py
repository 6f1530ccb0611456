"""Device and dtype choice for the command-line edges (library code never picks a device itself)."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

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
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device: '{name}' is not a device; use auto, cpu, cuda, cuda:1 or mps.") from err
    check_device_exists(device)
    return device


def check_device_exists(device: torch.device) -> None:
    """Refuse, before anything is loaded, a device this machine does not have (or one that holds no data).

    Raises:
        ValueError: naming ``--device`` and the devices there are.
    """
    if device.type == "cpu":
        return
    if device.type == "meta":
        raise ValueError(
            "--device meta holds no data and cannot run a model; use auto, cpu or an accelerator."
        )
    module = getattr(torch, device.type, None)
    available = module is not None and hasattr(module, "is_available") and module.is_available()
    count = (
        module.device_count() if available and hasattr(module, "device_count") else (1 if available else 0)
    )
    if not available or (device.index is not None and device.index >= count):
        there = f"{count} {device.type} device(s)" if available else f"no {device.type} device"
        raise ValueError(f"--device {device}: this machine has {there}; use --device auto or cpu.")


def resolve_dtype(name: str | None, device: torch.device | None = None) -> torch.dtype:
    """``"auto"`` -> bf16 on an accelerator, fp32 on the CPU; else one of fp32, bf16, fp16."""
    if name in (None, "", "auto"):
        return torch.bfloat16 if device is not None and device.type != "cpu" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype: '{name}' is not supported; use one of auto, fp32, bf16, fp16.")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device is not None and device.type == "cpu":
        warn_fp16_on_cpu()
    return dtype


FP16_ON_CPU = (
    "--dtype fp16 on the CPU: it runs, but slowly (PyTorch's CPU kernels are made for fp32 and bf16, and some "
    "operations fall back to fp32); use --dtype bf16 or fp32 on the CPU, fp16 on a GPU."
)
_DIFFUSERS_FP16_CPU = "cannot run with `cpu` device"  # diffusers' warning, repeated on every pipe.to("cpu")
_fp16_on_cpu_said = False


class _DropDiffusersFp16CpuWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _DIFFUSERS_FP16_CPU not in record.getMessage()


def warn_fp16_on_cpu() -> None:
    """Say once per process what fp16 on the CPU does, and silence diffusers' repeats of its own warning.

    fp16 is not refused: current PyTorch runs the pipelines' operations in fp16 on the CPU (``faceclip generate
    --model tiny-random --dtype fp16 --device cpu`` writes its images), only more slowly, and a user who asks
    for it gets it. diffusers instead warns on every ``pipe.to("cpu")`` that fp16 "will fail", three times in
    one ``faceclip generate``; that claim no longer holds, so one accurate warning replaces it.
    """
    global _fp16_on_cpu_said
    if _fp16_on_cpu_said:
        return
    _fp16_on_cpu_said = True
    logger.warning(FP16_ON_CPU)
    logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_DropDiffusersFp16CpuWarning())
