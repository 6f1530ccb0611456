"""Scoring manifest entries: ID-Sim, no-face and (optionally) CLIP-T and CLIP-I for each image.

A missing, unreadable or faceless reference, or a missing or unreadable image, becomes a
:class:`~faceclip.evaluation.manifest.ManifestProblem` for that line; the other lines are still scored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from faceclip.evaluation.clip_score import CLIPScorer
from faceclip.evaluation.identity import IdentityScorer, ReferenceFaceError
from faceclip.evaluation.manifest import ManifestEntry, ManifestProblem
from faceclip.evaluation.metrics import ImageScore
from faceclip.face import ImageLoadError, load_image

logger = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """Scores of the usable entries and the problems of the others, both in manifest order."""

    scores: list[ImageScore] = field(default_factory=list)
    problems: list[ManifestProblem] = field(default_factory=list)

    def extend(self, other: ScoreResult) -> None:
        self.scores.extend(other.scores)
        self.problems.extend(other.problems)
        self.scores.sort(key=lambda s: s.line)
        self.problems.sort(key=lambda p: p.line)


@dataclass
class _Loaded:
    entry: ManifestEntry
    image: Image.Image
    reference_vector: np.ndarray
    baseline: Image.Image | None


def score_entries(
    entries: Sequence[ManifestEntry],
    identity: IdentityScorer,
    clip: CLIPScorer | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> ScoreResult:
    """Score each entry; entries whose files cannot be used are reported as problems, not raised.

    Args:
        entries: the images to score (e.g. :func:`~faceclip.evaluation.manifest.read_manifest`'s entries).
        identity: the ID-Sim scorer (its recogniser is named in reports).
        clip: the CLIP-T / CLIP-I scorer, or ``None`` to skip those metrics.
        batch_size: images per CLIP forward pass.
        progress: show a progress bar.

    Returns:
        A :class:`ScoreResult` with one :class:`~faceclip.evaluation.metrics.ImageScore` per usable entry.
    """
    if batch_size < 1:
        raise ValueError(f"score_entries: `batch_size` must be >= 1, got {batch_size}.")
    result = ScoreResult()
    bar = tqdm(total=len(entries), desc="scoring", unit="image", disable=not progress)
    for start in range(0, len(entries), batch_size):
        batch = []
        for entry in entries[start : start + batch_size]:
            loaded = _load(entry, identity, clip, result.problems)
            if loaded is not None:
                batch.append(loaded)
        result.scores.extend(_score_batch(batch, identity, clip))
        bar.update(min(batch_size, len(entries) - start))
    bar.close()
    return result


def _load(
    entry: ManifestEntry, identity: IdentityScorer, clip: CLIPScorer | None, problems: list[ManifestProblem]
) -> _Loaded | None:
    def problem(message: str) -> None:
        logger.warning("line %d (%s): %s", entry.line, entry.image, message)
        problems.append(ManifestProblem(entry.line, message, image=str(entry.image)))

    try:
        image = load_image(entry.image)
    except ImageLoadError as err:
        problem(f"image: {err}")
        return None
    try:
        reference_vector = identity.reference_vector(entry.reference)
    except (ImageLoadError, ReferenceFaceError) as err:
        problem(f"reference {entry.reference}: {err}")
        return None
    baseline = None
    if entry.baseline is not None and clip is not None:
        try:
            baseline = load_image(entry.baseline)
        except ImageLoadError as err:
            problem(f"baseline (CLIP-I skipped for this image): {err}")
    return _Loaded(entry, image, reference_vector, baseline)


def _score_batch(batch: list[_Loaded], identity: IdentityScorer, clip: CLIPScorer | None) -> list[ImageScore]:
    if not batch:
        return []
    clip_t: list[float | None] = [None] * len(batch)
    clip_i: list[float | None] = [None] * len(batch)
    if clip is not None:
        clip_t = clip.clip_t([item.image for item in batch], [item.entry.prompt for item in batch])
        with_baseline = [i for i, item in enumerate(batch) if item.baseline is not None]
        values = clip.clip_i(
            [batch[i].image for i in with_baseline], [batch[i].baseline for i in with_baseline]
        )
        for i, value in zip(with_baseline, values, strict=True):
            clip_i[i] = value
    scores = []
    for item, t, i in zip(batch, clip_t, clip_i, strict=True):
        match = identity.score(item.image, item.reference_vector)
        entry = item.entry
        scores.append(
            ImageScore(
                line=entry.line,
                image=str(entry.image),
                reference=str(entry.reference),
                prompt=entry.prompt,
                identity=entry.identity,
                seed=entry.seed,
                id_sim=match.id_sim,
                face_detected=match.face_detected,
                detection_score=match.detection_score,
                clip_t=t,
                clip_i=i,
            )
        )
    return scores
