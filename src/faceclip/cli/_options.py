"""Options shared by several sub-commands (kept free of heavy imports, so ``--help`` stays instant)."""

from __future__ import annotations

import argparse

RELEASED_MODEL = "ByteDance/FaceCLIP"
"""The default ``--model``: the released FaceCLIP-SDXL weights (``faceclip.pipelines.RELEASED_REPO``)."""


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
