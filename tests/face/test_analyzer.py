"""FaceAnalyzer on real faces: detection, alignment, embeddings and the face-picking policy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faceclip.face import AlignedFace, NoFaceFoundError, cosine_similarity, to_tensor


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
