"""Optional insightface backend: SCRFD detection and ArcFace recognition from an insightface model pack.

Imported only when asked for; without ``insightface`` installed everything else keeps working. The model packs
(``buffalo_l``, ``antelopev2``) are non-commercial research releases: check their terms before use.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from faceclip.face.backend_common import check_crop, l2_normalize, plausible
from faceclip.face.types import DetectedFace

_INSTALL_HINT = 'pip install "faceclip[insightface]"'
_DETECT_LOCK = threading.Lock()


def model_pack_dir(model_name: str = "buffalo_l", root: str | os.PathLike | None = None) -> Path:
    """Folder where insightface keeps the pack ``model_name`` (``<root>/models/<model_name>``)."""
    root = Path(root or Path.home() / ".insightface").expanduser()
    return root / "models" / model_name


def _face_analysis(model_name: str, root: str | os.PathLike | None):
    """The pack's ``FaceAnalysis`` (detection + recognition), loaded once per pack and shared."""
    return _load_face_analysis(model_name, str(model_pack_dir(model_name, root)))


@cache
def _load_face_analysis(model_name: str, folder: str):
    try:
        from insightface.app import FaceAnalysis
    except ImportError as error:
        raise ImportError(
            f"The insightface face backend needs the `insightface` package: {_INSTALL_HINT}. "
            "Or choose the 'opencv' face backend, which works offline with the bundled models."
        ) from error
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"insightface model pack {model_name!r} not found at '{folder}'. Download and unpack it there "
            "(see the insightface model zoo; from Python, `insightface_root` names another model root), or "
            "choose the 'opencv' face backend. (faceclip never lets insightface download packs on its own.)"
        )
    app = FaceAnalysis(
        name=model_name, root=str(folder.parent.parent), allowed_modules=["detection", "recognition"]
    )
    app.prepare(ctx_id=0, det_size=(640, 640))
    return app


class InsightFaceDetector:
    """SCRFD detector of an insightface model pack.

    Args:
        model_name: the pack (``"buffalo_l"`` or ``"antelopev2"``).
        root: insightface model root (default ``~/.insightface``).
        score_threshold: minimum confidence of a returned face (SCRFD's ``det_thresh``).
    """

    name = "scrfd"

    def __init__(
        self,
        model_name: str = "buffalo_l",
        root: str | os.PathLike | None = None,
        score_threshold: float = 0.5,
    ) -> None:
        self._model = _face_analysis(model_name, root).det_model
        self.score_threshold = score_threshold

    def __call__(self, image: Image.Image) -> list[DetectedFace]:
        """Detect faces in an RGB PIL image; coordinates in its pixels (implausible detections dropped)."""
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        with _DETECT_LOCK:  # the model is shared between detectors, and its threshold is an attribute
            self._model.det_thresh = self.score_threshold
            boxes, keypoints = self._model.detect(bgr, max_num=0, metric="default")
        faces = [
            DetectedFace(
                box=box[:4].astype(np.float32), score=float(box[4]), landmarks=kps.astype(np.float32)
            )
            for box, kps in zip(boxes, keypoints)
        ]
        return [face for face in faces if plausible(face, image.width, image.height)]


class InsightFaceRecognizer:
    """ArcFace recogniser of an insightface model pack, 512-d."""

    name = "arcface"

    def __init__(self, model_name: str = "buffalo_l", root: str | os.PathLike | None = None) -> None:
        self._model = _face_analysis(model_name, root).models["recognition"]

    def __call__(self, aligned: Image.Image) -> np.ndarray:
        """(512,) float32 L2-normalised identity vector of a 112 x 112 aligned RGB crop."""
        bgr = np.ascontiguousarray(np.asarray(check_crop(aligned))[:, :, ::-1])
        return l2_normalize(self._model.get_feat(bgr).reshape(-1))
