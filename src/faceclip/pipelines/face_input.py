"""The face argument of the pipeline: a raw photo (detected and aligned here) or an already aligned tensor."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from faceclip.models.inputs import check_pixel_values

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.face import DetectedFace, FaceAnalyzer

FACE_SIZE = 448
"""Side of the aligned face crop fed to the encoder (the released model was trained on 448x448 crops)."""

FaceInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
"""A photo (path, PIL image, HxWx3 uint8 array) or an aligned face tensor (3,H,W) / (1,3,H,W) in [0,1]."""


@dataclass
class PreparedFace:
    """A face ready for the encoder.

    Attributes:
        tensor: (1, 3, H, W) float in [0, 1], the aligned crop (H = W = 448 for photos).
        image: the aligned crop as a PIL image (``None`` when an aligned tensor was given).
        detection: the detected face the crop came from (``None`` when an aligned tensor was given).
    """

    tensor: torch.Tensor
    image: Image.Image | None = None
    detection: DetectedFace | None = None


def prepare_face(
    face_image: FaceInput | PreparedFace,
    analyzer: FaceAnalyzer | None = None,
    face_index: int | None = None,
    size: int = FACE_SIZE,
) -> PreparedFace:
    """Turn ``face_image`` into a :class:`PreparedFace`.

    Photos go through ``analyzer`` (detection, then similarity alignment to ``size`` x ``size``); a tensor is
    taken as already aligned and only checked.

    Args:
        face_image: a photo path, PIL image or HxWx3 array; an aligned tensor (3,H,W) or (1,3,H,W) in [0,1];
            or a :class:`PreparedFace` (returned unchanged).
        analyzer: the face analyzer for photos; a default ``FaceAnalyzer()`` is created when ``None``.
        face_index: which detected face to use (largest first); ``None`` = the largest.
        size: side of the aligned crop.

    Raises:
        faceclip.face.ImageLoadError: the photo cannot be read.
        faceclip.face.NoFaceFoundError: no face in the photo.
        ValueError: a tensor of the wrong shape, size or dtype (values are checked by :func:`check_face_values`).
        TypeError: ``face_image`` is none of the above.
    """
    if isinstance(face_image, PreparedFace):
        return face_image
    if isinstance(face_image, torch.Tensor):
        return PreparedFace(tensor=_check_aligned_tensor(face_image))

    if not isinstance(face_image, str | os.PathLike | Image.Image | np.ndarray):
        raise TypeError(
            f"face_image: expected a photo (path, PIL image, HxWx3 array) or an aligned face tensor (3, H, W) "
            f"in [0, 1], got {type(face_image).__name__}."
        )
    from faceclip.face import FaceAnalyzer, to_tensor

    analyzer = analyzer if analyzer is not None else FaceAnalyzer()
    aligned = analyzer.align(face_image, size=size, face_index=face_index)
    return PreparedFace(tensor=to_tensor(aligned.image)[None], image=aligned.image, detection=aligned.face)


def _check_aligned_tensor(face: torch.Tensor) -> torch.Tensor:
    if face.ndim == 3:
        face = face[None]
    if face.ndim != 4 or face.shape[:2] != (1, 3):
        raise ValueError(
            f"face_image: an aligned face tensor must have shape (3, H, W) or (1, 3, H, W); got {tuple(face.shape)}. "
            "Pass one face; for a photo, pass its path or a PIL image instead."
        )
    if not face.is_floating_point():
        raise ValueError(
            f"face_image: expected a float tensor in [0, 1], got dtype {face.dtype}; convert 8-bit images with "
            "x.float() / 255."
        )
    if face.shape[-1] == 0 or face.shape[-2] == 0:
        raise ValueError(f"face_image: empty face tensor of shape {tuple(face.shape)}; pass H, W >= 1.")
    return face


def check_face_values(face: torch.Tensor) -> None:
    """Raise ValueError unless every value of the aligned face tensor is finite and in [0, 1].

    Reads the values back (a device sync), so the pipeline runs it once per call in ``check_inputs``; the
    encoder's forward does not check values. Shape and dtype are checked first.
    """
    check_pixel_values(_check_aligned_tensor(face), "face_image")
