"""The generation service: a face, prompts and seeds in; images with their metadata, and files, out.

``faceclip generate``, the demo and ``faceclip eval run`` all generate through :func:`generate_images` and
save through :class:`OutputFolder`, so they share one set of defaults (the model family's, see
:meth:`GenerationSettings.resolve`), one seed range (:data:`MAX_SEED`, one seed per image), one file naming
scheme (:func:`image_file_name`) and one metadata format (:func:`faceclip.outputs.generation_metadata`).

    >>> pipe = load_pipeline("tiny-random")
    >>> face = FaceReference.from_file("photo.jpg")
    >>> settings = GenerationSettings(prompts=("a portrait photo",), seeds=(7, 8)).resolve(pipe)
    >>> folder = OutputFolder("outputs", inputs=[face.path])
    >>> for image in generate_images(pipe, face, settings, model="tiny-random"):
    ...     folder.save(image)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from faceclip.outputs import file_sha256, generation_metadata, output_folder_problem, save_png

MAX_SEED = 2**53 - 1
"""Largest seed: every seed is a whole number from 0 to 2**53 - 1, the integers a JSON reader and a browser
hold exactly, so a seed read back from PNG metadata or typed into the demo is the seed that was used. Image ``k``
of a run started at seed ``s`` uses ``s + k``; a run whose last seed would pass this is refused (no wrapping)."""

MAX_SIDE = 4096
"""Largest image side in pixels: 4096 x 4096 is 16 megapixels, four times the largest size SDXL was trained for;
bigger sizes fail allocating memory after the model has loaded, so they are refused up front."""

StepCallback = Callable[[int, int], None]
"""``on_step(done, total)``: denoising steps finished so far in the whole request, and how many there are."""


class SettingsError(ValueError):
    """A generation setting is out of range; the message says the allowed values.

    Attributes:
        field: the :class:`GenerationSettings` field at fault (``"seeds"``, ``"num_inference_steps"``, ...), so
            an app can name its own option for it.
        reason: what is wrong with it (``"must be ..."``); the message is ``"<field> <reason>"``.
    """

    def __init__(self, reason: str, field: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate: every prompt with every seed. ``None`` fields take the model's defaults.

    Attributes:
        prompts: one or more prompts.
        seeds: one seed per image of each prompt (:func:`consecutive_seeds` makes ``s, s+1, ...``).
        negative_prompt: ``None`` for the family's negative prompt; ``""`` for none.
        num_inference_steps, guidance_scale: denoising steps and the pipeline's ``guidance_scale``
            (classifier-free guidance for FaceCLIP-SDXL, the distilled-guidance input for FaceT5-FLUX).
        true_cfg_scale: true classifier-free guidance weight, for families that have it (FaceT5-FLUX).
        height, width: output size in pixels (multiples of 8, of 16 for FaceT5-FLUX); ``None`` for the
            pipeline's default size, which follows the denoiser's native size (1152 x 864 for the released
            models, 72 x 56 for tiny FaceCLIP-SDXL components).
        batch_size: images of one prompt denoised together; the images do not depend on it.
    """

    prompts: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 4

    def validate(self) -> GenerationSettings:
        """Return a cleaned copy (prompts stripped, tuples) or raise :class:`SettingsError`."""
        prompts = tuple(p.strip() for p in self.prompts if p and p.strip())
        if not prompts:
            raise SettingsError("must hold at least one prompt that is not blank.", "prompts")
        seeds = tuple(self.seeds)
        if not seeds:
            raise SettingsError("must hold at least one seed.", "seeds")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise SettingsError(f"must be whole numbers from 0 to {MAX_SEED}; got {seed!r}.", "seeds")
        _check_int("num_inference_steps", self.num_inference_steps, 1, 1000)
        _check_int("batch_size", self.batch_size, 1, 1024)
        for name in ("height", "width"):
            value = getattr(self, name)
            _check_int(name, value, 8, MAX_SIDE)
            if value is not None and value % 8:
                raise SettingsError(f"must be a multiple of 8; got {value}.", name)
        for name in ("guidance_scale", "true_cfg_scale"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 100.0
            ):
                raise SettingsError(f"must be a number from 0 to 100; got {value!r}.", name)
        return dataclasses.replace(self, prompts=prompts, seeds=seeds)

    def resolve(self, pipe: Any) -> GenerationSettings:
        """A validated copy with every ``None`` replaced by the model's default (size from the denoiser).

        Args:
            pipe: the loaded pipeline: its ``default_size`` (from the denoiser) and its family's defaults
                (:func:`faceclip.registry.family_of`; a stand-in pipeline may carry ``generation_defaults``).
        """
        settings = self.validate()
        defaults = _family_defaults(pipe)
        if defaults is None:  # a stand-in pipeline of no family: usable when nothing is left to fill in
            names = ("negative_prompt", "num_inference_steps", "guidance_scale", "height", "width")
            if all(getattr(settings, name) is not None for name in names):
                return settings
            from faceclip.registry import family_of

            family_of(pipe)  # raises, naming the pipeline
        _check_family_settings(settings, defaults)
        height, width = pipe.default_size
        true_cfg = _default(settings.true_cfg_scale, defaults.true_cfg_scale)
        return dataclasses.replace(
            settings,
            negative_prompt=_default(settings.negative_prompt, defaults.negative_prompt),
            num_inference_steps=_default(settings.num_inference_steps, defaults.num_inference_steps),
            guidance_scale=float(_default(settings.guidance_scale, defaults.guidance_scale)),
            true_cfg_scale=None if true_cfg is None else float(true_cfg),
            height=_default(settings.height, height),
            width=_default(settings.width, width),
        )

    @property
    def num_images(self) -> int:
        """Images in the whole request: prompts x seeds."""
        return len(self.prompts) * len(self.seeds)


def _default(value, default):
    return default if value is None else value


def _family_defaults(pipe: Any):
    """The generation defaults of ``pipe``'s family (or of a stand-in's ``generation_defaults``), or ``None``."""
    from faceclip.registry import ModelArgumentError, family_of

    defaults = getattr(pipe, "generation_defaults", None)
    if defaults is not None:
        return defaults
    try:
        return family_of(pipe).defaults
    except ModelArgumentError:
        return None


def _check_family_settings(settings: GenerationSettings, defaults: Any) -> None:
    """Settings the family cannot take: sizes off its grid, true CFG where it has none."""
    step = defaults.size_multiple
    for name in ("height", "width"):
        value = getattr(settings, name)
        if value is not None and value % step:
            raise SettingsError(f"must be a multiple of {step} for this model; got {value}.", name)
    if settings.true_cfg_scale is not None and defaults.true_cfg_scale is None:
        raise SettingsError(
            "applies only to models with true classifier-free guidance (FaceT5-FLUX); this model's guidance "
            "is guidance_scale.",
            "true_cfg_scale",
        )


def _check_int(field: str, value, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"must be a whole number from {low} to {high}; got {value!r}.", field)


def consecutive_seeds(first: int, count: int) -> tuple[int, ...]:
    """``(first, first + 1, ..., first + count - 1)``, refused when it would pass :data:`MAX_SEED`."""
    if count < 1:
        raise SettingsError(f"must be at least 1; got {count}.", "num_images")
    last = MAX_SEED - (count - 1)
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= last:
        raise SettingsError(
            f"must be from 0 to {last} for {count} image(s) (image k uses seed + k, at most {MAX_SEED}); "
            f"got {first!r}.",
            "seeds",
        )
    return tuple(range(first, first + count))


RANDOM_SEEDS = 2**32
"""Seeds drawn when the user gives none are below this: short enough to read and type back."""


def random_seed() -> int:
    """A fresh seed in ``[0, RANDOM_SEEDS)`` from the operating system's randomness."""
    import secrets

    return secrets.randbelow(RANDOM_SEEDS)


@dataclass(frozen=True)
class FaceReference:
    """A prepared face and the facts about its photo that the metadata records (so an image can be remade).

    Attributes:
        face: the aligned face (:class:`faceclip.pipelines.PreparedFace`).
        file_name: the photo's file name (``face_file`` in the metadata).
        sha256: SHA-256 of the photo file (``face_sha256``).
        face_index: which face of the photo, largest first (``face_index``).
        path: the photo on disk, if it is one (outputs are never written over it).
    """

    face: Any
    file_name: str | None = None
    sha256: str | None = None
    face_index: int | None = None
    path: Path | None = None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, analyzer: Any = None, face_index: int | None = None
    ) -> FaceReference:
        """Read, detect and align the face in the photo at ``path``.

        Raises:
            faceclip.face.ImageLoadError, faceclip.face.NoFaceFoundError: as
                :func:`faceclip.pipelines.prepare_face`; OSError when the file cannot be read.
        """
        from faceclip.face.image_io import ImageLoadError, check_regular_file
        from faceclip.pipelines.face_input import prepare_face

        path = Path(path)
        if not path.exists():
            raise ImageLoadError(f"Image file not found: '{path}'. Check the path.")
        check_regular_file(path, "a face photo")  # hashing a pipe or /dev/zero would never end
        sha256 = file_sha256(path)
        face = prepare_face(os.fspath(path), analyzer=analyzer, face_index=face_index)
        return cls(face, path.name, sha256, face_index, path)


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image and everything it was made with.

    Attributes:
        image: the image (``settings.width`` x ``settings.height``).
        prompt_index: which of ``settings.prompts`` it shows (0-based).
        seed: its seed (the image can be remade alone from it).
        metadata: :func:`faceclip.outputs.generation_metadata` plus any extra keys the caller gave.
    """

    image: Image.Image
    prompt_index: int
    seed: int
    metadata: dict[str, object]


def image_file_name(prompt_index: int, seed: int) -> str:
    """The one naming scheme of generated images: ``p<prompt, 3 digits>_seed<seed>.png``."""
    return f"p{prompt_index:03d}_seed{seed}.png"


def generate_images(
    pipe: Any,
    face: FaceReference | None,
    settings: GenerationSettings,
    *,
    model: str = "",
    extra_metadata: dict[str, object] | None = None,
    on_step: StepCallback | None = None,
    progress: bool = True,
) -> Iterator[GeneratedImage]:
    """Generate every prompt of ``settings`` with every seed, batch by batch; yield each image when made.

    Each image gets its own ``torch.Generator`` seeded with its seed, so an image depends on (face, prompt,
    seed, settings) only, never on the batch size or on the other prompts.

    Args:
        pipe: a loaded FaceCLIP pipeline, already on its device.
        face: the reference face, or ``None`` for images without identity (the encoder's no-face path,
            as used for the negative prompt; evaluation's CLIP-I baselines).
        settings: what to generate; ``None`` fields take the model's defaults (:meth:`GenerationSettings.resolve`).
        model: the model argument, recorded in the metadata.
        extra_metadata: more metadata keys (e.g. the evaluation identity).
        on_step: called after every denoising step with ``(done, total)`` steps of the whole request.
        progress: show an image progress bar on stderr.
    """
    settings = settings.resolve(pipe)
    total_steps = settings.num_images * settings.num_inference_steps
    done = 0
    with tqdm(total=settings.num_images, desc="images", unit="image", disable=not progress) as bar:
        for prompt_index, prompt in enumerate(settings.prompts):
            for seeds in _batches(settings.seeds, settings.batch_size):
                callback = _step_counter(on_step, done, len(seeds), total_steps)
                images = _denoise(pipe, face, prompt, seeds, settings, callback)
                done += len(seeds) * settings.num_inference_steps
                for seed, image in zip(seeds, images, strict=True):
                    metadata = image_metadata(pipe, face, prompt, seed, settings, model) | (
                        extra_metadata or {}
                    )
                    bar.update()
                    yield GeneratedImage(image, prompt_index, seed, metadata)


def _batches(seeds: Sequence[int], size: int) -> Iterator[tuple[int, ...]]:
    for start in range(0, len(seeds), size):
        yield tuple(seeds[start : start + size])


def _step_counter(on_step: StepCallback | None, done: int, batch: int, total: int):
    """A diffusers ``callback_on_step_end`` for a batch of ``batch`` images that reports
    ``(image-steps done in the request, total)`` after each step, or ``None`` without ``on_step``."""
    if on_step is None:
        return None

    def callback(_pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        on_step(min(done + (step + 1) * batch, total), total)
        return callback_kwargs

    return callback


def _denoise(pipe, face, prompt, seeds, settings, callback) -> list[Image.Image]:
    """One batch: ``len(seeds)`` images of ``prompt``; returns PIL images in seed order."""
    conditioning = _conditioning(pipe, face, prompt)
    result = pipe(
        **conditioning,
        negative_prompt=settings.negative_prompt,
        num_images_per_prompt=len(seeds),
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        **({"true_cfg_scale": settings.true_cfg_scale} if settings.true_cfg_scale is not None else {}),
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        output_type="pil",
        **({"callback_on_step_end": callback} if callback is not None else {}),
    )
    return list(result.images)


def _conditioning(pipe, face: FaceReference | None, prompt: str) -> dict:
    """The pipeline's face-and-prompt inputs; without a face, embeddings from the encoder's no-face path."""
    if face is not None:
        return {"face_image": face.face, "prompt": prompt}
    embeds, pooled = pipe.encode_without_face([prompt])
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def image_metadata(
    pipe: Any, face: FaceReference | None, prompt: str, seed: int, settings: GenerationSettings, model: str
) -> dict[str, object]:
    """The metadata of one image (:func:`faceclip.outputs.generation_metadata`) under resolved ``settings``."""
    from faceclip.registry import ModelArgumentError, family_of

    try:
        family = family_of(pipe).name
    except ModelArgumentError:  # a stand-in pipeline (tests)
        family = None
    return generation_metadata(
        prompt=prompt, negative_prompt=settings.negative_prompt, seed=seed,
        steps=settings.num_inference_steps, guidance=settings.guidance_scale,
        true_cfg=settings.true_cfg_scale, family=family,
        height=settings.height, width=settings.width, model=model,
        face_file=face.file_name if face else None, face_sha256=face.sha256 if face else None,
        face_index=face.face_index if face else None,
        scheduler=getattr(pipe, "scheduler", None), dtype=getattr(pipe, "dtype", None),
    )  # fmt: skip


class OutputError(ValueError):
    """An output would be written over one of the command's inputs, or the folder cannot be written."""


class OutputFolder:
    """Where a run's files go. A file is never written over an input, and never over an earlier run's file
    unless ``overwrite``: a taken name becomes ``name-2.png``, ``name-3.png``, ... (claimed atomically, so two
    runs writing at once get different names too).

    Args:
        path: the folder: checked writable now, before anything slow starts; created with the first file.
        inputs: the run's input files (face photos, prompt files); writing over one is an error.
        overwrite: replace files already there (never an input).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        inputs: Iterable[str | os.PathLike | None] = (),
        overwrite: bool = False,
    ):
        self.path = Path(path)
        self.overwrite = overwrite
        self._inputs = {Path(p).resolve() for p in inputs if p is not None}
        problem = output_folder_problem(self.path)
        if problem:
            raise OutputError(problem)

    def check_names(self, names: Iterable[str]) -> None:
        """Refuse, before anything slow starts, a run that would write one of ``names`` over an input.

        Without ``overwrite`` no input can be written over (a taken name gets a suffix), so only the
        ``overwrite`` case is checked.
        """
        for name in names:
            target = self.path / name
            if self.overwrite and target.resolve() in self._inputs:
                raise OutputError(
                    f"refusing to write {target}: it is one of this run's inputs; choose another output folder."
                )

    def save(self, generated: GeneratedImage, name: str | None = None) -> Path:
        """Save ``generated`` as a PNG with its metadata (``name`` defaults to :func:`image_file_name`)."""
        name = name or image_file_name(generated.prompt_index, generated.seed)
        return self.save_png(generated.image, name, generated.metadata)

    def save_png(self, image: Image.Image, name: str, metadata: dict[str, object] | None = None) -> Path:
        """Save ``image`` as ``name`` (a path relative to the folder); returns the path actually written."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        self.check_names([name])
        return save_png(image, target, metadata, overwrite=self.overwrite)
