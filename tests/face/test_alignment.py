"""Alignment maths on synthetic landmarks: the Umeyama fit, the template at any size, the warp."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faceclip.face.alignment import (
    ARCFACE_TEMPLATE_112,
    align_face,
    arcface_template,
    estimate_alignment,
    invert_transform,
    transform_points,
    umeyama_similarity,
)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


@pytest.mark.parametrize("angle", [0.0, 17.0, -30.0, 90.0, 180.0])
@pytest.mark.parametrize("scale", [0.25, 1.0, 3.7])
def test_umeyama_recovers_exact_similarity(angle, scale):
    matrix = _similarity(angle, scale, (12.5, -40.0))
    src = np.random.default_rng(0).uniform(-50, 50, size=(5, 2))
    dst = transform_points(matrix, src)
    np.testing.assert_allclose(umeyama_similarity(src, dst), matrix, atol=1e-9)


def test_umeyama_never_reflects():
    src = ARCFACE_TEMPLATE_112.copy()
    mirrored = src * np.array([-1.0, 1.0])
    linear = umeyama_similarity(src, mirrored)[:, :2]
    assert np.linalg.det(linear) > 0
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), atol=1e-9)


def test_umeyama_rejects_bad_shapes_and_degenerate_points():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        umeyama_similarity(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="identical"):
        umeyama_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


@pytest.mark.parametrize("size", [112, 224, 448, 512])
def test_template_scales_with_size(size):
    template = arcface_template(size)
    np.testing.assert_allclose(template, ARCFACE_TEMPLATE_112 * size / 112)
    assert template[0, 0] < template[1, 0]  # image-left eye first
    with pytest.raises(ValueError, match="size"):
        arcface_template(0)


@pytest.mark.parametrize("size", [112, 448])
def test_estimate_alignment_maps_transformed_template_back(size):
    photo_to_template = _similarity(23.0, 0.31, (5.0, 9.0))
    landmarks = transform_points(invert_transform(photo_to_template), arcface_template(size))
    matrix = estimate_alignment(landmarks, size)
    np.testing.assert_allclose(transform_points(matrix, landmarks), arcface_template(size), atol=1e-8)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        estimate_alignment(landmarks[:4], size)


def test_align_face_moves_marked_pixels_onto_template():
    # Paint a dot at each landmark of a rotated, scaled face, then check the dots land on the template.
    size = 448
    landmarks = transform_points(_similarity(-28.0, 0.6, (300.0, 80.0)), ARCFACE_TEMPLATE_112 * 4 - 224)
    canvas = np.zeros((600, 700, 3), dtype=np.uint8)
    for x, y in landmarks:
        canvas[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 255
    crop, matrix = align_face(Image.fromarray(canvas), landmarks, size)
    assert crop.size == (size, size) and matrix.shape == (2, 3)
    array = np.asarray(crop)[..., 0].astype(float)
    for x, y in arcface_template(size):
        window = array[int(y) - 12 : int(y) + 13, int(x) - 12 : int(x) + 13]
        ys, xs = np.nonzero(window > 60)
        weights = window[ys, xs]
        centre = np.array([xs @ weights, ys @ weights]) / weights.sum() + [int(x) - 12, int(y) - 12]
        assert np.hypot(*(centre - [x, y])) < 0.01 * size
