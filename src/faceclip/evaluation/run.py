"""Generating the evaluation grid (identities x prompts x seeds) with a FaceCLIP pipeline.

Images are made by the library's generation service (:func:`faceclip.generation.generate_images`), with the
same defaults, seeds and metadata as ``faceclip generate``, and written as
``images/<identity>/p<prompt>_seed<seed>.png`` and, for CLIP-I, the same prompts and seeds without the identity
as ``baselines/p<prompt>_seed<seed>.png``. The work unit is a :class:`GridCell` (one identity and prompt, all
seeds in one batch), so a grid splits cleanly across processes
(:func:`faceclip.evaluation.parallel.distributed_map`). Images already on disk are kept when their metadata
shows they were made with the same settings (model, prompt, seed, reference photo, steps, guidance, size,
negative prompt, scheduler, dtype), so an interrupted run resumes where it stopped; images made with other
settings are refused (:func:`find_stale_images`, :class:`StaleImagesError`) unless ``overwrite`` regenerates
them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from faceclip.evaluation.manifest import ManifestEntry
from faceclip.face import ImageLoadError, NoFaceFoundError
from faceclip.generation import (
    FaceReference,
    GenerationSettings,
    OutputFolder,
    generate_images,
    image_file_name,
    image_metadata,
)
from faceclip.outputs import file_sha256, read_png_metadata

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

UNCOMPARED_METADATA = ("reference", "face_file", "faceclip_version")
"""Metadata not compared when deciding whether an image on disk can be kept: the reference's path and file name
may be spelled differently from run to run (its content is compared through ``face_sha256``), and a new version
of this package alone does not make an image stale."""

_FLAGS = {
    "steps": "--steps",
    "guidance": "--guidance-scale",
    "size": "--size",
    "negative_prompt": "--negative-prompt",
    "model": "--model",
    "dtype": "--dtype",
    "face_sha256": "reference photo (SHA-256)",
}


@dataclass(frozen=True)
class Identity:
    """One person of the benchmark: a name (the file stem) and a reference photo."""

    name: str
    reference: Path


@dataclass(frozen=True)
class GridCell:
    """One identity (``None`` for a baseline without identity) and one prompt, with all its seeds."""

    identity: Identity | None
    prompt_index: int
    prompt: str
    seeds: tuple[int, ...]

    def image_path(self, out_dir: Path, seed: int) -> Path:
        """Where the image of ``seed`` is written."""
        return out_dir / self.relative_path(seed)

    def relative_path(self, seed: int) -> Path:
        """The image of ``seed`` within the run folder."""
        name = image_file_name(self.prompt_index, seed)
        return Path("baselines", name) if self.identity is None else Path("images", self.identity.name, name)


@dataclass
class CellResult:
    """What became of a cell: the images written (or kept), or why none could be made."""

    cell: GridCell
    paths: list[Path] = field(default_factory=list)
    error: str | None = None


class StaleImagesError(ValueError):
    """Images already in the run folder were made with other settings than the ones asked for now.

    Attributes:
        stale: ``(path, why)`` for each such image.
    """

    def __init__(self, stale: Sequence[tuple[Path, str]], out_dir: str | os.PathLike):
        self.stale = list(stale)
        path, why = self.stale[0]
        super().__init__(
            f"--out: {len(self.stale)} image(s) already in '{out_dir}' were made with other settings than this "
            f"run, e.g. {path}: {why}. Pass --overwrite to regenerate every image, or choose another --out "
            "(images made with the same settings are kept, so an interrupted run resumes)."
        )


def cell_metadata(
    pipe, cell: GridCell, seed: int, settings: GenerationSettings, model: str, sha256: str | None
) -> dict:
    """The PNG metadata of the image of ``cell`` and ``seed``: :func:`faceclip.generation.image_metadata`
    (what ``faceclip generate`` records) plus the identity and its reference photo."""
    reference = cell.identity.reference if cell.identity else None
    face = FaceReference(None, reference.name, sha256, None, reference) if reference else None
    return {
        **image_metadata(pipe, face, cell.prompt, seed, settings, model),
        "identity": cell.identity.name if cell.identity else None,
        "reference": str(reference) if reference else None,
    }


def metadata_mismatch(stored: Mapping[str, object], expected: Mapping[str, object]) -> str | None:
    """How ``stored`` (an image's metadata) differs from ``expected`` (:func:`cell_metadata`), or ``None``.

    Keys in :data:`UNCOMPARED_METADATA` are ignored; a key present on one side only is a difference.
    """
    if not stored:
        return "it has no faceclip metadata (not made by `faceclip eval run`)"
    expected = json.loads(json.dumps(dict(expected), default=str))  # as save_png stores it
    keys = sorted((set(stored) | set(expected)) - set(UNCOMPARED_METADATA))
    differences = [
        f"{_FLAGS.get(key, key)} {_shown(stored, key)} (this run: {_shown(expected, key)})"
        for key in keys
        if stored.get(key, _MISSING) != expected.get(key, _MISSING)
    ]
    return "; ".join(differences) or None


_MISSING = object()


def _shown(metadata: Mapping[str, object], key: str) -> str:
    return repr(metadata[key]) if key in metadata else "not recorded"


def find_stale_images(
    pipe, cells: Sequence[GridCell], out_dir: str | os.PathLike, settings: GenerationSettings, model: str = ""
) -> list[tuple[Path, str]]:
    """The images of ``cells`` already in ``out_dir`` that were made with other settings, and how they differ.

    Args:
        pipe: the loaded pipeline (its defaults, scheduler and dtype are part of the settings).
        settings: the run's settings (``None`` fields: the model's defaults).
    """
    out_dir, settings = Path(out_dir), settings.resolve(pipe)
    hashes: dict[Path, str | None] = {}
    stale = []
    for cell in cells:
        for seed in cell.seeds:
            path = cell.image_path(out_dir, seed)
            if not path.is_file():
                continue
            try:
                stored = read_png_metadata(path)
            except (OSError, ValueError, SyntaxError):  # not a PNG, truncated, or its metadata is not JSON
                stale.append((path, "it cannot be read as a PNG"))
                continue
            expected = cell_metadata(pipe, cell, seed, settings, model, _reference_hash(cell, hashes))
            why = metadata_mismatch(stored, expected)
            if why is not None:
                stale.append((path, why))
    return stale


def _reference_hash(cell: GridCell, hashes: dict[Path, str | None]) -> str | None:
    if cell.identity is None:
        return None
    reference = cell.identity.reference
    if reference not in hashes:
        try:
            hashes[reference] = file_sha256(reference)
        except OSError:  # preparing its face fails too, and says why
            hashes[reference] = None
    return hashes[reference]


def find_identities(folder: str | os.PathLike) -> list[Identity]:
    """The identities of a benchmark folder: one reference photo per person, named by its file stem.

    Raises:
        FileNotFoundError: ``folder`` is missing or holds no image.
        ValueError: two photos share a stem (e.g. ``alice.jpg`` and ``alice.png``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--identities: '{folder}' is not a folder; pass a folder of reference face photos."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"--identities: '{folder}' holds no image ({', '.join(IMAGE_SUFFIXES)}); "
            "put one reference face photo per person in it."
        )
    names = [p.stem for p in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"--identities: several photos share the name(s) {', '.join(duplicates)}; keep one per person."
        )
    return [Identity(p.stem, p) for p in files]


def plan_grid(
    identities: Sequence[Identity], prompts: Sequence[str], seeds: Sequence[int], baselines: bool = False
) -> list[GridCell]:
    """The cells of the grid, identity-major; with ``baselines``, one extra cell per prompt without identity."""
    seeds = tuple(seeds)
    cells = [
        GridCell(identity, i, prompt, seeds) for identity in identities for i, prompt in enumerate(prompts)
    ]
    if baselines:
        cells += [GridCell(None, i, prompt, seeds) for i, prompt in enumerate(prompts)]
    return cells


def grid_manifest(cells: Sequence[GridCell], out_dir: str | os.PathLike) -> list[ManifestEntry]:
    """Manifest entries for the identity cells, numbered 1..N in grid order (identity, prompt, seed)."""
    out_dir = Path(out_dir)
    baselines = {cell.prompt_index: cell for cell in cells if cell.identity is None}
    entries = []
    for cell in (c for c in cells if c.identity is not None):
        baseline = baselines.get(cell.prompt_index)
        for seed in cell.seeds:
            entries.append(
                ManifestEntry(
                    line=len(entries) + 1,
                    image=cell.image_path(out_dir, seed),
                    reference=cell.identity.reference,
                    prompt=cell.prompt,
                    identity=cell.identity.name,
                    seed=seed,
                    baseline=baseline.image_path(out_dir, seed) if baseline is not None else None,
                )
            )
    return entries


def generate_cells(
    pipe,
    cells: Sequence[GridCell],
    out_dir: str | os.PathLike,
    settings: GenerationSettings,
    *,
    model: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> list[CellResult]:
    """Generate the images of ``cells`` that are not in ``out_dir`` yet (all of them with ``overwrite``).

    Call :func:`find_stale_images` on the whole grid first: images already there are taken as finished. Each
    seed gets its own generator, so an image depends only on (identity, prompt, seed), not on batching or on
    how the grid was split. A reference without a face fails its cells, not the run.

    Args:
        pipe: the pipeline, already on its device.
        cells: the work of this process.
        out_dir: the run folder.
        settings: steps, guidance, size, negative prompt and batch size (``None``: the model's defaults).
        model: the model argument, recorded in the metadata.
        overwrite: regenerate images that already exist.
        progress: show a progress bar.

    Returns:
        One :class:`CellResult` per cell, in order.
    """
    out_dir, settings = Path(out_dir), settings.resolve(pipe)
    folder = OutputFolder(out_dir, inputs=[c.identity.reference for c in cells if c.identity], overwrite=True)
    faces: dict[Path, FaceReference | Exception] = {}
    results = []
    for cell in tqdm(cells, desc="generating", unit="cell", disable=not progress):
        todo = tuple(seed for seed in cell.seeds if overwrite or not cell.image_path(out_dir, seed).is_file())
        paths = [cell.image_path(out_dir, seed) for seed in cell.seeds]
        if not todo:
            results.append(CellResult(cell, paths))
            continue
        face = _reference_face(pipe, cell, faces)
        if isinstance(face, Exception):
            logger.warning("identity %s: %s", cell.identity.name, face)
            results.append(CellResult(cell, error=f"not generated: {face}"))
            continue
        cell_settings = dataclasses.replace(settings, prompts=(cell.prompt,), seeds=todo)
        extra = {"identity": cell.identity.name if cell.identity else None,
                 "reference": str(cell.identity.reference) if cell.identity else None}  # fmt: skip
        for generated in generate_images(
            pipe, face, cell_settings, model=model, extra_metadata=extra, progress=False
        ):
            folder.save(generated, os.fspath(cell.relative_path(generated.seed)))
        results.append(CellResult(cell, paths))
    return results


def _reference_face(pipe, cell: GridCell, faces: dict) -> FaceReference | Exception | None:
    """The prepared reference of ``cell`` (``None`` for a baseline), or the error that stopped it; cached."""
    if cell.identity is None:
        return None
    reference = cell.identity.reference
    if reference not in faces:
        try:
            sha256 = file_sha256(reference)
            faces[reference] = FaceReference(
                pipe.prepare_face(reference), reference.name, sha256, None, reference
            )
        except (NoFaceFoundError, ImageLoadError, OSError) as err:
            faces[reference] = err  # fail this identity's other cells without detecting again
    return faces[reference]
