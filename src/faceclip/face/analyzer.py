"""The face policy: which face of a photo to use, how to align it robustly, and its identity vector.

:class:`FaceAnalyzer` turns any photo into an aligned crop and an identity vector:

1. detect at up to ``max_side`` pixels; if nothing is found, retry once on a 2x upscaled copy (small faces),
   then on copies turned by +-30 degrees (strongly tilted faces);
2. keep confident faces, largest first; take the first, or the one ``face_index`` picks;
3. align onto the ArcFace template, then refine: warp a loose crop, re-detect there and re-estimate the
   landmarks (a single pass on a strongly rotated face misplaces the crop by ~10% with small detectors).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceclip.face.alignment import (
    LANDMARK_WEIGHTS,
    align_face,
    invert_transform,
    transform_points,
    warp,
)
from faceclip.face.backend_common import RECOGNIZER_INPUT_SIZE
from faceclip.face.detection import FaceDetector, create_detector
from faceclip.face.image_io import ImageSource, load_image
from faceclip.face.recognition import FaceRecognizer, create_recognizer
from faceclip.face.refinement import refine_landmarks
from faceclip.face.types import AlignedFace, DetectedFace

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "opencv", "insightface")


MIN_FACE_SIDE = 32
"""Faces whose detection box is narrower or shorter than this (in photo pixels) are used with a warning."""


class NoFaceFoundError(ValueError):
    """No usable face in an image; the message names the image and suggests what to try."""


class FaceAnalyzer:
    """Detect, align and embed faces in ordinary photos.

    Args:
        backend: ``"opencv"`` (YuNet + SFace bundled with the install, offline), ``"insightface"`` (needs the
            ``insightface`` package and its model pack), or ``"auto"`` (insightface when both are present,
            otherwise opencv).
        min_score: detections below this confidence are ignored (it is also the detector's own threshold, so
            any value in [0, 1] works).
        max_side: photos are detected at most this many pixels on their longer side.
        upscale_retry: when nothing is found, retry once on a 2x upscaled copy (small faces).
        retry_angles: when still nothing is found, retry on copies turned by these angles in degrees
            (counter-clockwise; strongly tilted faces that the detector misses upright).
        refine_steps: at most this many re-detection passes on an upright crop (0 disables refinement).
        landmark_weights: least-squares weights of (eyes, nose, mouth corners) in the alignment fit; the
            default down-weights the mouth, ``(1, 1, 1, 1, 1)`` reproduces InsightFace's unweighted fit.
        model_dir: folder with the OpenCV Zoo ONNX files (default: bundled ones; opencv backend only).
        insightface_model: insightface model pack name (``"buffalo_l"`` or ``"antelopev2"``).
        insightface_root: insightface model root (default ``~/.insightface``).

    Models are loaded on first use, so constructing an analyzer is cheap.
    """

    def __init__(
        self,
        backend: str = "auto",
        min_score: float = 0.6,
        max_side: int = 640,
        upscale_retry: bool = True,
        retry_angles: tuple[float, ...] = (30.0, -30.0),
        refine_steps: int = 3,
        landmark_weights: tuple[float, ...] = LANDMARK_WEIGHTS,
        model_dir: str | os.PathLike | None = None,
        insightface_model: str = "buffalo_l",
        insightface_root: str | os.PathLike | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(
                f"FaceAnalyzer: unknown `backend` {backend!r}; choose one of {', '.join(BACKENDS)}."
            )
        _check_settings(min_score, max_side, refine_steps, retry_angles)
        if backend == "auto":
            backend = (
                "insightface" if insightface_available(insightface_model, insightface_root) else "opencv"
            )
        self.backend = backend
        self.min_score = min_score
        self.max_side = max_side
        self.upscale_retry = upscale_retry
        self.retry_angles = tuple(retry_angles)
        self.refine_steps = refine_steps
        self.landmark_weights = tuple(landmark_weights)
        if backend == "opencv":
            self._backend_kwargs: dict = {"model_dir": model_dir}
        else:
            self._backend_kwargs = {"model_name": insightface_model, "root": insightface_root}
        self._detector: FaceDetector | None = None
        self._recognizer: FaceRecognizer | None = None

    @property
    def detector(self) -> FaceDetector:
        """The detector (loaded on first use)."""
        if self._detector is None:
            self._detector = create_detector(
                self.backend, score_threshold=self.min_score, **self._backend_kwargs
            )
        return self._detector

    @property
    def recognizer(self) -> FaceRecognizer:
        """The recogniser (loaded on first use)."""
        if self._recognizer is None:
            self._recognizer = create_recognizer(self.backend, **self._backend_kwargs)
        return self._recognizer

    @property
    def recognizer_name(self) -> str:
        """Name of the identity model, for reports (e.g. ``"opencv-sface"``)."""
        return f"{self.backend}-{self.recognizer.name}"

    def detect(self, image: ImageSource) -> list[DetectedFace]:
        """Find the confident faces of ``image``, largest first.

        Args:
            image: a path, PIL image or numpy array (see :func:`~faceclip.face.load_image`).

        Returns:
            Faces with boxes and landmarks in source-image pixels; empty when there are none.
        """
        return self._detect(load_image(image))

    def align(self, image: ImageSource, size: int = 448, face_index: int | None = None) -> AlignedFace:
        """Detect a face in ``image`` and warp it onto the ArcFace template.

        Args:
            image: a path, PIL image or numpy array.
            size: side of the square crop in pixels (448: FaceCLIP's crops; 112: recognisers).
            face_index: which face, in :meth:`detect` order (largest first); ``None`` takes the largest.

        Returns:
            An :class:`AlignedFace` whose ``face`` holds the refined landmarks in source pixels.

        Raises:
            NoFaceFoundError: no confident face, or ``face_index`` beyond the faces found.
        """
        _check_whole_number(size, "size", minimum=1)
        if face_index is not None:
            _check_whole_number(face_index, "face_index")
        name = describe_source(image)
        image = load_image(image)
        face = self._pick(self._detect(image), face_index, name)
        warn_if_small(face, name)
        face = self._refine(image, face)
        crop, matrix = align_face(image, face.landmarks, size, self.landmark_weights)
        return AlignedFace(image=crop, face=face, transform=matrix)

    def embed(self, image: ImageSource | AlignedFace, face_index: int | None = None) -> np.ndarray:
        """Identity vector of a face.

        Args:
            image: an :class:`AlignedFace` (its crop, resized to 112 px), or a photo (path, PIL image or
                array) to detect and align at 112 px first.
            face_index: which face of a photo, as in :meth:`align`.

        Returns:
            (d,) float32 L2-normalised vector (d = 128 for opencv's SFace, 512 for insightface's ArcFace).
        """
        if isinstance(image, AlignedFace):
            crop = image.image
            if crop.size != (RECOGNIZER_INPUT_SIZE, RECOGNIZER_INPUT_SIZE):
                side = RECOGNIZER_INPUT_SIZE
                crop = Image.fromarray(
                    cv2.resize(np.asarray(crop), (side, side), interpolation=cv2.INTER_AREA)
                )
        else:
            crop = self.align(image, size=RECOGNIZER_INPUT_SIZE, face_index=face_index).image
        return self.recognizer(crop)

    def refine(self, image: ImageSource, face: DetectedFace) -> DetectedFace:
        """Re-estimate ``face``'s landmarks by re-detecting it on an upright crop (see :mod:`.refinement`)."""
        if not isinstance(face, DetectedFace):
            raise TypeError(
                f"face: expected a DetectedFace (from FaceAnalyzer.detect), got {type(face).__name__}."
            )
        return self._refine(load_image(image), face)

    def _refine(self, image: Image.Image, face: DetectedFace) -> DetectedFace:
        if self.refine_steps <= 0:
            return face
        landmarks = refine_landmarks(
            self.detector, image, face.landmarks, self.refine_steps, self.landmark_weights
        )
        return DetectedFace(box=face.box, score=face.score, landmarks=landmarks.astype(np.float32))

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        scale = min(1.0, self.max_side / max(image.size))
        faces = self._detect_scaled(image, scale)
        if not faces and self.upscale_retry:
            logger.debug("no face at scale %.2f; retrying at %.2f", scale, 2 * scale)
            faces = self._detect_scaled(image, 2 * scale)
        for angle in self.retry_angles:
            if faces:
                break
            logger.debug("no face upright; retrying on a copy turned by %g degrees", angle)
            faces = self._detect_rotated(image, scale, angle)
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def _detect_rotated(self, image: Image.Image, scale: float, angle: float) -> list[DetectedFace]:
        """Detect on a copy of ``image`` turned by ``angle`` degrees (counter-clockwise) and scaled."""
        width, height = image.size
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        corners = transform_points(matrix, np.array([[0, 0], [width, 0], [0, height], [width, height]]))
        matrix[:, 2] -= corners.min(0)  # expand the canvas so nothing is cut off
        out_size = tuple(int(v) for v in np.ceil(corners.max(0) - corners.min(0)))
        turned = Image.fromarray(warp(image, matrix, out_size))
        back = invert_transform(matrix)
        faces = []
        for face in self.detector(turned):
            if face.score < self.min_score:
                continue
            x0, y0, x1, y1 = face.box
            box_corners = transform_points(back, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
            box = np.concatenate([box_corners.min(0), box_corners.max(0)]).astype(np.float32)
            landmarks = transform_points(back, face.landmarks).astype(np.float32)
            faces.append(DetectedFace(box=box, score=face.score, landmarks=landmarks))
        return faces

    def _detect_scaled(self, image: Image.Image, scale: float) -> list[DetectedFace]:
        """Detect on ``image`` resized by ``scale``; confident faces only, in ``image`` pixels."""
        factors = np.ones(2)
        if scale != 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            factors = np.array(size) / np.array(image.size)  # exact per-axis factors after rounding
            resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
            image = image.resize(size, resample)

        def to_source(points: np.ndarray) -> np.ndarray:  # pixel centres: (x + 0.5) / s - 0.5
            return ((points + 0.5) / factors - 0.5).astype(np.float32)

        return [
            DetectedFace(
                box=to_source(face.box.reshape(2, 2)).reshape(4),
                score=face.score,
                landmarks=to_source(face.landmarks),
            )
            for face in self.detector(image)
            if face.score >= self.min_score
        ]

    def _pick(self, faces: list[DetectedFace], face_index: int | None, name: str) -> DetectedFace:
        if not faces:
            tried = [f"confidence >= {self.min_score}"]
            if self.upscale_retry:
                tried.append("also on a 2x upscaled copy")
            if self.retry_angles:
                tried.append(f"and turned by {', '.join(f'{a:g}' for a in self.retry_angles)} degrees")
            raise NoFaceFoundError(
                f"No face found in {name} ({', '.join(tried)}). Use a photo where the face is visible, "
                "roughly frontal, well lit and at least ~40 pixels wide, or crop the photo closer to the face."
            )
        index = 0 if face_index is None else face_index
        if not -len(faces) <= index < len(faces):
            raise NoFaceFoundError(
                f"Face index {face_index} is out of range: only {len(faces)} face(s) were found in {name}; "
                f"use a face index from 0 to {len(faces) - 1} (faces are ordered largest first)."
            )
        return faces[index]


def warn_if_small(face: DetectedFace, name: str) -> None:
    """Log a warning when ``face``'s box is under :data:`MIN_FACE_SIDE` pixels on a side (the face is still used).

    A log record rather than a Python warning: the command line shows it as its other warnings, once per photo.
    """
    width, height = (float(face.box[2] - face.box[0]), float(face.box[3] - face.box[1]))
    if min(width, height) < MIN_FACE_SIDE:
        logger.warning(
            "The face in %s is only %.0fx%.0f pixels (under %d); it is upscaled for the crop, so identity and "
            "results will be poor. Use a photo where the face is larger.", name, width, height, MIN_FACE_SIDE,
        )  # fmt: skip


def _check_whole_number(value: object, name: str, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected a whole number, got {type(value).__name__} {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected a whole number >= {minimum}, got {value}.")


def _check_settings(min_score: float, max_side: int, refine_steps: int, retry_angles: tuple) -> None:
    """Refuse analyzer settings that would fail later inside the detector."""
    if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not 0 <= min_score <= 1:
        raise ValueError(f"FaceAnalyzer: `min_score` must be a number in [0, 1], got {min_score!r}.")
    _check_whole_number(max_side, "FaceAnalyzer: `max_side`", minimum=32)
    _check_whole_number(refine_steps, "FaceAnalyzer: `refine_steps`", minimum=0)
    if not all(isinstance(a, int | float) and np.isfinite(a) for a in retry_angles):
        raise ValueError(
            f"FaceAnalyzer: `retry_angles` must be finite numbers of degrees, got {retry_angles!r}."
        )


def describe_source(source: object) -> str:
    """How an image is named in messages: its quoted path, or what kind of object it is."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source)}'"
    filename = getattr(source, "filename", "")
    if isinstance(source, Image.Image) and filename:
        return f"'{filename}'"
    if isinstance(source, np.ndarray):
        return f"the given {source.shape} array"
    return f"the given {type(source).__name__}"


def insightface_available(model_name: str = "buffalo_l", root: str | os.PathLike | None = None) -> bool:
    """True when the ``insightface`` package and its model pack ``model_name`` are both installed."""
    try:
        if importlib.util.find_spec("insightface") is None:
            return False
    except (ImportError, ValueError):  # a broken or deliberately blocked install
        return False
    from faceclip.face.insightface_backend import model_pack_dir

    return model_pack_dir(model_name, root).is_dir()
