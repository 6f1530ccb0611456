"""Options shared by several sub-commands (kept free of heavy imports, so ``--help`` stays instant)."""

from __future__ import annotations

import argparse

RELEASED_MODEL = "ByteDance/FaceCLIP"
"""The default ``--model``: the released FaceCLIP-SDXL weights (``faceclip.pipelines.RELEASED_REPO``)."""


def add_base_model_option(parser: argparse.ArgumentParser) -> None:
    """``--base-model``: the base model the released weights need (SDXL base for FaceCLIP-SDXL)."""
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="ID_OR_DIR",
        help="base model hub id or folder completing the released weights (VAE, scheduler, configs); "
        "default: the family's, stabilityai/stable-diffusion-xl-base-1.0 for FaceCLIP-SDXL",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, resolved later with :mod:`faceclip.devices`."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the available accelerator, else the CPU), cpu, cuda, cuda:1, mps",
    )
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 on an accelerator, fp32 on the CPU), fp32, bf16, fp16"
    )
