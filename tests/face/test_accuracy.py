"""Alignment accuracy and identity on real faces and transformed copies of them.

The check is the one a user would make: re-detect the face on the aligned crop and measure how far its eye
centres and nose tip are from the ArcFace template (within 3% of the crop size; mouth corners, which move with
expression, within 9%). The measurement averages the detections on the crop and on its mirror image, which
cancels the detector's own left-right bias (otherwise a mirrored photo measures differently from the original).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from faceclip.face import AlignedFace, FaceAnalyzer, NoFaceFoundError
from faceclip.face.alignment import arcface_template, transform_points
from faceclip.face.detection import YuNetDetector
from faceclip.face.recognition import cosine_similarity
from faceclip.face.refinement import central_face

DATA = Path(__file__).resolve().parents[1] / "data" / "faces"
SIZE = 448
PAD = SIZE // 4  # context around the crop for the measuring detector


def _on_canvas(image: Image.Image, size=(800, 800), at=(200, 200)) -> Image.Image:
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(image, at)
    return canvas


def _rotated(angle: float) -> Callable[[Image.Image], Image.Image]:
    # rotate about the face (the astronaut's face centre is near (160, 120) in the crop)
    return lambda image: _on_canvas(image).rotate(angle, resample=Image.Resampling.BICUBIC, center=(360, 320))


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "original": lambda image: image,
    "rotated+10": _rotated(10),
    "rotated-20": _rotated(-20),
    "rotated+30": _rotated(30),
    "rotated-30": _rotated(-30),
    "half-size": lambda image: image.resize((192, 192), Image.Resampling.LANCZOS),
    "double-size": lambda image: image.resize((768, 768), Image.Resampling.BICUBIC),
    "shifted": lambda image: _on_canvas(image, (600, 500), (210, 110)),
    "mirrored": ImageOps.mirror,
    "mirrored+rotated-30": lambda image: _rotated(-30)(ImageOps.mirror(image)),
    "large-canvas": lambda image: _on_canvas(image, (3000, 2200), (1900, 1300)),
    "greyscale": lambda image: image.convert("L"),
}


@pytest.fixture(scope="module")
def measuring_detector() -> YuNetDetector:
    return YuNetDetector()


def _redetect(detector: YuNetDetector, canvas: Image.Image) -> np.ndarray:
    face = central_face(detector(canvas), canvas.size[0])
    assert face is not None, "the aligned crop no longer shows a detectable face"
    return face.landmarks.astype(np.float64)


def landmark_errors(detector: YuNetDetector, crop: Image.Image) -> np.ndarray:
    """(5,) distance of each re-detected landmark from the template, as a fraction of the crop size."""
    side = SIZE + 2 * PAD
    canvas = Image.new("RGB", (side, side))
    canvas.paste(crop, (PAD, PAD))
    direct = _redetect(detector, canvas)
    mirrored = _redetect(detector, canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    mirrored[:, 0] = side - 1 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # the eyes and the mouth corners swap sides in the mirror
    landmarks = (direct + mirrored) / 2 - PAD
    return np.linalg.norm(landmarks - arcface_template(SIZE), axis=1) / SIZE


@pytest.fixture(scope="module")
def aligned_copies(analyzer, astronaut) -> dict[str, AlignedFace]:
    return {name: analyzer.align(transform(astronaut), size=SIZE) for name, transform in TRANSFORMS.items()}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_aligned_landmarks_land_on_the_template(aligned_copies, measuring_detector, name):
    errors = landmark_errors(measuring_detector, aligned_copies[name].image)
    assert errors[:3].max() < 0.03, f"{name}: eye/nose errors {errors[:3].round(3)}"
    assert errors[3:].max() < 0.09, f"{name}: mouth errors {errors[3:].round(3)}"


def test_a_single_pass_is_not_enough_for_rotated_faces(astronaut, measuring_detector):
    # Documents why refinement exists: without it a 30 degree tilt puts the crop off by several percent.
    rotated = TRANSFORMS["rotated-30"](astronaut)
    unrefined = FaceAnalyzer(backend="opencv", refine_steps=0).align(rotated, size=SIZE)
    assert landmark_errors(measuring_detector, unrefined.image)[:3].max() > 0.04


def test_landmarks_map_back_to_source_pixels(aligned_copies):
    aligned = aligned_copies["rotated+30"]
    back = aligned.face.landmarks @ aligned.transform[:, :2].T + aligned.transform[:, 2]
    # the eyes and nose map close to the template (the fit down-weights the mouth corners)
    assert np.abs(back[:3] - arcface_template(SIZE)[:3]).max() < 0.03 * SIZE


@pytest.fixture(scope="module")
def other_people() -> list[Image.Image]:
    return [Image.open(DATA / f"lfw_{i:03d}.png").convert("RGB") for i in range(3)]


def test_identity_survives_transforms_and_separates_people(analyzer, astronaut, aligned_copies, other_people):
    reference = analyzer.embed(astronaut)
    same = [cosine_similarity(reference, analyzer.embed(aligned)) for aligned in aligned_copies.values()]
    others = [analyzer.embed(person) for person in other_people]
    different = [cosine_similarity(reference, other) for other in others]
    different += [cosine_similarity(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
    assert min(same) > 0.85, dict(zip(TRANSFORMS, np.round(same, 3)))
    assert max(different) < 0.4, np.round(different, 3)
    assert min(same) - max(different) > 0.4


def _turned(image: np.ndarray, angle: float, pad: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """``image`` on a grey canvas turned by ``angle`` degrees, and the (2, 3) map from image to canvas pixels."""
    height, width = image.shape[:2]
    size = (width + 2 * pad, height + 2 * pad)
    matrix = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1.0)
    matrix[:, 2] += matrix[:, :2] @ [pad, pad]
    return cv2.warpAffine(image, matrix, size, borderValue=(128, 128, 128)), matrix


@pytest.mark.parametrize("person", range(3))
@pytest.mark.parametrize("angle", [25.0, -25.0])
def test_other_people_align_the_same_when_turned(analyzer, person, angle):
    # Whatever a face's own geometry, turning the photo must not change the crop: the landmarks found on the
    # upright photo, carried through the turn and the new alignment, land where the upright alignment put them.
    photo = np.asarray(Image.open(DATA / f"lfw_{person:03d}.png").convert("RGB"))
    upright = analyzer.align(photo, size=SIZE)
    turned, turn = _turned(photo, angle)
    aligned = analyzer.align(turned, size=SIZE)
    expected = transform_points(upright.transform, upright.face.landmarks)
    carried = transform_points(aligned.transform, transform_points(turn, upright.face.landmarks))
    assert np.linalg.norm(carried - expected, axis=1).max() < 0.02 * SIZE


def test_tilted_face_missed_upright_is_found_by_the_turned_retry():
    photo = np.asarray(Image.open(DATA / "lfw_001.png").convert("RGB"))
    turned, _ = _turned(photo, 25.0)
    with pytest.raises(NoFaceFoundError, match="also on a 2x upscaled copy"):
        FaceAnalyzer(backend="opencv", retry_angles=()).align(turned)
    faces = FaceAnalyzer(backend="opencv").detect(turned)
    assert len(faces) == 1 and faces[0].score > 0.6
