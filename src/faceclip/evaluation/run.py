"""Generating the evaluation grid (identities x prompts x seeds) with a FaceCLIP-SDXL pipeline.

Images are written as ``images/<identity>/p<prompt>_seed<seed>.png`` (PNG metadata holds the settings) and,
for CLIP-I, the same prompts and seeds without the identity as ``baselines/p<prompt>_seed<seed>.png``. The work
unit is a :class:`GridCell` (one identity and prompt, all seeds in one batch), so a grid splits cleanly across
processes (:func:`faceclip.evaluation.parallel.distributed_map`). Images already on disk are kept, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from faceclip.evaluation.manifest import ManifestEntry
from faceclip.face import ImageLoadError, NoFaceFoundError
from faceclip.outputs import save_png

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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
        overwrite: regenerate images that already exist.
        metadata: extra PNG metadata (e.g. the model name).
        progress: show a progress bar.

    Returns:
        One :class:`CellResult` per cell, in order.
    """
    out_dir = Path(out_dir)
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
            info = {
                **(metadata or {}),
                "prompt": cell.prompt,
                "seed": seed,
                "identity": cell.identity.name if cell.identity else None,
                "reference": str(cell.identity.reference) if cell.identity else None,
                **settings.pipeline_kwargs(),
            }
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
