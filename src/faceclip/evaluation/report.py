"""Evaluation reports: ``report.json``, ``report.md``, PNG plots and a contact sheet.

``report.json`` holds every per-image score, the aggregates (overall, per prompt, per identity), the problems
met, and what produced the numbers (recogniser, CLIP model, settings), so it can be re-plotted or compared later.
Its paths are relative to its folder (``../`` for files outside it) when :func:`build_report` is given that
folder, as ``faceclip eval score`` and ``eval run`` both do.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from faceclip.evaluation.manifest import ManifestProblem, relative_path
from faceclip.evaluation.metrics import ImageScore, aggregate, group_by
from faceclip.outputs import atomic_file, make_grid, save_png, write_text_atomic

logger = logging.getLogger(__name__)

REPORT_FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "per_prompt_plot": "per_prompt.png",
    "scatter_plot": "id_sim_vs_clip_t.png",
    "contact_sheet": "contact_sheet.png",
}


def build_report(
    scores: Sequence[ImageScore],
    problems: Sequence[ManifestProblem],
    recognizer: str,
    clip_model: str | None,
    settings: Mapping[str, object] | None = None,
    relative_to: str | os.PathLike | None = None,
) -> dict:
    """Everything a report holds, as a JSON-ready dict.

    Args:
        scores: the per-image scores.
        problems: the manifest lines that could not be scored (with their line numbers).
        recognizer: name of the face recogniser behind ID-Sim.
        clip_model: name of the CLIP model behind CLIP-T / CLIP-I, or ``None`` when they were skipped.
        settings: how the images were made or scored (manifest path, model, seeds...), stored as given.
        relative_to: the report's folder: image, reference and problem paths are stored relative to it (with
            ``../`` for files outside it), as in ``manifest.jsonl``; ``None`` keeps them as given.
    """
    from faceclip import __version__

    scores = [_with_relative_paths(score, relative_to) for score in scores]
    problems = [
        dataclasses.replace(p, image=relative_path(p.image, relative_to)) if p.image else p for p in problems
    ]

    return {
        "faceclip_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "recognizer": recognizer,
        "clip_model": clip_model,
        "conventions": {
            "id_sim": "cosine of identity vectors; an image without a detected face scores 0",
            "id_sim_detected": "ID-Sim over the images with a detected face only",
            "clip_t": "100 x cosine(CLIP image, CLIP text)",
            "clip_i": "cosine(CLIP image, CLIP image of the same seed without identity)",
            "std": "population standard deviation over images (ddof=0)",
        },
        "settings": dict(settings or {}),
        "counts": {"scored": len(scores), "problems": len(problems)},
        "aggregates": aggregate(scores),
        "images": [score.to_json() for score in sorted(scores, key=lambda s: s.line)],
        "problems": [problem.to_json() for problem in sorted(problems, key=lambda p: p.line)],
    }


def write_reports(report: Mapping, out_dir: str | os.PathLike, contact_sheet: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, the plots and the contact sheet into ``out_dir``.

    Returns:
        The written files by kind (see :data:`REPORT_FILES`); a plot that has no data (e.g. the scatter without
        CLIP-T) is left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = [_with_paths_under(ImageScore.from_json(record), out) for record in report["images"]]
    written = {
        "json": write_text_atomic(
            out / REPORT_FILES["json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        )
    }
    if scores:
        written["per_prompt_plot"] = plot_per_prompt(report, out / REPORT_FILES["per_prompt_plot"])
        if any(score.clip_t is not None for score in scores):
            written["scatter_plot"] = plot_id_sim_vs_clip_t(scores, out / REPORT_FILES["scatter_plot"])
        if contact_sheet:
            written["contact_sheet"] = save_png(
                make_contact_sheet(scores), out / REPORT_FILES["contact_sheet"]
            )
    figures = [kind for kind in ("per_prompt_plot", "scatter_plot", "contact_sheet") if kind in written]
    written["markdown"] = write_text_atomic(out / REPORT_FILES["markdown"], render_markdown(report, figures))
    for kind, path in written.items():
        logger.info("wrote %s: %s", kind, path)
    return written


def _with_relative_paths(score: ImageScore, folder: str | os.PathLike | None) -> ImageScore:
    """``score`` with its image and reference paths relative to ``folder`` (as given when ``folder`` is None)."""
    image, reference = (relative_path(p, folder) for p in (score.image, score.reference))
    return dataclasses.replace(score, image=image, reference=reference)


def _with_paths_under(score: ImageScore, folder: Path) -> ImageScore:
    """``score`` with the paths of a report in ``folder`` (relative to it, or absolute) made openable."""
    return dataclasses.replace(
        score, image=str(folder / score.image), reference=str(folder / score.reference)
    )


# ----------------------------------------------------------------------------------------------- markdown


def render_markdown(report: Mapping, figures: Sequence[str] = ()) -> str:
    """The report as a Markdown page: what was measured, the overall table, then per prompt and per identity.

    Args:
        report: the dict of :func:`build_report`.
        figures: kinds of the figures written beside it (keys of :data:`REPORT_FILES`), linked at the end.
    """
    aggregates = report["aggregates"]
    overall = aggregates["overall"]
    lines = [
        "# faceclip evaluation report",
        "",
        f"- recogniser (ID-Sim): `{report['recognizer']}`",
        f"- CLIP model (CLIP-T, CLIP-I): `{report['clip_model'] or 'not computed'}`",
        f"- images scored: {report['counts']['scored']}; manifest problems: {report['counts']['problems']}",
        f"- created: {report['created']} (faceclip {report['faceclip_version']})",
        "",
        "ID-Sim counts images without a detected face as 0; CLIP-T is 100 x cosine; std is over images (ddof=0).",
        "",
        "## Overall",
        "",
        "| metric | mean | std | n |",
        "|---|---:|---:|---:|",
    ]
    for key, label, spec in (
        ("id_sim", "ID-Sim", ".4f"),
        ("id_sim_detected", "ID-Sim (faces only)", ".4f"),
        ("clip_t", "CLIP-T", ".2f"),
        ("clip_i", "CLIP-I", ".4f"),
    ):
        summary = overall[key]
        if summary is not None:
            lines.append(f"| {label} | {summary['mean']:{spec}} | {summary['std']:{spec}} | {summary['n']} |")
    lines.append(f"| no-face rate | {_fmt(overall['no_face_rate'], '.3f')} | | {overall['n_images']} |")
    for title, key in (("Per prompt", "per_prompt"), ("Per identity", "per_identity")):
        lines += ["", f"## {title}", "", *_group_table(aggregates[key], key.removeprefix("per_"))]
    if report["problems"]:
        lines += ["", "## Problems (lines not scored, or scored in part)", ""]
        lines += [f"- line {p['line']}: {_md_cell(p['message'])}" for p in report["problems"]]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({REPORT_FILES[name]})" for name in figures]
    return "\n".join(lines) + "\n"


def _group_table(groups: Mapping[str, Mapping], name: str) -> list[str]:
    rows = [
        f"| {name} | n | ID-Sim | ID-Sim (faces only) | no-face rate | CLIP-T | CLIP-I |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, metrics in groups.items():
        cells = [_md_cell(key), str(metrics["n_images"])]
        cells += [_mean_std(metrics["id_sim"]), _mean_std(metrics["id_sim_detected"])]
        cells += [
            _fmt(metrics["no_face_rate"], ".3f"),
            _mean_std(metrics["clip_t"], ".2f"),
            _mean_std(metrics["clip_i"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _mean_std(summary: Mapping | None, spec: str = ".4f") -> str:
    return "–" if summary is None else f"{summary['mean']:{spec}} ± {summary['std']:{spec}}"


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else f"{value:{spec}}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------------------- plots


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError('The evaluation plots need matplotlib: pip install "faceclip[eval]"') from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_prompt(report: Mapping, path: str | os.PathLike) -> Path:
    """Horizontal bars per prompt: mean ID-Sim and, when computed, mean CLIP-T, with std as error bars.

    ID-Sim's axis always spans at least 0..1 and CLIP-T's starts at 0, so bars of equal (or zero) length read
    as such; a panel whose bars are all equal says so in a note.
    """
    plt = _pyplot()
    groups = report["aggregates"]["per_prompt"]
    prompts = list(groups)
    panels = [("id_sim", "ID-Sim (no face = 0)", (0.0, 1.0))]
    if any(groups[p]["clip_t"] is not None for p in prompts):
        panels.append(("clip_t", "CLIP-T (x100)", (0.0, 1.0)))
    height = 1.2 + 0.32 * max(len(prompts), 3)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels) + 3, height), sharey=True, squeeze=False
    )
    labels = [_shorten(p, 48) for p in prompts]
    no_face = report["aggregates"]["overall"]["no_face_rate"] == 1
    for ax, (key, title, span) in zip(axes[0], panels):
        means = [groups[p][key]["mean"] if groups[p][key] else 0.0 for p in prompts]
        stds = [groups[p][key]["std"] if groups[p][key] else 0.0 for p in prompts]
        ax.barh(range(len(prompts)), means, xerr=stds, color="#4c72b0" if key == "id_sim" else "#dd8452")
        ends = [m - d for m, d in zip(means, stds)] + [m + d for m, d in zip(means, stds)]
        ax.set_xlim(*_axis_limits(ends, span))
        ax.set_title(title)
        ax.set_yticks(range(len(prompts)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        if len(set(means)) == 1 and not any(stds):
            why = " (no face was detected in any image)" if key == "id_sim" and no_face else ""
            _note(ax, f"every image scores {means[0]:.2f}{why}")
    fig.suptitle(f"Per prompt (recogniser: {report['recognizer']})", fontsize=9)
    return _save_figure(fig, plt, path)


def plot_id_sim_vs_clip_t(scores: Sequence[ImageScore], path: str | os.PathLike) -> Path:
    """Scatter of ID-Sim against CLIP-T, one point per image; images without a face are drawn as crosses.

    The ID-Sim axis spans at least 0..1; when every image has the same ID-Sim, a note says so.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    with_face = [s for s in scores if s.face_detected and s.clip_t is not None]
    no_face = [s for s in scores if not s.face_detected and s.clip_t is not None]
    if with_face:
        ax.scatter([s.clip_t for s in with_face], [s.id_sim for s in with_face], s=14, alpha=0.7,
                   label="face detected")  # fmt: skip
    if no_face:
        ax.scatter([s.clip_t for s in no_face], [s.id_sim for s in no_face], s=18, marker="x", color="grey",
                   label="no face (ID-Sim = 0)")  # fmt: skip
    plotted = with_face + no_face
    ax.set_ylim(*_axis_limits([s.id_sim for s in plotted], (0.0, 1.0)))
    clip_t = [s.clip_t for s in plotted]
    if clip_t and max(clip_t) - min(clip_t) < 1:  # one value (or nearly): a readable span around it
        ax.set_xlim(min(clip_t) - 5, max(clip_t) + 5)
    id_sims = {round(s.id_sim, 4) for s in plotted}
    if len(id_sims) == 1:
        why = " (no face was detected in any image)" if not with_face else ""
        _note(ax, f"every image has ID-Sim {plotted[0].id_sim:.2f}{why}")
    ax.set_xlabel("CLIP-T (x100)")
    ax.set_ylabel("ID-Sim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save_figure(fig, plt, path)


def _axis_limits(values: Sequence[float], span: tuple[float, float]) -> tuple[float, float]:
    """Axis limits covering ``values`` and at least ``span``, with a 5 % margin."""
    low, high = min([span[0], *values]), max([span[1], *values])
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def _note(ax, text: str) -> None:
    """A boxed note in the middle of ``ax`` (e.g. why every bar has the same length)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#999999"})  # fmt: skip


def _save_figure(fig, plt, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path``, whole or not at all, and close it."""
    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_file(path, "wb") as handle:
            fig.savefig(handle, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------------------------------------------- contact sheet


def make_contact_sheet(
    scores: Sequence[ImageScore], max_identities: int = 16, max_images: int = 8, cell: int = 160
) -> Image.Image:
    """One row per identity: its reference face, then its first generations (manifest order), each captioned.

    Args:
        scores: per-image scores (their ``reference`` and ``image`` paths are opened).
        max_identities: rows at most.
        max_images: generations per row at most.
        cell: side of each square cell in pixels (images are padded, not cropped).
    """
    groups = list(group_by(scores, lambda s: s.identity).items())[:max_identities]
    columns = 1 + min(max_images, max(len(group) for _, group in groups))
    tiles = []
    for name, group in groups:
        row = [_tile(group[0].reference, f"{name} (reference)", cell)]
        row += [_tile(s.image, _caption(s), cell) for s in group[:max_images]]
        row += [Image.new("RGB", (cell, cell), "white")] * (columns - len(row))
        tiles += row
    return make_grid(tiles, cols=columns)


def _caption(score: ImageScore) -> str:
    """What a generated image's tile says, e.g. ``ID-Sim 0.98 · CLIP-T 31.2`` or ``no face · CLIP-T 22.0``."""
    parts = [f"ID-Sim {score.id_sim:.2f}" if score.face_detected else "no face"]
    if score.clip_t is not None:
        parts.append(f"CLIP-T {score.clip_t:.1f}")
    return " · ".join(parts)


def _caption_font():
    """A scalable font with real spaces (Pillow's bundled one); the bitmap default where FreeType is missing."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=CAPTION_FONT_SIZE)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


CAPTION_FONT_SIZE = 12


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to at most ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _tile(path: str, caption: str, cell: int) -> Image.Image:
    label_height = 17
    try:
        with Image.open(path) as image:
            picture = ImageOps.pad(image.convert("RGB"), (cell, cell - label_height), color="white")
    except OSError:
        picture = Image.new("RGB", (cell, cell - label_height), "lightgrey")
    tile = Image.new("RGB", (cell, cell), "white")
    tile.paste(picture, (0, 0))
    draw, font = ImageDraw.Draw(tile), _caption_font()
    draw.text((3, cell - label_height + 2), _fit(draw, caption, font, cell - 6), fill="black", font=font)
    return tile
