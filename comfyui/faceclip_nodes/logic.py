"""What the nodes do, as plain functions on ComfyUI's value types (no ComfyUI import needed).

ComfyUI's ``IMAGE`` is a (B, H, W, C) float tensor in [0, 1]; ``CONDITIONING`` is a list of
``[cond, extras]`` pairs; for SDXL ``cond`` is (B, 77, 2048) and ``extras`` holds ``pooled_output`` (B, 1280)
and the size and crop conditioning, as ComfyUI's own SDXL text-encode node sets them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import NodeInputError
from .model_folder import FOLDER_NAME, find_encoder

FACE_SIZE = 448
"""Side of the aligned face crop (the size the released encoder was trained on)."""

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16", "fp16")
SIZE_KEYS = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")
SDXL, FLUX = "faceclip-sdxl", "facet5-flux"
TINY_NAMES = {SDXL: "tiny-random", FLUX: "tiny-random-flux"}
"""Per family, the choice with random tiny weights (no files needed; for trying a workflow, the images are noise)."""
RELEASED_FILES = {
    SDXL: "face_clip_encoder.pt",
    FLUX: "face_t5_encoder.pt (with the released tokenizer/ folder)",
}


@dataclass
class LoadedEncoder:
    """The ``FACECLIP_ENCODER`` value passed between nodes: the encoder and where it runs."""

    encoder: torch.nn.Module = field(repr=False)
    name: str
    family: str
    device: torch.device
    dtype: torch.dtype
    negative_cache: dict = field(default_factory=dict)


def load_encoder(
    node: str, name: str, device: str = "auto", dtype: str = "auto", family: str = SDXL
) -> LoadedEncoder:
    """Load the ``family`` encoder picked in the ``encoder_name`` list onto ``device`` in ``dtype``.

    Raises:
        NodeInputError: an unknown device or dtype, a missing file, or weights that cannot be read.
    """
    from faceclip.registry import load_encoder as load

    torch_device, torch_dtype = _device_and_dtype(node, device, dtype)
    path = None
    if name == TINY_NAMES[family]:
        source = name
    else:
        path = find_encoder(name)
        if path is None:
            raise NodeInputError(
                node,
                "encoder_name",
                f"'{name}' is not in ComfyUI/models/{FOLDER_NAME}/. Put the released {RELEASED_FILES[family]}, "
                "or a folder written by 'faceclip convert', there and press refresh (R), or pick "
                f"{TINY_NAMES[family]} to try a workflow.",
            )
        source = str(path)
    try:
        encoder = load(source, family=family, torch_dtype=torch_dtype)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # unreadable or another family's
        raise NodeInputError(node, "encoder_name", f"cannot load '{name}': {err}") from err
    if family == FLUX:
        _attach_t5_tokenizer(node, encoder, name, path)
    encoder = encoder.to(torch_device).eval()
    return LoadedEncoder(encoder, name, family, torch_device, torch_dtype)


def _attach_t5_tokenizer(node: str, encoder, name: str, path: Path | None) -> None:
    """The FaceT5 encoder reads its prompt through T5's tokenizer, released beside the weights (model/tokenizer)."""
    if getattr(encoder, "t5_tokenizer", None) is not None:
        return
    if path is None:  # tiny-random-flux
        from faceclip.pipelines.flux.tiny import build_tiny_t5_tokenizer

        encoder.t5_tokenizer = build_tiny_t5_tokenizer()
        return
    candidates = ([path / "tokenizer"] if path.is_dir() else []) + [path.parent / "tokenizer"]
    found = next((folder for folder in candidates if folder.is_dir()), None)
    if found is None:
        raise NodeInputError(
            node,
            "encoder_name",
            f"no T5 tokenizer beside '{name}': copy the released model/tokenizer folder "
            f"to {path.parent / 'tokenizer'}.",
        )
    from transformers import AutoTokenizer

    encoder.t5_tokenizer = AutoTokenizer.from_pretrained(found)


def _device_and_dtype(node: str, device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    from faceclip.devices import check_device_exists, resolve_dtype

    if device not in DEVICES:
        raise NodeInputError(node, "device", f"'{device}' is not one of {', '.join(DEVICES)}.")
    if dtype not in DTYPES:
        raise NodeInputError(node, "dtype", f"'{dtype}' is not one of {', '.join(DTYPES)}.")
    torch_device = _comfy_device() if device == "auto" else torch.device(device)
    try:
        check_device_exists(torch_device)
    except ValueError:
        raise NodeInputError(
            node, "device", f"this machine has no {device} device; pick auto or cpu."
        ) from None
    return torch_device, resolve_dtype(dtype, torch_device)


def _comfy_device() -> torch.device:
    """ComfyUI's compute device when ComfyUI is there, else the available accelerator or the CPU."""
    try:
        import comfy.model_management as model_management

        return model_management.get_torch_device()
    except (ImportError, AttributeError):
        from faceclip.devices import resolve_device

        return resolve_device("auto")


def check_image(node: str, input_name: str, image: object) -> torch.Tensor:
    """``image`` as ComfyUI's (B, H, W, 3) float tensor in [0, 1] (an alpha channel is dropped).

    Raises:
        NodeInputError: not a tensor, not 4-D, no batch, not RGB(A), or values outside [0, 1].
    """
    if not isinstance(image, torch.Tensor):
        raise NodeInputError(
            node,
            input_name,
            f"expected an IMAGE tensor, got {type(image).__name__}; "
            "connect a Load Image node (or another IMAGE output).",
        )
    shape = tuple(image.shape)
    if image.dim() != 4 or shape[0] < 1 or shape[-1] not in (3, 4) or min(shape) < 1:
        raise NodeInputError(
            node,
            input_name,
            f"expected an IMAGE of shape [batch, height, width, 3], got "
            f"{list(shape)}; connect an IMAGE output (masks and latents are not images).",
        )
    if not image.is_floating_point():
        raise NodeInputError(node, input_name, f"expected float values in [0, 1], got {image.dtype}.")
    image = image[..., :3].float()
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise NodeInputError(
            node,
            input_name,
            "values must lie in [0, 1] (ComfyUI's IMAGE range); "
            "clamp or normalise the image before this node.",
        )
    return image


def align_faces(node: str, image: torch.Tensor, face_index: int, analyzer=None) -> tuple[torch.Tensor, int]:
    """Detect and align one face per photo of the batch.

    Args:
        image: (B, H, W, 3) photos in [0, 1].
        face_index: which face (largest first); -1 = the only face (an error when a photo shows several).
        analyzer: a ``faceclip.face.FaceAnalyzer`` (default: the offline one).

    Returns:
        The aligned faces (B, 448, 448, 3) in [0, 1] and the face index used.
    """
    from faceclip.face import NoFaceFoundError, to_tensor

    photos = check_image(node, "image", image)
    if not isinstance(face_index, int) or face_index < -1:
        raise NodeInputError(
            node, "face_index", f"{face_index!r} is not -1 (the only face) or a face number >= 0."
        )
    analyzer = analyzer or default_analyzer()
    faces, used = [], face_index
    for number, photo in enumerate(photos):
        pixels = (photo * 255).round().to(torch.uint8).cpu().numpy()
        name = f"photo {number + 1} of {len(photos)}"
        try:
            if face_index == -1:
                used = _only_face(node, analyzer, pixels, name)
            aligned = analyzer.align(np.ascontiguousarray(pixels), size=FACE_SIZE, face_index=used)
        except NoFaceFoundError as err:
            raise NodeInputError(node, "image", f"{name}: {err}") from None
        faces.append(to_tensor(aligned.image).permute(1, 2, 0))
    return torch.stack(faces), used


@functools.cache
def default_analyzer():
    """The offline face analyzer, made once per ComfyUI process (its detector files load on first use)."""
    from faceclip.face import FaceAnalyzer

    return FaceAnalyzer()


def _only_face(node: str, analyzer, pixels: np.ndarray, name: str) -> int:
    count = len(analyzer.detect(pixels))
    if count > 1:
        raise NodeInputError(
            node,
            "face_index",
            f"{name} shows {count} faces; set face_index to the one to "
            f"use (0 = the largest, up to {count - 1}), or crop the photo to one person.",
        )
    return 0


def faces_for_encoder(node: str, face: torch.Tensor) -> torch.Tensor:
    """An aligned-face IMAGE (B, H, W, 3) -> the encoder's (B, 3, H, W) input."""
    face = check_image(node, "face", face)
    if face.shape[1] != face.shape[2]:
        raise NodeInputError(
            node,
            "face",
            f"expected a square aligned face, got {face.shape[2]}x{face.shape[1]}; "
            "connect the 'face' output of the FaceCLIP Face node.",
        )
    return face.permute(0, 3, 1, 2).contiguous()


def run_encoder(loaded: LoadedEncoder, faces: torch.Tensor | None, prompts: list[str]):
    """One encoder call: ``faces`` (B, 3, H, W) in [0, 1], or ``None`` for the no-face path (zero faces, and for
    FaceCLIP no identity token), as the pipelines run it. Returns (B, L, D) and (B, P)."""
    kwargs = {}
    if loaded.family == SDXL:
        kwargs["has_face"] = torch.full((len(prompts),), faces is not None, dtype=torch.bool)
    if faces is not None:
        faces = faces.to(loaded.device, loaded.dtype)
    with torch.no_grad():
        out = loaded.encoder(face_images=faces, prompts=prompts, **kwargs)
    return out.prompt_embeds, out.pooled_prompt_embeds


def encode(node: str, loaded: LoadedEncoder, face: torch.Tensor, text: str, extras: dict) -> list:
    """Positive CONDITIONING: one row per face, the same prompt for all; ``extras`` join ``pooled_output``."""
    faces = faces_for_encoder(node, face)
    prompt = _check_text(node, "text", text)
    embeds, pooled = run_encoder(loaded, faces, [prompt] * faces.shape[0])
    return conditioning(embeds, pooled, extras)


def encode_negative(node: str, loaded: LoadedEncoder, text: str, extras: dict) -> list:
    """The released negative as CONDITIONING: the encoder's no-face path on ``text`` (cached per text)."""
    prompt = _check_text(node, "text", text)
    if prompt not in loaded.negative_cache:
        loaded.negative_cache[prompt] = run_encoder(loaded, None, [prompt])
    embeds, pooled = loaded.negative_cache[prompt]
    return conditioning(embeds, pooled, extras)


def conditioning(embeds: torch.Tensor, pooled: torch.Tensor, extras: dict) -> list:
    """``[[cond (B, L, D), {"pooled_output": (B, P), **extras}]]``, float32 on ComfyUI's intermediate device
    (the CPU outside ComfyUI). SDXL's extras are the six sizes; FLUX's is ``guidance``."""
    device = _intermediate_device()
    return [[embeds.to(device, torch.float32), {"pooled_output": pooled.to(device, torch.float32), **extras}]]


def _intermediate_device() -> torch.device:
    try:
        import comfy.model_management as model_management

        return model_management.intermediate_device()
    except (ImportError, AttributeError):
        return torch.device("cpu")


def _check_text(node: str, input_name: str, text: object) -> str:
    if not isinstance(text, str):
        raise NodeInputError(node, input_name, f"expected text, got {type(text).__name__}.")
    return text


def check_sizes(node: str, sizes: dict) -> dict:
    """The six SDXL size inputs as whole numbers >= 0 (ComfyUI checks the ranges of widgets; links are not)."""
    for key in SIZE_KEYS:
        value = sizes.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise NodeInputError(node, key, f"{value!r} is not a whole number of pixels >= 0.")
    return {key: sizes[key] for key in SIZE_KEYS}


def check_guidance(node: str, guidance: object) -> dict:
    """FLUX's distilled guidance as the CONDITIONING entry ComfyUI's FLUX text-encode node sets."""
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, int | float)
        or not 0 <= guidance < float("inf")
    ):
        raise NodeInputError(
            node, "guidance", f"{guidance!r} is not a number >= 0 (the released model uses 1.0)."
        )
    return {"guidance": float(guidance)}
