"""Per-image scores and their aggregates (mean, standard deviation, no-face rate; overall, per prompt, per identity).

Conventions, kept identical everywhere so reports can be compared:

- ``id_sim``: mean over *all* images, with no-face images counted as 0 (the field's convention);
  ``id_sim_detected`` is the mean over the images in which a face was found.
- ``no_face_rate``: fraction of images without a detected face.
- ``clip_t``: 100 x cosine; ``clip_i``: cosine (only where a baseline image was given).
- standard deviations are population standard deviations (``numpy.std``, ``ddof=0``) over images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ImageScore:
    """All scores of one generated image.

    Attributes:
        line: line of the image in the manifest.
        image: path of the generated image.
        reference: path of the reference face.
        prompt: the prompt.
        identity: the identity's name.
        seed: the generation seed, when known.
        id_sim: ID-Sim (0 when no face was detected).
        face_detected: whether a face was detected in the image.
        detection_score: the detector's confidence for that face.
        clip_t: CLIP-T (100 x cosine), or ``None`` when CLIP metrics were not computed.
        clip_i: CLIP-I (cosine) with the baseline, or ``None`` without a baseline.
    """

    line: int
    image: str
    reference: str
    prompt: str
    identity: str
    seed: int | None
    id_sim: float
    face_detected: bool
    detection_score: float | None = None
    clip_t: float | None = None
    clip_i: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> ImageScore:
        return cls(**record)


@dataclass(frozen=True)
class Summary:
    """Mean and population standard deviation of ``n`` values."""

    mean: float
    std: float
    n: int

    def to_json(self) -> dict:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Summary | None:
    """Mean, std (``ddof=0``) and count of the values that are not ``None``; ``None`` if there are none."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return None
    return Summary(mean=float(array.mean()), std=float(array.std()), n=int(array.size))


def group_metrics(scores: Sequence[ImageScore]) -> dict:
    """The aggregates of one group of images: a summary per metric, the no-face rate and the image count."""
    return {
        "n_images": len(scores),
        "no_face_rate": (sum(not s.face_detected for s in scores) / len(scores)) if scores else None,
        "id_sim": _as_json(summarize(s.id_sim for s in scores)),
        "id_sim_detected": _as_json(summarize(s.id_sim for s in scores if s.face_detected)),
        "clip_t": _as_json(summarize(s.clip_t for s in scores)),
        "clip_i": _as_json(summarize(s.clip_i for s in scores)),
    }


def aggregate(scores: Sequence[ImageScore]) -> dict:
    """Aggregates overall, per prompt and per identity (groups in first-seen order).

    Returns:
        ``{"overall": {...}, "per_prompt": {prompt: {...}}, "per_identity": {identity: {...}}}`` where each
        ``{...}`` is :func:`group_metrics` of that group.
    """
    return {
        "overall": group_metrics(scores),
        "per_prompt": {
            key: group_metrics(group) for key, group in group_by(scores, lambda s: s.prompt).items()
        },
        "per_identity": {
            key: group_metrics(group) for key, group in group_by(scores, lambda s: s.identity).items()
        },
    }


def group_by(scores: Iterable[ImageScore], key: Callable[[ImageScore], str]) -> dict[str, list[ImageScore]]:
    """Group scores by ``key``, keeping the order in which keys first appear."""
    groups: dict[str, list[ImageScore]] = {}
    for score in scores:
        groups.setdefault(key(score), []).append(score)
    return groups


def _as_json(summary: Summary | None) -> dict | None:
    return summary.to_json() if summary is not None else None
