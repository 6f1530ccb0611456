"""Landmark refinement: re-detect a face on an upright, loosely aligned crop and map the landmarks back.

Small detectors place landmarks well on upright faces of a familiar size and poorly on strongly rotated ones
(a single pass on a face turned 30 degrees misplaces the ArcFace crop by about 10% of its size with YuNet). Each
refinement step warps the face upright into a canvas with context around it, detects there at two scales and
mirrored (averaging four estimates halves the detector's landmark noise), and maps the mean back to the photo.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from faceclip.face.alignment import (
    LANDMARK_WEIGHTS,
    estimate_alignment,
    invert_transform,
    transform_points,
    warp,
)
from faceclip.face.detection import FaceDetector
from faceclip.face.types import DetectedFace

logger = logging.getLogger(__name__)

TEMPLATE_SIZE = 224
"""Size of the template inside the refinement canvas; the canvas is twice as large, the face in its middle."""
CANVAS_SIZE = 2 * TEMPLATE_SIZE
VIEW_SCALES = (1.0, 0.75, 0.5)
"""Scales of the canvas views averaged in each refinement step (each view is also used mirrored)."""
# Landmark order after a horizontal flip: the eyes and the mouth corners swap sides.
_MIRROR_ORDER = [1, 0, 2, 4, 3]


def refine_landmarks(
    detector: FaceDetector,
    image: Image.Image,
    landmarks: np.ndarray,
    steps: int = 3,
    weights: tuple[float, ...] = LANDMARK_WEIGHTS,
    tolerance: float = 0.01,
) -> np.ndarray:
    """Re-estimate 5 landmarks (5, 2) of a face in ``image`` by re-detecting it upright.

    Args:
        detector: the detector that found the face.
        image: the RGB photo.
        landmarks: (5, 2) initial landmarks in photo pixels.
        steps: at most this many re-detection passes.
        weights: landmark weights of the alignment fit.
        tolerance: stop once no landmark moves more than this fraction of the eye distance.

    Returns:
        (5, 2) float64 refined landmarks in photo pixels (the input if the face is not found again).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    for step in range(steps):
        matrix = estimate_alignment(landmarks, TEMPLATE_SIZE, weights)
        matrix[:, 2] += TEMPLATE_SIZE / 2  # centre the template in the canvas
        canvas = Image.fromarray(warp(image, matrix, CANVAS_SIZE))
        found = detect_upright(detector, canvas)
        if found is None:
            logger.debug("refinement step %d lost the face; keeping the previous landmarks", step)
            break
        updated = transform_points(invert_transform(matrix), found)
        eye_distance = max(float(np.linalg.norm(landmarks[1] - landmarks[0])), 1e-6)
        moved = float(np.linalg.norm(updated - landmarks, axis=1).max()) / eye_distance
        landmarks = updated
        logger.debug("refinement step %d moved the landmarks by %.3f eye distances", step, moved)
        if moved < tolerance:
            break
    return landmarks


def detect_upright(
    detector: FaceDetector,
    canvas: Image.Image,
    scales: tuple[float, ...] = VIEW_SCALES,
    mirror: bool = True,
) -> np.ndarray | None:
    """Mean landmarks (5, 2) of the face centred in a square ``canvas``, over scaled (and mirrored) views.

    Returns ``None`` when no view finds a face near the centre.
    """
    side = canvas.size[0]
    estimates = []
    for scale in scales:
        view = canvas if scale == 1.0 else canvas.resize((round(side * scale),) * 2, Image.Resampling.BICUBIC)
        for mirrored in (False, True) if mirror else (False,):
            shown = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else view
            face = central_face(detector(shown), shown.size[0])
            if face is None:
                continue
            points = face.landmarks.astype(np.float64)
            if mirrored:
                points[:, 0] = shown.size[0] - 1 - points[:, 0]
                points = points[_MIRROR_ORDER]
            factor = side / shown.size[0]
            estimates.append((points + 0.5) * factor - 0.5)  # pixel centres back to canvas pixels
    return np.mean(estimates, axis=0) if estimates else None


def central_face(faces: list[DetectedFace], side: int) -> DetectedFace | None:
    """The detection whose box centre is nearest the centre of a ``side``-pixel square, within ``side / 4``."""
    centre = side / 2
    best, best_distance = None, side / 4
    for face in faces:
        distance = np.hypot(
            (face.box[0] + face.box[2]) / 2 - centre, (face.box[1] + face.box[3]) / 2 - centre
        )
        if distance < best_distance:
            best, best_distance = face, distance
    return best
