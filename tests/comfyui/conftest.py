"""Shared fixtures of the ComfyUI node tests: the pack imported from comfyui/ (as ComfyUI imports it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PACK_PARENT = Path(__file__).resolve().parents[2] / "comfyui"

if str(PACK_PARENT) not in sys.path:
    sys.path.insert(0, str(PACK_PARENT))


@pytest.fixture(scope="module")
def tiny_encoder():
    """The tiny-random encoder as the loader node returns it (CPU, fp32)."""
    from faceclip_nodes.logic import load_encoder

    return load_encoder("FaceCLIP Encoder Loader", "tiny-random", device="cpu", dtype="fp32")
