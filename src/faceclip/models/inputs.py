"""Checks of the encoders' inputs, shared by the FaceCLIP and FaceT5 encoders (and the pipelines' face check).

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, size, count or
values) naming the argument, what was expected and how to fix it, before any tensor reaches a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_prompts(prompts: object, name: str = "prompts") -> list[str]:
    """``prompts`` as a non-empty list of str (a single str becomes a list of one)."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name}: expected a str or a list of str, got {type(prompts).__name__}.")
    if not prompts:
        raise ValueError(f"{name}: the batch is empty; pass at least one prompt.")
    return list(prompts)


def check_face_batch(face_images: object, batch: int, name: str = "face_images") -> torch.Tensor:
    """Check a (B, 3, H, W) float face batch with B = ``batch``: type, shape and dtype.

    Values are not read here (that is a device sync on an accelerator, once per training step): the pipelines
    check them once per call with :func:`check_pixel_values`.

    Returns:
        ``face_images`` unchanged.
    """
    if not isinstance(face_images, torch.Tensor):
        raise TypeError(
            f"{name}: expected a (B, 3, H, W) float tensor in [0, 1], got {type(face_images).__name__}; "
            "use faceclip.face.to_tensor(image)[None] for one PIL image."
        )
    if face_images.ndim != 4 or face_images.shape[1] != 3:
        raise ValueError(
            f"{name}: expected shape (B, 3, H, W), got {tuple(face_images.shape)}; "
            "add a batch axis with x[None] or convert grey/RGBA images to RGB."
        )
    if not face_images.is_floating_point():
        raise TypeError(
            f"{name}: expected a float tensor in [0, 1], got dtype {face_images.dtype}; "
            "convert 8-bit images with x.float() / 255."
        )
    if face_images.shape[0] != batch:
        raise ValueError(
            f"{name}: {face_images.shape[0]} faces for {batch} prompts; pass one aligned face per prompt "
            "(repeat a face with face.expand(B, -1, -1, -1))."
        )
    if face_images.shape[-1] == 0 or face_images.shape[-2] == 0:
        raise ValueError(f"{name}: empty images of shape {tuple(face_images.shape)}; pass H, W >= 1.")
    return face_images


def check_pixel_values(images: torch.Tensor, name: str = "face_images") -> None:
    """Raise ValueError unless every value of ``images`` is finite and in [0, 1] (reads values back: a sync)."""
    low, high = (float(v) for v in torch.aminmax(images.detach().float()))
    if not (low >= 0.0 and high <= 1.0):  # NaN compares False, so it fails the range test
        raise ValueError(
            f"{name}: tensor values must be finite and lie in [0, 1] (no mean/std normalisation; divide 0-255 "
            f"images by 255); got [{low:.3f}, {high:.3f}]."
        )


def check_finite_embeds(embeds: torch.Tensor | None, name: str) -> None:
    """Raise ValueError when an embedding tensor holds NaN or infinite values (reads values back: a sync)."""
    if embeds is None:
        return
    if not isinstance(embeds, torch.Tensor) or not embeds.is_floating_point():
        kind = type(embeds).__name__ if not isinstance(embeds, torch.Tensor) else f"dtype {embeds.dtype}"
        raise TypeError(f"{name}: expected a float tensor (from pipe.encode_prompt), got {kind}.")
    if not bool(torch.isfinite(embeds).all()):
        bad = int((~torch.isfinite(embeds)).sum())
        raise ValueError(
            f"{name}: {bad} of {embeds.numel()} values are NaN or infinite; recompute the embeddings "
            "(e.g. with pipe.encode_prompt in fp32 or bf16: fp16 can overflow)."
        )
