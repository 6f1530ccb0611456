"""Converting aligned crops to the tensors the encoder takes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from faceclip.face.image_io import load_image

if TYPE_CHECKING:  # pragma: no cover
    import torch


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB image as a (3, H, W) float32 tensor in [0, 1] (batch it with ``tensor[None]``)."""
    import torch

    array = np.asarray(load_image(image, max_pixels=None), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
