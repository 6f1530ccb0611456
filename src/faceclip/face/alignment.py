"""5-point face alignment onto the ArcFace template with a least-squares similarity transform.

The template is the one used by ArcFace (Deng et al., CVPR 2019) and InsightFace for 112 x 112 crops; FaceCLIP's
released training crops use the same template scaled to 448 x 448. The transform is the closed-form
least-squares similarity of Umeyama (IEEE TPAMI 1991), written here with numpy.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye (image left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
"""(5, 2) landmark positions ``x, y`` in a 112 x 112 crop."""

LANDMARK_WEIGHTS = (1.0, 1.0, 1.0, 0.25, 0.25)
"""Default least-squares weights of (eyes, nose, mouth corners): the mouth moves with expression, so a smile
should not pull the eyes off the template. Pass ``(1, 1, 1, 1, 1)`` for InsightFace's unweighted fit."""


def arcface_template(size: int = 448) -> np.ndarray:
    """The ArcFace template scaled to a ``size x size`` crop, (5, 2) float64."""
    if size <= 0:
        raise ValueError(f"`size` must be a positive number of pixels, got {size}.")
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity transform (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Args:
        src: (N, 2) source points, N >= 2.
        dst: (N, 2) target points.
        weights: (N,) non-negative weight of each point (default: all equal).

    Returns:
        (2, 3) float64 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``. Reflections are excluded.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"`src` and `dst` must both be (N, 2) with N >= 2, got {src.shape} and {dst.shape}.")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"`weights` must be {len(src)} non-negative numbers, not all zero; got {weights}.")
    w = w / w.sum()
    src_mean, dst_mean = w @ src, w @ dst
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = w @ (src_c**2).sum(1)
    if src_var < 1e-12:
        raise ValueError("`src` points are all identical: cannot estimate a transform.")
    covariance = (dst_c * w[:, None]).T @ src_c  # (2, 2)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def estimate_alignment(
    landmarks: np.ndarray, size: int = 448, weights: tuple[float, ...] = LANDMARK_WEIGHTS
) -> np.ndarray:
    """(2, 3) transform taking 5 source landmarks (5, 2) onto the ArcFace template of a ``size`` crop."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"`landmarks` must be (5, 2) (eyes, nose, mouth corners), got {landmarks.shape}.")
    return umeyama_similarity(landmarks, arcface_template(size), np.asarray(weights, dtype=np.float64))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine ``matrix`` to (N, 2) ``points``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine transform."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def warp(image: Image.Image | np.ndarray, matrix: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Warp an RGB image with a (2, 3) transform into a (H, W, 3) uint8 array.

    Args:
        image: the source image.
        matrix: (2, 3) source-to-output transform.
        size: output side (square), or ``(width, height)``.

    Pixels outside the source are black, as in the released training crops.
    """
    width, height = (size, size) if isinstance(size, int) else size
    array = np.asarray(image)
    shrink = np.hypot(*matrix[0, :2])  # output pixels per source pixel
    interpolation = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR
    if interpolation == cv2.INTER_AREA:
        # warpAffine has no area filter: pre-blur with a Gaussian sized to the shrink factor instead.
        sigma = 0.5 / shrink
        array = cv2.GaussianBlur(array, (0, 0), sigmaX=sigma, sigmaY=sigma)
        interpolation = cv2.INTER_LINEAR
    return cv2.warpAffine(
        array, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def align_face(
    image: Image.Image, landmarks: np.ndarray, size: int = 448, weights: tuple[float, ...] = LANDMARK_WEIGHTS
) -> tuple[Image.Image, np.ndarray]:
    """Warp ``image`` so that ``landmarks`` (5, 2) land on the ArcFace template.

    Args:
        image: RGB source image.
        landmarks: (5, 2) eyes, nose, mouth corners in source pixels.
        size: side of the square crop.
        weights: least-squares weight of each landmark (see :data:`LANDMARK_WEIGHTS`).

    Returns:
        The ``size x size`` RGB crop and the (2, 3) source-to-crop transform.
    """
    matrix = estimate_alignment(landmarks, size, weights)
    return Image.fromarray(warp(image, matrix, size)), matrix
