"""The demo's logic, free of any web framework: choose a model, read the photo, prepare the face, generate and
save images.

:mod:`faceclip.demo.app` wires these functions to Gradio widgets. Everything a user can get wrong raises
:class:`DemoError`, whose message is meant to be shown in the page as is (no file paths, no tracebacks).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image, ImageDraw, UnidentifiedImageError

from faceclip.generation import (
    MAX_SEED,
    FaceReference,
    GenerationSettings,
    OutputFolder,
    SettingsError,
    consecutive_seeds,
)
from faceclip.generation import (
    generate_images as generate,
)

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.model_family import GenerationDefaults

logger = logging.getLogger(__name__)
MAX_PHOTO_PIXELS = 40_000_000
"""Photos with more pixels than this (e.g. 8000 x 5000) are refused before they are decoded."""

SIZES: dict[str, tuple[int, int]] = {
    "Portrait 864×1152": (864, 1152),
    "Square 1024×1024": (1024, 1024),
    "Landscape 1152×864": (1152, 864),
    "Tall 768×1344": (768, 1344),
    "Quick draft 512×512": (512, 512),
}
"""Output sizes offered in the page, ``label -> (width, height)``, for every family: SDXL works best near one
megapixel, and each side is a multiple of 16, as FaceT5-FLUX needs (SDXL needs 8)."""

EXAMPLE_PROMPTS: tuple[str, ...] = (
    "a portrait photo of a person in a garden, soft morning light, 85mm lens",
    "a person as an astronaut on the moon, cinematic lighting, highly detailed",
    "an oil painting of a person in a renaissance costume, museum lighting",
    "a person walking down a rainy neon-lit street at night, film grain",
    "a watercolor sketch of a person reading in a cozy cafe",
)


class DemoError(Exception):
    """A problem the user can fix (bad upload, no face, bad setting); the message is shown in the page."""


class DemoPipeline(Protocol):
    """What the demo needs from a pipeline (satisfied by the pipelines of both families).

    A stand-in pipeline of no registered family may carry ``generation_defaults`` (a
    :class:`~faceclip.model_family.GenerationDefaults`), as :meth:`GenerationSettings.resolve` reads it.
    """

    face_analyzer: Any  # a faceclip.face.FaceAnalyzer
    default_size: tuple[int, int]  # (height, width) when the form gives none

    def prepare_face(self, face_image: Any, face_index: int | None = None) -> Any: ...

    def __call__(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class FacePreview:
    """The result of reading an uploaded photo.

    Attributes:
        face: the pipeline's ``PreparedFace``; pass it back to :func:`generate_images`.
        annotated: the photo (downscaled for display) with every face's box, the chosen one in green with its
            landmarks.
        aligned: the aligned face crop the encoder will see.
        message: a one-line description for the page.
        num_faces: how many faces the photo shows.
        face_index: the face used, in detection order (largest first).
    """

    face: Any
    annotated: Image.Image
    aligned: Image.Image
    message: str
    num_faces: int = 1
    face_index: int = 0


def choose_face(preview: FacePreview, path: str | os.PathLike, file_name: str | None = None) -> FaceReference:
    """The face of ``preview`` with the facts about its photo file (``path``) that the metadata records.

    ``file_name`` is the name the photo was uploaded under (the server's copy has another).
    """
    from faceclip.outputs import file_sha256

    return FaceReference(preview.face, file_name or Path(path).name, file_sha256(path), preview.face_index)


@dataclass(frozen=True)
class FormValues:
    """What the page's form sends, as the widgets give it (numbers may be floats or ``None``)."""

    prompt: str
    negative_prompt: str = ""
    num_images: int = 2
    steps: int = 30
    guidance_scale: float = 5.0
    seed: int = 0
    width: int = 864
    height: int = 1152
    true_cfg_scale: float | None = None

    def to_settings(
        self, max_images: int = 4, max_steps: int = 100, size_multiple: int = 8
    ) -> GenerationSettings:
        """The generation settings of this form (one image at a time, seeds ``seed, seed + 1, ...``).

        Args:
            max_images, max_steps: the form's limits.
            size_multiple: width and height must be multiples of this (the family's: 16 for FaceT5-FLUX).

        Raises:
            DemoError: a value is out of the form's range, in words for the page.
        """
        prompt = (self.prompt or "").strip()
        if not prompt:
            raise DemoError("Type a prompt first, e.g. “a portrait photo of a person in a garden”.")
        limits = {"number of images": (self.num_images, 1, max_images), "steps": (self.steps, 1, max_steps),
                  "seed": (self.seed, 0, MAX_SEED)}  # fmt: skip
        ints = {name: _whole_number(name, *limit) for name, limit in limits.items()}
        if self.guidance_scale is None or not 0.0 <= float(self.guidance_scale) <= 30.0:
            raise DemoError(f"The guidance scale must be between 0 and 30; got {self.guidance_scale}.")
        if self.true_cfg_scale is not None and not 0.0 <= float(self.true_cfg_scale) <= 30.0:
            raise DemoError(f"The true CFG scale must be between 0 and 30; got {self.true_cfg_scale}.")
        for name, value in (("width", self.width), ("height", self.height)):
            if value is None or int(value) % size_multiple or not 64 <= int(value) <= 2048:
                raise DemoError(
                    f"The image {name} must be a multiple of {size_multiple} from 64 to 2048 for this model; "
                    f"got {value}."
                )
        try:
            seeds = consecutive_seeds(ints["seed"], ints["number of images"])
        except SettingsError:
            last = MAX_SEED - ints["number of images"] + 1
            raise DemoError(
                f"With {ints['number of images']} images the seed can be at most {last}."
            ) from None
        return GenerationSettings(
            prompts=(prompt,), seeds=seeds, negative_prompt=(self.negative_prompt or "").strip(),
            num_inference_steps=ints["steps"], guidance_scale=float(self.guidance_scale),
            true_cfg_scale=None if self.true_cfg_scale is None else float(self.true_cfg_scale),
            height=int(self.height), width=int(self.width), batch_size=1,
        ).validate()  # fmt: skip


def family_defaults(pipe: DemoPipeline) -> GenerationDefaults:
    """The generation defaults of ``pipe``'s family (:func:`faceclip.registry.family_of`), or a stand-in
    pipeline's ``generation_defaults``."""
    defaults = getattr(pipe, "generation_defaults", None)
    if defaults is None:
        from faceclip.registry import family_of

        defaults = family_of(pipe).defaults
    return defaults


def settings_for(
    pipe: DemoPipeline, form: FormValues, max_images: int = 4, max_steps: int = 100
) -> GenerationSettings:
    """:meth:`FormValues.to_settings` for ``pipe``'s family: sizes on its grid, and true CFG only where the
    family has it (the page hides that slider for the others, but still sends its value).

    Raises:
        DemoError: a value is out of range for the form or for the family.
    """
    defaults = family_defaults(pipe)
    if defaults.true_cfg_scale is None:
        form = dataclasses.replace(form, true_cfg_scale=None)
    return form.to_settings(max_images, max_steps, size_multiple=defaults.size_multiple)


def uses_distilled_guidance(defaults: GenerationDefaults) -> bool:
    """True for families whose ``guidance_scale`` is a distilled-guidance input beside true CFG (FaceT5-FLUX,
    as in diffusers' ``FluxPipeline``); False where it is classifier-free guidance (FaceCLIP-SDXL)."""
    return defaults.true_cfg_scale is not None


def _whole_number(name: str, value, low: int, high: int) -> int:
    if value is None or not float(value).is_integer() or not low <= value <= high:
        raise DemoError(f"The {name} must be a whole number from {low} to {high}; got {value}.")
    return int(value)


def size_from_label(label: str) -> tuple[int, int]:
    """``"Portrait 864×1152"`` (a key of :data:`SIZES`) or ``"864x1152"`` -> ``(width, height)``."""
    if label in SIZES:
        return SIZES[label]
    try:
        width, height = (int(part) for part in str(label).lower().replace("×", "x").split()[-1].split("x"))
    except ValueError:
        raise DemoError(f"Unknown image size {label!r}; pick one of: {', '.join(SIZES)}.") from None
    return width, height


def size_choices(width: int, height: int) -> tuple[list[str], str]:
    """The size labels to offer and the label of ``width`` x ``height``: the :data:`SIZES`, plus
    ``"Custom WxH"`` when it is none of them (a tiny model's small default size)."""
    labels = list(SIZES)
    label = next(
        (name for name, size in SIZES.items() if size == (width, height)), f"Custom {width}×{height}"
    )
    if label not in labels:
        labels.append(label)
    return labels, label


def read_photo(path: str | os.PathLike, max_pixels: int = MAX_PHOTO_PIXELS) -> Image.Image:
    """Open an uploaded photo as RGB (EXIF orientation applied), with messages a user understands.

    Raises:
        DemoError: the file is not an image, is damaged, or has more than ``max_pixels`` pixels.
    """
    from faceclip.face import ImageLoadError, load_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:  # reads the header only: size is known before any decoding
                width, height = header.size
    except Image.DecompressionBombError:  # Pillow refuses to even open it: far beyond our own limit
        raise DemoError(_too_large(max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise DemoError(
            "This file is not an image we can read. Upload a photo in JPEG, PNG or WebP format."
        ) from None
    if width * height > max_pixels:
        raise DemoError(_too_large(max_pixels, f" ({width}×{height} pixels)"))
    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageLoadError:
        raise DemoError(
            "This image file is damaged or truncated. Try saving it again or use another photo."
        ) from None


def _too_large(max_pixels: int, size: str = "") -> str:
    return (
        f"This photo is too large{size}. "
        f"Use one under {max_pixels / 1e6:.0f} megapixels, e.g. scaled down to 2000 pixels wide."
    )


def preview_face(
    pipe: DemoPipeline, photo: Image.Image, face_index: int | None = None, display_size: int = 768
) -> FacePreview:
    """Detect and align a face in ``photo`` with the pipeline's own face analyzer.

    Args:
        pipe: the loaded pipeline.
        photo: an RGB photo, e.g. from :func:`read_photo`.
        face_index: which face when there are several, largest first; ``None`` or out of range: the largest.
        display_size: the longer side of the annotated preview.

    Raises:
        DemoError: no face was found.
    """
    from faceclip.face import NoFaceFoundError

    no_face = DemoError(
        "No face found in this photo. Use a clear, well-lit photo where one face is large and "
        "looking roughly at the camera."
    )
    faces = pipe.face_analyzer.detect(photo)
    if not faces:
        raise no_face
    index = face_index if face_index is not None and 0 <= face_index < len(faces) else 0
    try:
        face = pipe.prepare_face(photo, face_index=index)
    except NoFaceFoundError:
        raise no_face from None
    others = [other for i, other in enumerate(faces) if i != index]
    annotated = draw_detection(photo, face.detection, display_size, others=others)
    if len(faces) == 1:
        message = f"Face found (detector confidence {float(face.detection.score):.0%}). This aligned crop will be used."
    else:
        message = (
            f"{len(faces)} faces found; using face {index + 1} (green box; faces are numbered largest first). "
            "Pick another one under “Face”."
        )
    return FacePreview(face, annotated, face.image, message, num_faces=len(faces), face_index=index)


def draw_detection(
    photo: Image.Image, detection: Any, display_size: int = 768, others: Sequence[Any] = ()
) -> Image.Image:
    """A copy of ``photo`` scaled to fit ``display_size``: ``detection``'s box and 5 landmarks in colour, the
    boxes of ``others`` (the faces not used) in grey."""
    scale = min(1.0, display_size / max(photo.size))
    canvas = photo.convert("RGB").resize(
        (max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 200))
    for face, colour in [*((other, (200, 200, 200)) for other in others), (detection, (40, 220, 90))]:
        draw.rectangle(tuple(float(v) * scale for v in face.box), outline=colour, width=width)
    radius = width * 1.5
    for x, y in detection.landmarks:
        cx, cy = float(x) * scale, float(y) * scale
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(255, 200, 0))
    return canvas


ProgressCallback = Callable[[float, str], None]


def generate_images(
    pipe: DemoPipeline,
    face: FaceReference | Any,
    settings: GenerationSettings,
    output_dir: str | os.PathLike,
    *,
    model_name: str = "",
    on_progress: ProgressCallback | None = None,
) -> Iterator[Path]:
    """Generate the images of ``settings`` one by one with :func:`faceclip.generation.generate_images`, and
    save each in ``output_dir`` as soon as it is made (names as everywhere: ``p000_seed<seed>.png``, with a
    ``-2``, ... suffix when an earlier request took the name; nothing is replaced).

    Args:
        pipe: the loaded pipeline.
        face: a :class:`~faceclip.generation.FaceReference` (from :func:`choose_face`), or the bare prepared
            face (``FacePreview.face``; then the photo is not recorded in the metadata).
        settings: from :meth:`FormValues.to_settings`.
        output_dir: where the PNG files go (created if missing).
        model_name: recorded in the metadata.
        on_progress: called with ``(fraction in [0, 1], description)`` after every denoising step.

    Yields:
        The path of each saved PNG.
    """
    reference = face if isinstance(face, FaceReference) else FaceReference(face)
    folder = OutputFolder(output_dir)
    steps, count = settings.num_inference_steps, settings.num_images

    def on_step(done: int, total: int) -> None:
        if on_progress is not None:
            image, step = divmod(done - 1, steps)
            on_progress(done / total, f"Image {image + 1}/{count}, step {step + 1}/{steps}")

    started = time.perf_counter()
    for generated in generate(pipe, reference, settings, model=model_name, on_step=on_step, progress=False):
        logger.info("image seed %d took %.1f s", generated.seed, time.perf_counter() - started)
        started = time.perf_counter()
        yield folder.save(generated)
