"""What the pipelines of both families share: the face argument, the argument checks around it, and the
negative (no-face) embeddings, computed once per text and cached.

A family's pipeline mixes :class:`FacePipelineMixin` into its diffusers pipeline and implements
:meth:`FacePipelineMixin.run_encoder` (one call of its joint encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.utils import BaseOutput
from PIL import Image

from faceclip.models.inputs import check_finite_embeds
from faceclip.pipelines.embedding_cache import CacheInfo, EmbeddingCache
from faceclip.pipelines.face_input import FaceInput, PreparedFace, check_face_values, prepare_face

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.face import FaceAnalyzer


@dataclass
class FacePipelineOutput(BaseOutput):
    """Output of the pipelines of both families.

    Attributes:
        images: ``num_prompts * num_images_per_prompt`` PIL images (prompt-major), or an array / tensor
            depending on ``output_type``.
        face: the aligned face that conditioned them (``None`` when embeddings were passed in).
    """

    images: list[Image.Image] | Any
    face: PreparedFace | None = None


class FacePipelineMixin:
    """Face handling for a diffusers pipeline with a ``faceclip_encoder`` component.

    Call :meth:`init_face_state` in ``__init__``; implement :meth:`run_encoder`.
    """

    def init_face_state(self) -> None:
        """Create the negative-embedding cache and the (lazily made) face analyzer."""
        self.negative_cache = EmbeddingCache()
        self._face_analyzer = None

    def run_encoder(
        self, faces: torch.Tensor | None, prompts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder call: ``faces`` (B, 3, H, W) in [0, 1] or ``None`` for the no-face path, B prompts.

        Returns:
            prompt_embeds (B, L, D) and pooled_prompt_embeds (B, P).
        """
        raise NotImplementedError

    @property
    def face_analyzer(self) -> FaceAnalyzer:
        """The detector/aligner used for photos; a default ``faceclip.face.FaceAnalyzer()`` on first use."""
        if self._face_analyzer is None:
            from faceclip.face import FaceAnalyzer

            self._face_analyzer = FaceAnalyzer()
        return self._face_analyzer

    @face_analyzer.setter
    def face_analyzer(self, analyzer: FaceAnalyzer) -> None:
        self._face_analyzer = analyzer

    def prepare_face(
        self, face_image: FaceInput | PreparedFace, face_index: int | None = None
    ) -> PreparedFace:
        """Detect and align a photo (or check an aligned tensor's shape); see :func:`faceclip.pipelines.prepare_face`."""
        if isinstance(face_image, PreparedFace | torch.Tensor):
            return prepare_face(face_image)
        return prepare_face(face_image, analyzer=self.face_analyzer, face_index=face_index)

    def encode_face_prompts(
        self, face_image, prompt: str | list[str], device: torch.device, face_index: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) and (B, P) for B prompts, in one encoder call with the face repeated B times."""
        if isinstance(face_image, torch.Tensor):
            check_face_values(face_image)
        face = self.prepare_face(face_image, face_index=face_index)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        encoder = self.faceclip_encoder
        faces = face.tensor.to(device=device, dtype=encoder.dtype).expand(len(prompts), -1, -1, -1)
        embeds, pooled = self.run_encoder(faces, prompts)
        return embeds.to(device), pooled.to(device)

    @torch.no_grad()
    def encode_negative_prompt(
        self, negative_prompts: list[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unconditional embeddings, one row per entry, computed once per distinct text and cached.

        As in the released models, the negative runs the encoder's no-face path (a zero face, no identity), so
        it depends on the encoder weights and is not a plain text embedding.

        Returns:
            negative_prompt_embeds (B, L, D) and negative_pooled_prompt_embeds (B, P).
        """
        device = device or self._execution_device
        encoder = self.faceclip_encoder
        rows = {}
        weights = weights_version(encoder)
        for text in dict.fromkeys(negative_prompts):
            key = (text, str(device), encoder.dtype, weights)
            cached = self.negative_cache.get(key)
            if cached is None:
                embeds, pooled = self.run_encoder(None, [text])  # every row of a text is the same: one row
                cached = (embeds.to(device), pooled.to(device))
                self.negative_cache.put(key, cached)
            rows[text] = cached
        embeds = torch.cat([rows[text][0] for text in negative_prompts])
        pooled = torch.cat([rows[text][1] for text in negative_prompts])
        return embeds, pooled

    def negative_cache_info(self) -> CacheInfo:
        """Hits, misses and size of the negative-embedding cache."""
        return self.negative_cache.info()

    @torch.no_grad()
    def encode_without_face(
        self, prompts: list[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of prompts through the encoder's no-face path (the negative's computation, uncached):
        images with no particular identity, e.g. evaluation baselines. Returns (B, L, D) and (B, P)."""
        device = device or self._execution_device
        embeds, pooled = self.run_encoder(None, list(prompts))
        return embeds.to(device), pooled.to(device)


def check_prompt_inputs(face_image, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds) -> None:
    """Either ``face_image`` + ``prompt`` or ``prompt_embeds`` + ``pooled_prompt_embeds``; raises ValueError."""
    if prompt_embeds is not None:
        if prompt is not None:
            raise ValueError("Pass either prompt or prompt_embeds, not both.")
        if face_image is not None:
            raise ValueError(
                "face_image is not used with prompt_embeds (the face is already in the embeddings from "
                "pipe.encode_prompt); pass either face_image + prompt or prompt_embeds."
            )
        if pooled_prompt_embeds is None or pooled_prompt_embeds.shape[0] != prompt_embeds.shape[0]:
            raise ValueError(
                "prompt_embeds needs pooled_prompt_embeds with the same batch size "
                "(both come from pipe.encode_prompt)."
            )
        return
    if prompt is None:
        raise ValueError("prompt: required (a string or a list of strings), or pass prompt_embeds.")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings; got {prompt!r}.")
    if face_image is None:
        raise ValueError("face_image: required (a photo path, PIL image, array, or an aligned face tensor).")
    if isinstance(negative_prompt, list) and len(negative_prompt) != len(prompts):
        raise ValueError(
            f"negative_prompt: a list must have one entry per prompt ({len(prompts)}); "
            f"got {len(negative_prompt)}. Pass a single string to use it for every prompt."
        )


def check_negative_embeds(negative_prompt, prompt_embeds, negative_embeds, negative_pooled) -> None:
    """Negative embeddings come in pairs, instead of ``negative_prompt``, shaped like ``prompt_embeds``."""
    if negative_embeds is None:
        if negative_pooled is not None:
            raise ValueError("negative_pooled_prompt_embeds needs negative_prompt_embeds as well.")
        return
    if negative_prompt is not None:
        raise ValueError("Pass either negative_prompt or negative_prompt_embeds, not both.")
    if negative_pooled is None or negative_pooled.shape[0] != negative_embeds.shape[0]:
        raise ValueError(
            "negative_prompt_embeds needs negative_pooled_prompt_embeds with the same batch size "
            "(both come from pipe.encode_prompt or pipe.encode_negative_prompt)."
        )
    if prompt_embeds is not None and prompt_embeds.shape != negative_embeds.shape:
        raise ValueError(
            f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
            f"{tuple(negative_embeds.shape)} must have the same shape."
        )


def check_embeds(name: str, embeds: torch.Tensor | None, trailing: tuple[int | str, ...]) -> None:
    """Precomputed embeddings: a finite float tensor of shape (B, *trailing), B >= 1, as ``pipe.encode_prompt``
    returns it; a ``str`` in ``trailing`` is a size that is not checked (it names the axis in the message)."""
    if embeds is None:
        return
    check_finite_embeds(embeds, name)
    fits = embeds.ndim == len(trailing) + 1 and embeds.shape[0] > 0
    fits = fits and all(isinstance(want, str) or got == want for got, want in zip(embeds.shape[1:], trailing))
    if not fits:
        wanted = ", ".join(str(n) for n in ("B", *trailing))
        raise ValueError(
            f"{name}: expected shape ({wanted}) with B >= 1 (from pipe.encode_prompt); got {tuple(embeds.shape)}."
        )


def negative_prompts_for(negative_prompt: str | list[str] | None, batch: int, default: str) -> list[str]:
    """One negative prompt per row: ``None`` is the family's released one (``default``), a string is repeated."""
    negative_prompt = default if negative_prompt is None else negative_prompt
    negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != batch:
        raise ValueError(
            f"negative_prompt: {len(negatives)} entries for {batch} prompts; give one per prompt."
        )
    return negatives


def per_image(
    tensor: torch.Tensor | None, repeats: int, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor | None:
    """(B, ...) -> (B * repeats, ...) on ``device`` (and in ``dtype``), each row repeated in place."""
    if tensor is None:
        return None
    return tensor.to(device=device, dtype=dtype or tensor.dtype).repeat_interleave(repeats, dim=0)


def weights_version(module: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever the weights change: in place (``load_state_dict`` bumps tensor versions) or replaced."""
    params = list(module.parameters())
    return (id(module), id(params[0]) if params else 0, sum(p._version for p in params))
