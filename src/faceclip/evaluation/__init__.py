"""Evaluation: ID-Sim, no-face rate, CLIP-T and CLIP-I for any set of generated images, and their reports.

>>> from faceclip.evaluation import read_manifest, IdentityScorer, CLIPScorer, score_entries, build_report
>>> manifest = read_manifest("manifest.jsonl")        # one {"image", "reference", "prompt"} per line
>>> result = score_entries(manifest.entries, IdentityScorer(), CLIPScorer.from_pretrained())
>>> report = build_report(result.scores, manifest.problems + result.problems, "opencv-sface", "openai/clip-vit-large-patch14")

The ``faceclip eval`` command wraps this (``score`` for a manifest, ``run`` to generate a grid first).
Heavy parts (the CLIP model, matplotlib, accelerate) load only when used.
"""

from faceclip.evaluation.clip_score import DEFAULT_CLIP_MODEL, CLIPScorer
from faceclip.evaluation.identity import NO_FACE_SCORE, IdentityMatch, IdentityScorer, ReferenceFaceError
from faceclip.evaluation.manifest import (
    Manifest,
    ManifestEntry,
    ManifestProblem,
    read_manifest,
    write_manifest,
)
from faceclip.evaluation.metrics import ImageScore, Summary, aggregate, group_metrics, summarize
from faceclip.evaluation.prompts import PROMPT_SETS, load_prompts
from faceclip.evaluation.report import REPORT_FILES, build_report, make_contact_sheet, write_reports
from faceclip.evaluation.score import ScoreResult, score_entries

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "NO_FACE_SCORE",
    "PROMPT_SETS",
    "REPORT_FILES",
    "CLIPScorer",
    "IdentityMatch",
    "IdentityScorer",
    "ImageScore",
    "Manifest",
    "ManifestEntry",
    "ManifestProblem",
    "ReferenceFaceError",
    "ScoreResult",
    "Summary",
    "aggregate",
    "build_report",
    "group_metrics",
    "load_prompts",
    "make_contact_sheet",
    "read_manifest",
    "score_entries",
    "summarize",
    "write_manifest",
    "write_reports",
]
