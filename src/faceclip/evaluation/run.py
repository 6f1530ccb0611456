"""Generating the evaluation grid (identities x prompts x seeds) with a FaceCLIP-SDXL pipeline.

Images are written as ``images/<identity>/p<prompt>_seed<seed>.png`` (PNG metadata holds the settings) and,
for CLIP-I, the same prompts and seeds without the identity as ``baselines/p<prompt>_seed<seed>.png``. The work
unit is a :class:`GridCell` (one identity and prompt, all seeds in one batch), so a grid splits cleanly across
processes (:func:`faceclip.evaluation.parallel.distributed_map`). Images already on disk are kept when their
metadata shows they were made with the same settings (model, prompt, seed, reference photo, steps, guidance, size,
negative prompt...), so an interrupted run resumes where it stopped; images made with other settings are refused
(:class:`StaleImagesError`) unless ``overwrite`` regenerates them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from faceclip import __version__
from faceclip.evaluation.manifest import ManifestEntry
from faceclip.face import ImageLoadError, NoFaceFoundError
from faceclip.outputs import file_sha256, read_png_metadata, save_png

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

UNCOMPARED_METADATA = ("reference", "faceclip_version")
"""Metadata not compared when deciding whether an image on disk can be kept: the reference's path may be spelled
differently from run to run (its content is compared through ``reference_sha256``), and a new version of this
package alone does not make an image stale."""

_FLAGS = {
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "height": "--height",
    "width": "--width",
    "negative_prompt": "--negative-prompt",
    "model": "--model",
    "dtype": "--dtype",
    "reference_sha256": "reference photo (SHA-256)",
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
        name = f"p{self.prompt_index:03d}_seed{seed}.png"
        if self.identity is None:
            return out_dir / "baselines" / name
        return out_dir / "images" / self.identity.name / name


@dataclass(frozen=True)
class GenerationSettings:
    """Pipeline arguments shared by every image of the grid (``None``: the pipeline's default)."""

    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None

    def pipeline_kwargs(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


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


def image_metadata(
    cell: GridCell,
    seed: int,
    settings: GenerationSettings,
    metadata: Mapping[str, object] | None = None,
    reference_sha256: str | None = None,
) -> dict:
    """The PNG metadata of the image of ``cell`` and ``seed``: everything it was made with."""
    return {
        **(metadata or {}),
        "prompt": cell.prompt,
        "seed": seed,
        "identity": cell.identity.name if cell.identity else None,
        "reference": str(cell.identity.reference) if cell.identity else None,
        "reference_sha256": reference_sha256,
        **settings.pipeline_kwargs(),
        "faceclip_version": __version__,
    }


def metadata_mismatch(stored: Mapping[str, object], expected: Mapping[str, object]) -> str | None:
    """How ``stored`` (an image's metadata) differs from ``expected`` (:func:`image_metadata`), or ``None``.

    Keys in :data:`UNCOMPARED_METADATA` are ignored; a key present on one side only (a setting left at the
    pipeline's default in one run and set in the other) is a difference.
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
    if key in metadata:
        return repr(metadata[key])
    return "the pipeline's default" if key in GenerationSettings.__dataclass_fields__ else "not recorded"


def find_stale_images(
    cells: Sequence[GridCell],
    out_dir: str | os.PathLike,
    settings: GenerationSettings = GenerationSettings(),
    metadata: Mapping[str, object] | None = None,
    hashes: dict[Path, str | None] | None = None,
) -> list[tuple[Path, str]]:
    """The images of ``cells`` already in ``out_dir`` that were made with other settings, and how they differ.

    Args:
        hashes: a cache of reference SHA-256s by path, filled as references are read.
    """
    out_dir = Path(out_dir)
    hashes = {} if hashes is None else hashes
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
            expected = image_metadata(cell, seed, settings, metadata, _reference_hash(cell, hashes))
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
    settings: GenerationSettings = GenerationSettings(),
    overwrite: bool = False,
    metadata: Mapping[str, object] | None = None,
    progress: bool = True,
) -> list[CellResult]:
    """Generate the images of ``cells`` with ``pipe`` (a :class:`~faceclip.pipelines.FaceCLIPStableDiffusionXLPipeline`).

    Each seed gets its own ``torch.Generator``, so an image depends only on (identity, prompt, seed), not on
    batching or on how the grid was split. A reference without a face fails its cells, not the run.

    Args:
        pipe: the pipeline, already on its device.
        cells: the work of this process.
        out_dir: the run folder.
        settings: steps, guidance, size and negative prompt.
        overwrite: regenerate images that already exist. Without it, images already there are kept when their
            metadata matches this run's (resume), and images made with other settings stop the run before
            anything is generated.
        metadata: extra PNG metadata (e.g. the model name and dtype), compared like the settings.
        progress: show a progress bar.

    Returns:
        One :class:`CellResult` per cell, in order.

    Raises:
        StaleImagesError: without ``overwrite``, some images already there were made with other settings.
    """
    out_dir = Path(out_dir)
    hashes: dict[Path, str | None] = {}
    if not overwrite:
        stale = find_stale_images(cells, out_dir, settings, metadata, hashes)
        if stale:
            raise StaleImagesError(stale, out_dir)
    faces: dict[Path, object] = {}
    results = []
    for cell in tqdm(cells, desc="generating", unit="cell", disable=not progress):
        paths = [cell.image_path(out_dir, seed) for seed in cell.seeds]
        todo = [(seed, path) for seed, path in zip(cell.seeds, paths) if overwrite or not path.is_file()]
        if not todo:
            results.append(CellResult(cell, paths))
            continue
        try:
            conditioning = _conditioning(pipe, cell, faces)
        except (NoFaceFoundError, ImageLoadError) as err:
            logger.warning("identity %s: %s", cell.identity.name, err)
            results.append(CellResult(cell, error=f"not generated: {err}"))
            continue
        generators = [torch.Generator().manual_seed(seed) for seed, _ in todo]
        images = pipe(
            **conditioning,
            num_images_per_prompt=len(todo),
            generator=generators,
            **settings.pipeline_kwargs(),
        ).images
        for (seed, path), image in zip(todo, images, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            info = image_metadata(cell, seed, settings, metadata, _reference_hash(cell, hashes))
            save_png(image, path, info)
        results.append(CellResult(cell, paths))
    return results


def _conditioning(pipe, cell: GridCell, faces: dict) -> dict:
    """Pipeline inputs of a cell: the prepared face and prompt, or no-identity embeddings for a baseline."""
    if cell.identity is None:
        # Without identity: the encoder's no-face path (black face, no id token), as for the negative prompt.
        no_face = torch.zeros(1, dtype=torch.bool, device=pipe.device)
        with torch.no_grad():
            out = pipe.faceclip_encoder(face_images=None, prompts=[cell.prompt], has_face=no_face)
        return {"prompt_embeds": out.prompt_embeds, "pooled_prompt_embeds": out.pooled_prompt_embeds}
    reference = cell.identity.reference
    if reference not in faces:
        try:
            faces[reference] = pipe.prepare_face(reference)
        except (NoFaceFoundError, ImageLoadError) as err:
            faces[reference] = err  # fail this identity's other cells without detecting again
    if isinstance(faces[reference], Exception):
        raise faces[reference]
    return {"face_image": faces[reference], "prompt": cell.prompt}
