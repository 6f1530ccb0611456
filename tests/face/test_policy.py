"""Which face FaceAnalyzer uses: largest first, by index, confidence, the upscaled retry, and backends."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from faceclip.face import FaceAnalyzer, NoFaceFoundError
from faceclip.face.alignment import arcface_template
from faceclip.face.detection import YuNetDetector


@pytest.fixture(scope="module")
def two_faces(astronaut) -> Image.Image:
    canvas = Image.new("RGB", (900, 500), (128, 128, 128))
    canvas.paste(astronaut.resize((192, 192), Image.Resampling.LANCZOS), (20, 150))  # small face, left
    canvas.paste(astronaut, (450, 60))  # large face, right
    return canvas


def test_faces_are_ordered_largest_first(analyzer, two_faces):
    faces = analyzer.detect(two_faces)
    assert len(faces) == 2
    assert faces[0].area > 3 * faces[1].area
    assert faces[0].box[0] > 450 and faces[1].box[2] < 220


@pytest.mark.parametrize(("face_index", "right_side"), [(None, True), (0, True), (1, False), (-1, False)])
def test_face_index_picks_the_face(analyzer, two_faces, face_index, right_side):
    aligned = analyzer.align(two_faces, size=112, face_index=face_index)
    assert (aligned.face.landmarks[:, 0].mean() > 450) == right_side
    # the picked face's eyes land on the template
    eyes = aligned.face.landmarks[:2] @ aligned.transform[:, :2].T + aligned.transform[:, 2]
    assert np.abs(eyes - arcface_template(112)[:2]).max() < 0.05 * 112


def test_face_index_out_of_range_names_the_choices(analyzer, two_faces):
    with pytest.raises(
        NoFaceFoundError, match=r"Face index 2 is out of range: only 2 face\(s\).*from 0 to 1"
    ):
        analyzer.align(two_faces, face_index=2)


def test_unconfident_faces_are_ignored(astronaut):
    strict = FaceAnalyzer(backend="opencv", min_score=0.99)
    assert strict.detect(astronaut) == []
    with pytest.raises(NoFaceFoundError, match=r"the given Image.*confidence >= 0\.99"):
        strict.align(astronaut)


def test_array_input_is_named_in_the_error(analyzer):
    with pytest.raises(NoFaceFoundError, match=r"the given \(60, 80, 3\) array"):
        analyzer.align(np.full((60, 80, 3), 200, dtype=np.uint8))


def test_small_face_is_found_by_the_upscaled_retry(astronaut):
    photo = Image.new("RGB", (1280, 960), (128, 128, 128))
    photo.paste(astronaut.resize((64, 64), Image.Resampling.LANCZOS), (700, 400))  # face ~14 px wide
    without_retry = FaceAnalyzer(backend="opencv", upscale_retry=False)
    assert without_retry.detect(photo) == []
    with_retry = FaceAnalyzer(backend="opencv")
    faces = with_retry.detect(photo)
    assert len(faces) == 1
    assert 700 < faces[0].box[0] < faces[0].box[2] < 764
    assert with_retry.align(photo, size=112).image.size == (112, 112)


def test_unknown_backend_is_explained():
    with pytest.raises(ValueError, match=r"unknown `backend` 'dlib'.*opencv"):
        FaceAnalyzer(backend="dlib")


def test_auto_uses_opencv_without_insightface_models(tmp_path):
    assert FaceAnalyzer(backend="auto", insightface_root=tmp_path).backend == "opencv"


def test_construction_loads_nothing(monkeypatch):
    monkeypatch.setenv("FACECLIP_FACE_MODELS", "/nonexistent")
    analyzer = FaceAnalyzer(backend="opencv")  # cheap: models load on first use
    with pytest.raises(FileNotFoundError, match=r"not found in '/nonexistent'.*FACECLIP_FACE_MODELS"):
        analyzer.detect(np.zeros((32, 32, 3), dtype=np.uint8))


def test_insightface_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "insightface", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    assert FaceAnalyzer(backend="auto").backend == "opencv"
    analyzer = FaceAnalyzer(backend="insightface")
    with pytest.raises(ImportError, match=r'pip install "faceclip\[insightface\]"'):
        analyzer.detect(np.zeros((32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize("installed", [False, True])
def test_insightface_messages_fit_python_and_the_command_line(monkeypatch, tmp_path, installed):
    """The advice names the 'opencv' backend, not the Python spelling `backend='opencv'` (no such CLI option)."""
    from faceclip.face.insightface_backend import _load_face_analysis

    package, app = types.ModuleType("insightface"), types.ModuleType("insightface.app")
    app.FaceAnalysis = object
    monkeypatch.setitem(sys.modules, "insightface", package if installed else None)
    monkeypatch.setitem(sys.modules, "insightface.app", app if installed else None)
    with pytest.raises(FileNotFoundError if installed else ImportError) as caught:
        _load_face_analysis("buffalo_l", str(tmp_path / "missing" / "models" / "buffalo_l"))
    message = str(caught.value)
    assert "'opencv' face backend" in message and "backend='opencv'" not in message


def test_insightface_backend_adapter(monkeypatch, tmp_path, astronaut):
    """The insightface adapter converts SCRFD's outputs and feeds ArcFace BGR crops (fake models, real glue)."""
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    yunet = YuNetDetector()
    seen = {}

    class FakeDetModel:
        def detect(self, bgr, max_num=0, metric="default"):
            faces = yunet(Image.fromarray(bgr[:, :, ::-1]))  # SCRFD's layout: (N, 5) boxes+score, (N, 5, 2)
            boxes = np.array([[*f.box, f.score] for f in faces], dtype=np.float32)
            return boxes, np.stack([f.landmarks for f in faces])

    class FakeRecognition:
        def get_feat(self, bgr):
            seen["shape"] = bgr.shape
            return np.arange(512, dtype=np.float32)[None] + bgr.mean()

    class FakeFaceAnalysis:
        def __init__(self, name, root, allowed_modules):
            seen["init"] = (name, root, tuple(allowed_modules))
            self.det_model, self.models = FakeDetModel(), {"recognition": FakeRecognition()}

        def prepare(self, ctx_id, det_size):
            seen["det_size"] = det_size

    package, app = types.ModuleType("insightface"), types.ModuleType("insightface.app")
    app.FaceAnalysis = FakeFaceAnalysis
    package.app = app
    monkeypatch.setitem(sys.modules, "insightface", package)
    monkeypatch.setitem(sys.modules, "insightface.app", app)

    analyzer = FaceAnalyzer(backend="insightface", insightface_root=tmp_path)
    assert analyzer.detect(astronaut)[0].landmarks.shape == (5, 2)
    vector = analyzer.embed(astronaut)
    assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert seen["shape"] == (112, 112, 3)
    assert seen["init"] == ("buffalo_l", str(tmp_path), ("detection", "recognition"))
    assert analyzer.recognizer_name == "insightface-arcface"
