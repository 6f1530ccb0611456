"""Test inputs shaped as ComfyUI passes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
SIZES = {"width": 864, "height": 1152, "crop_w": 0, "crop_h": 0, "target_width": 864, "target_height": 1152}


def photo_image(*names: str, size: int | None = None) -> torch.Tensor:
    """Photos of tests/data/faces side by side as one ComfyUI IMAGE (1, H, W, 3), as Load Image gives it."""
    parts = []
    for name in names:
        image = Image.open(FACES / name).convert("RGB")
        parts.append(np.asarray(image.resize((size, size)) if size else image))
    pixels = np.concatenate(parts, axis=1)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
