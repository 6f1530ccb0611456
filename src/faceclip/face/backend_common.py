"""What the face backends share: the plausibility test of a detection, and the recognisers' input crop check and
output normalisation (OpenCV's and insightface's backends alike)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from faceclip.face.types import DetectedFace

RECOGNIZER_INPUT_SIZE = 112
"""Side of the aligned crop every recogniser here takes (ArcFace template at 112 px)."""


def plausible(face: DetectedFace, width: int, height: int) -> bool:
    """Whether ``face`` can be a real detection in a ``width`` x ``height`` image.

    False for non-finite numbers, an empty box, a box centre outside the image, or a box corner or landmark more
    than one image size away from it (what detectors return on degenerate inputs).
    """
    points = np.concatenate([np.asarray(face.box, dtype=np.float64).reshape(2, 2), face.landmarks])
    if not (np.isfinite(points).all() and np.isfinite(face.score)):
        return False
    (x0, y0), (x1, y1) = points[0], points[1]
    if not (x1 > x0 and y1 > y0 and 0 <= (x0 + x1) / 2 <= width and 0 <= (y0 + y1) / 2 <= height):
        return False
    margin = max(width, height)
    low, high = np.array([-margin, -margin]), np.array([width + margin, height + margin])
    return bool(((points >= low) & (points <= high)).all())


def check_crop(aligned: Image.Image) -> Image.Image:
    """``aligned`` as RGB; ValueError unless it is the recognisers' ``RECOGNIZER_INPUT_SIZE`` square crop."""
    if aligned.size != (RECOGNIZER_INPUT_SIZE, RECOGNIZER_INPUT_SIZE):
        raise ValueError(
            f"The recogniser takes a {RECOGNIZER_INPUT_SIZE}x{RECOGNIZER_INPUT_SIZE} aligned crop, got "
            f"{aligned.size[0]}x{aligned.size[1]}: align with `size={RECOGNIZER_INPUT_SIZE}` or resize the crop."
        )
    return aligned.convert("RGB")


def l2_normalize(vector: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``vector / ||vector||`` along the last axis, float32."""
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.maximum(np.linalg.norm(vector, axis=-1, keepdims=True), eps)
