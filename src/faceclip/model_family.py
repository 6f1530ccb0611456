"""What a model family declares once, and what a model argument resolves to.

A *model family* (FaceCLIP-SDXL; FaceT5-FLUX beside it) is declared by one :class:`ModelFamily` value in its
pipeline folder (``faceclip/pipelines/<family>/family.py``) and listed in :mod:`faceclip.registry`. Everything a
surface needs to know about a family comes from that value: its names, the released files, the generation
defaults, the licence notice and how to load each kind of :class:`ModelSource`.

This module holds only the types, so that family declarations and loaders can import it without importing the
registry (imports go one way: registry -> families -> these types).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GenerationDefaults:
    """The settings a family generates with when the caller leaves them out.

    Attributes:
        height, width: output size in pixels for a denoiser trained at ``native_size`` pixels; a denoiser of
            another native size (tiny components) gets the same aspect at its own size (:meth:`size_for`).
        native_size: the side in pixels the denoiser was trained at (``sample_size * vae_scale_factor``).
        num_inference_steps: denoising steps.
        guidance_scale: the pipeline's ``guidance_scale``: classifier-free guidance for FaceCLIP-SDXL, the
            distilled-guidance input for FaceT5-FLUX (as in diffusers' ``FluxPipeline``).
        negative_prompt: the released negative prompt.
        true_cfg_scale: true classifier-free guidance weight for pipelines that take ``true_cfg_scale``
            (FaceT5-FLUX), ``None`` for the others.
        size_multiple: sizes must be multiples of this (8 for SDXL; 16 for FLUX, whose latents are packed 2x2).
    """

    height: int
    width: int
    native_size: int
    num_inference_steps: int
    guidance_scale: float
    negative_prompt: str
    true_cfg_scale: float | None = None
    size_multiple: int = 8

    def size_for(self, native_size: int) -> tuple[int, int]:
        """``(height, width)`` for a denoiser of ``native_size`` pixels: the default size scaled, in multiples of
        :attr:`size_multiple`.

        As diffusers derives its default size from the UNet config, tiny components get a tiny default size
        (the tiny SDXL UNet: 64 px native -> 72 x 56) while the released model keeps 1152 x 864.
        """
        scale = native_size / self.native_size
        step = self.size_multiple
        return tuple(max(step, step * round(side * scale / step)) for side in (self.height, self.width))


class SourceKind(enum.Enum):
    """The three ways a model argument names weights."""

    TINY = "tiny"
    """Tiny random components built from configs (offline, seconds; the images are noise)."""
    PRETRAINED = "pretrained"
    """A folder or hub repo in our layout (``model_index.json`` written by ``save_pretrained``)."""
    RELEASED = "released"
    """The released checkpoint files (pickles), converted to safetensors on first use."""


@dataclass(frozen=True)
class ModelSource:
    """A model argument, resolved: which family, which kind of weights, and where they are.

    Attributes:
        family: the model family.
        kind: tiny, our layout, or the released files.
        location: the tiny model's name, a local folder, or a hub repo id.
        revision: hub revision (branch, tag or commit), for hub repos.
    """

    family: ModelFamily
    kind: SourceKind
    location: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        """True for a folder on disk (tiny models are neither local nor on the hub)."""
        return self.kind is not SourceKind.TINY and os.path.isdir(os.path.expanduser(self.location))

    def describe(self) -> str:
        """One line for logs and messages, e.g. ``FaceCLIP-SDXL, released weights from ByteDance/FaceCLIP``."""
        what = {
            SourceKind.TINY: "tiny random components (images are noise)",
            SourceKind.PRETRAINED: f"our layout from {self.location}",
            SourceKind.RELEASED: f"released weights from {self.location}",
        }[self.kind]
        return f"{self.family.title}, {what}"


@dataclass(frozen=True)
class ModelFamily:
    """One model family, declared once.

    Attributes:
        name: the family's id, e.g. ``"faceclip-sdxl"`` (``--family``).
        title: the name shown to people, e.g. ``"FaceCLIP-SDXL"``.
        pipeline_class_name: the class name ``save_pretrained`` records in ``model_index.json``.
        tiny_name: the model name that selects the family's tiny random components, e.g. ``"tiny-random"``.
        released_repo: the hub repo of the released weights.
        released_files: the released checkpoint files, relative to that repo (their presence in a folder
            marks the released layout).
        base_model: hub id of the base model the released files need (VAE, scheduler, configs), or ``None``.
        defaults: the generation defaults.
        license_notice: shown whenever the released weights are loaded.
        load: ``load(source, **options) -> pipeline``: builds the family's pipeline from a source. Options:
            ``torch_dtype``, ``base_model``, ``cache_dir``.
        load_encoder: ``load_encoder(source, **options) -> encoder``: the family's joint encoder alone (for
            training). Options: ``torch_dtype``, ``seed`` (tiny only).
    """

    name: str
    title: str
    pipeline_class_name: str
    tiny_name: str
    released_repo: str
    released_files: tuple[str, ...]
    base_model: str | None
    defaults: GenerationDefaults
    license_notice: str
    load: Callable[..., Any]
    load_encoder: Callable[..., Any]
