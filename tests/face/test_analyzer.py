"""FaceAnalyzer on real faces: detection, alignment, embeddings and the face-picking policy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faceclip.face import AlignedFace, NoFaceFoundError, to_tensor
from faceclip.face.recognition import cosine_similarity


def test_detect_finds_the_astronaut(analyzer, astronaut_path):
    faces = analyzer.detect(astronaut_path)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    x0, y0, x1, y1 = face.box
    assert 90 < x0 < x1 < 230 and 40 < y0 < y1 < 200
    assert face.landmarks.shape == (5, 2)
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # image-left eye first


def test_align_returns_crop_and_transform(analyzer, astronaut):
    aligned = analyzer.align(astronaut)
    assert isinstance(aligned, AlignedFace)
    assert aligned.image.size == (448, 448) and aligned.image.mode == "RGB"
    assert aligned.transform.shape == (2, 3)
    small = analyzer.align(astronaut, size=112)
    assert small.image.size == (112, 112)


def test_no_face_raises_with_name_and_advice(analyzer, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (120, 160, 200)).save(blank)
    with pytest.raises(NoFaceFoundError, match=r"No face found in '.*wall\.png'.*crop"):
        analyzer.align(blank)


def test_embed_is_normalised_and_to_tensor_is_in_unit_range(analyzer, astronaut):
    vector = analyzer.embed(astronaut)
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    aligned = analyzer.align(astronaut)
    assert cosine_similarity(vector, analyzer.embed(aligned)) > 0.9
    tensor = to_tensor(aligned.image)
    assert tuple(tensor.shape) == (3, 448, 448)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert analyzer.recognizer_name == "opencv-sface"


def test_exif_rotated_photo_is_aligned_upright(analyzer, astronaut, tmp_path):
    # stored sideways with an EXIF tag saying "turn 90 degrees clockwise to display", as phones do
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    astronaut.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    upright = analyzer.detect(astronaut)[0]
    from_phone = analyzer.align(path).face
    # landmarks are reported in the displayed (upright) image's pixels
    assert np.abs(from_phone.landmarks[:3] - upright.landmarks[:3]).max() < 8


def test_detected_face_to_dict_is_json_ready(analyzer, astronaut):
    record = analyzer.detect(astronaut)[0].to_dict()
    assert set(record) == {"box", "score", "landmarks"}
    assert all(isinstance(v, float) for v in record["box"]) and len(record["landmarks"]) == 5


def test_an_aligned_crop_realigns_to_almost_the_identity(analyzer, astronaut):
    aligned = analyzer.align(astronaut)
    again = analyzer.align(aligned.image)
    np.testing.assert_allclose(again.transform[:, :2], np.eye(2), atol=0.03)
    assert np.abs(again.transform[:, 2]).max() < 0.015 * 448


@pytest.mark.parametrize("size", [(2000, 30), (30, 2000), (640, 9), (16, 100)])
def test_thin_images_give_no_face(analyzer, size):
    """YuNet on an input under 32 px returned a score-1.0 'face' with a box at ~1e8 px, or NaN."""
    from faceclip.face.detection import YuNetDetector

    blank = Image.new("RGB", size)
    assert YuNetDetector()(blank) == []
    assert analyzer.detect(blank) == []
    with pytest.raises(NoFaceFoundError, match="No face found"):
        analyzer.align(blank)


def test_implausible_detections_are_recognised():
    from faceclip.face.backend_common import plausible
    from faceclip.face.types import DetectedFace

    landmarks = np.array([[40, 40], [60, 40], [50, 50], [42, 60], [58, 60]], dtype=np.float32)

    def face(box, points=landmarks, score=0.9):
        return DetectedFace(box=np.array(box, dtype=np.float32), score=score, landmarks=points)

    assert plausible(face([30, 25, 70, 75]), 100, 100)
    assert plausible(face([-20, -20, 70, 75]), 100, 100)  # cut by the border, centre inside
    assert not plausible(face([30, 25, 70, np.nan]), 100, 100)
    assert not plausible(face([30, 25, 70, 75], score=np.nan), 100, 100)
    assert not plausible(face([1.1e8, -np.inf, 1.1e8, np.nan]), 100, 100)
    assert not plausible(face([70, 25, 30, 75]), 100, 100)  # empty box
    assert not plausible(face([130, 25, 170, 75]), 100, 100)  # centre outside
    assert not plausible(face([30, 25, 70, 75], landmarks * 1e6), 100, 100)


def test_min_score_below_the_detector_default_finds_weak_faces(astronaut):
    """A 40 px face on a grey canvas scores ~0.5 with YuNet; min_score=0.3 must find it in one pass."""
    from faceclip.face import FaceAnalyzer

    canvas = Image.new("RGB", (320, 320), (128, 128, 128))
    canvas.paste(astronaut.resize((40, 40), Image.Resampling.BICUBIC), (100, 100))
    single_pass = {"backend": "opencv", "upscale_retry": False, "retry_angles": ()}
    assert FaceAnalyzer(**single_pass).detect(canvas) == []
    faces = FaceAnalyzer(min_score=0.3, **single_pass).detect(canvas)
    assert len(faces) == 1 and 0.3 <= faces[0].score < 0.6
    x0, y0, x1, y1 = faces[0].box
    assert 95 < x0 < x1 < 145 and 95 < y0 < y1 < 145


def test_insightface_detector_uses_min_score_and_drops_implausible_boxes(monkeypatch):
    from faceclip.face import insightface_backend

    class FakeSCRFD:
        det_thresh = 0.5

        def detect(self, image, max_num=0, metric="default"):
            self.seen_thresh = self.det_thresh
            boxes = np.array([[10, 10, 50, 60, 0.3], [1e9, np.nan, 1e9, 5, 0.9]], dtype=np.float32)
            return boxes, np.full((2, 5, 2), 30.0, dtype=np.float32)

    class FakeApp:
        det_model = FakeSCRFD()

    monkeypatch.setattr(insightface_backend, "_face_analysis", lambda name, root: FakeApp())
    from faceclip.face import FaceAnalyzer

    analyzer = FaceAnalyzer(backend="insightface", min_score=0.25, upscale_retry=False, retry_angles=())
    faces = analyzer.detect(Image.new("RGB", (100, 100)))
    assert FakeApp.det_model.seen_thresh == 0.25
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.3)
