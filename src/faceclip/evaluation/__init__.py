"""Evaluation: ID-Sim, no-face rate, CLIP-T and CLIP-I for any set of generated images, and their reports.

>>> from faceclip.evaluation import read_manifest, IdentityScorer, CLIPScorer, score_entries, build_report
>>> manifest = read_manifest("manifest.jsonl")        # one {"image", "reference", "prompt"} per line
>>> result = score_entries(manifest.entries, IdentityScorer(), CLIPScorer.from_pretrained())
>>> report = build_report(result.scores, manifest.problems + result.problems, "opencv-sface", "openai/clip-vit-large-patch14")

The ``faceclip eval`` command wraps this (``score`` for a manifest, ``run`` to generate a grid first).
Heavy parts (the CLIP model, matplotlib, accelerate) load only when used.
"""

from faceclip.evaluation.clip_score import DEFAULT_CLIP_MODEL, CLIPScorer
from faceclip.evaluation.identity import IdentityScorer
from faceclip.evaluation.manifest import ManifestEntry, read_manifest, write_manifest
from faceclip.evaluation.prompts import load_prompts
from faceclip.evaluation.report import build_report, write_reports
from faceclip.evaluation.score import score_entries

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "CLIPScorer",
    "IdentityScorer",
    "ManifestEntry",
    "build_report",
    "load_prompts",
    "read_manifest",
    "score_entries",
    "write_manifest",
    "write_reports",
]
