"""ID-Sim: cosine similarity of the identity vectors of a reference face and the face in a generated image.

The field's convention: the largest detected face of the generated image is compared with the reference face;
an image with no detected face scores 0 and is counted in the no-face rate. Papers use different recognisers
(CurricularFace, FaceNet, ArcFace, insightface's antelopev2), so scores are only comparable under the same one:
:attr:`IdentityScorer.recognizer_name` goes into every report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faceclip.face import FaceAnalyzer, NoFaceFoundError
from faceclip.face.recognition import cosine_similarity

logger = logging.getLogger(__name__)

NO_FACE_SCORE = 0.0
"""ID-Sim given to an image in which no face is detected."""

_RECOGNIZER_CROP = 112  # recognisers read 112 x 112 ArcFace crops


@dataclass(frozen=True)
class IdentityMatch:
    """ID-Sim of one generated image.

    Attributes:
        id_sim: cosine similarity with the reference (``NO_FACE_SCORE`` when no face was detected).
        face_detected: whether a face was found in the generated image.
        detection_score: the detector's confidence for the compared face, when one was found.
    """

    id_sim: float
    face_detected: bool
    detection_score: float | None = None


class ReferenceFaceError(ValueError):
    """The reference photo of an identity holds no usable face."""


class IdentityScorer:
    """Scores generated images against reference faces with one :class:`~faceclip.face.FaceAnalyzer`.

    Reference vectors are cached by path, so a reference shared by many images is embedded once.

    Args:
        analyzer: the face analyzer (default: ``FaceAnalyzer("auto")``: insightface when installed, otherwise
            the bundled offline YuNet + SFace).
    """

    def __init__(self, analyzer: FaceAnalyzer | None = None) -> None:
        if analyzer is not None and not isinstance(analyzer, FaceAnalyzer):
            raise TypeError(
                f"analyzer: expected a faceclip.face.FaceAnalyzer or None, got {type(analyzer).__name__}; "
                "for a backend name use FaceAnalyzer(backend=...)."
            )
        self.analyzer = analyzer if analyzer is not None else FaceAnalyzer(backend="auto")
        self._references: dict[Path, np.ndarray] = {}

    @property
    def recognizer_name(self) -> str:
        """Name of the face recogniser, for reports."""
        return self.analyzer.recognizer_name

    def reference_vector(self, reference: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
        """Identity vector (d,) of the largest face in a reference photo (path, PIL image or HxWx3 array).

        Raises:
            ReferenceFaceError: no face in the reference (ID-Sim cannot be measured against it).
            faceclip.face.ImageLoadError: the file is missing or cannot be decoded.
            TypeError: ``reference`` is not a path, PIL image or array.
        """
        if not isinstance(reference, str | os.PathLike | Image.Image | np.ndarray):
            raise TypeError(
                f"reference: expected a photo path, PIL image or HxWx3 array, got {type(reference).__name__}."
            )
        key = Path(reference).resolve() if isinstance(reference, str | os.PathLike) else None
        if key is not None and key in self._references:
            return self._references[key]
        try:
            vector = self.analyzer.embed(reference)
        except NoFaceFoundError as err:
            raise ReferenceFaceError(f"reference face: {err}") from err
        if key is not None:
            self._references[key] = vector
        return vector

    def score(self, image: Image.Image | Path, reference_vector: np.ndarray) -> IdentityMatch:
        """ID-Sim of the largest face of ``image`` with a reference vector; 0 and ``face_detected=False``
        when ``image`` has no face.

        Raises:
            ValueError: ``reference_vector`` is not a finite, non-zero (d,) vector of this recogniser.
        """
        reference_vector = _check_reference_vector(reference_vector)
        try:
            aligned = self.analyzer.align(image, size=_RECOGNIZER_CROP)
        except NoFaceFoundError:
            return IdentityMatch(NO_FACE_SCORE, face_detected=False)
        vector = self.analyzer.embed(aligned)
        if vector.shape != reference_vector.shape:
            raise ValueError(
                f"reference_vector: {reference_vector.shape[0]} values, but {self.recognizer_name} gives "
                f"{vector.shape[0]}; make it with reference_vector() of a scorer using the same recogniser."
            )
        return IdentityMatch(
            float(cosine_similarity(vector, reference_vector)),
            face_detected=True,
            detection_score=float(aligned.face.score),
        )


def _check_reference_vector(vector: object) -> np.ndarray:
    """``vector`` as a (d,) float array, refusing other shapes, NaN/inf and the zero vector."""
    try:
        if vector is None or isinstance(vector, str):
            raise TypeError
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"reference_vector: expected a (d,) array from reference_vector(), got {type(vector).__name__}."
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"reference_vector: expected shape (d,) from reference_vector(), got {array.shape}.")
    if not np.isfinite(array).all() or not array.any():
        raise ValueError(
            "reference_vector: the values must be finite and not all zero (make it with reference_vector())."
        )
    return array
