"""Result types shared by the face detectors, the aligner and :class:`~faceclip.face.FaceAnalyzer`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of the 5 landmarks, as seen in the image (``left_eye`` is the one with the smaller x)."""


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One detected face, in source-image pixels.

    Attributes:
        box: (4,) float32 ``x0, y0, x1, y1``.
        score: detector confidence in [0, 1].
        landmarks: (5, 2) float32 ``x, y`` in :data:`LANDMARK_NAMES` order.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def to_dict(self) -> dict:
        """JSON-ready view: ``{"box": [...4], "score": s, "landmarks": [[x, y] * 5]}``."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face warped onto the ArcFace 5-point template.

    Attributes:
        image: the aligned crop, RGB, ``size x size``.
        face: the detection it came from (source-image pixels).
        transform: (2, 3) float64 similarity transform mapping source pixels to crop pixels.
    """

    image: Image.Image
    face: DetectedFace
    transform: np.ndarray

    @property
    def size(self) -> int:
        """Side length of the square crop."""
        return self.image.size[0]
