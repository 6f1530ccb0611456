"""ID-Sim on real faces: the same person (and transformed copies) scores close to 1, others clearly lower."""

import io

import pytest
from PIL import Image, ImageEnhance, ImageOps

from faceclip.evaluation.identity import NO_FACE_SCORE, ReferenceFaceError

from .conftest import lfw_face


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


TRANSFORMS = {
    "identical": lambda im: im.copy(),
    "mirrored": ImageOps.mirror,
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "rotated 12 degrees": lambda im: im.rotate(12, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)),
    "jpeg q40": lambda im: _jpeg(im, 40),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "cropped": lambda im: im.crop((60, 0, 400, 340)),
}


@pytest.fixture(scope="module")
def astronaut_vector(identity_scorer, astronaut):
    return identity_scorer.reference_vector(astronaut)


@pytest.fixture(scope="module")
def same_person(identity_scorer, astronaut, astronaut_vector):
    return {
        name: identity_scorer.score(transform(astronaut), astronaut_vector)
        for name, transform in TRANSFORMS.items()
    }


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_same_person_scores_close_to_one(same_person, name):
    match = same_person[name]
    assert match.face_detected and match.detection_score > 0.6
    assert match.id_sim > (0.99 if name == "identical" else 0.8), name


def test_different_people_score_clearly_lower(identity_scorer, astronaut_vector, same_person):
    same = [match.id_sim for match in same_person.values()]
    others = [identity_scorer.score(lfw_face(i), astronaut_vector) for i in (0, 1, 2, 3, 50, 99)]
    assert all(match.face_detected for match in others)
    assert max(m.id_sim for m in others) < 0.4
    assert min(same) - max(m.id_sim for m in others) > 0.4


def test_an_lfw_face_matches_itself_and_not_another(identity_scorer):
    reference = identity_scorer.reference_vector(lfw_face(0))
    assert identity_scorer.score(lfw_face(0), reference).id_sim > 0.99
    assert identity_scorer.score(lfw_face(1), reference).id_sim < 0.5


def test_an_image_without_a_face_scores_zero_and_is_flagged(identity_scorer, astronaut_vector, noise_image):
    from skimage import data

    for image in (noise_image, Image.fromarray(data.coffee())):
        match = identity_scorer.score(image, astronaut_vector)
        assert match.face_detected is False
        assert match.id_sim == NO_FACE_SCORE == 0.0
        assert match.detection_score is None


def test_a_reference_without_a_face_is_an_error(identity_scorer, noise_image):
    with pytest.raises(ReferenceFaceError, match="reference face"):
        identity_scorer.reference_vector(noise_image)


def test_reference_vectors_are_cached_by_path(identity_scorer, astronaut, tmp_path):
    path = tmp_path / "ref.png"
    astronaut.save(path)
    first = identity_scorer.reference_vector(path)
    path.unlink()  # a second lookup must not read the file again
    assert identity_scorer.reference_vector(path) is first
    assert identity_scorer.recognizer_name == "opencv-sface"
