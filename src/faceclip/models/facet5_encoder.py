"""The FaceT5 encoder of FaceT5-FLUX: FLUX.1 ``prompt_embeds`` / ``pooled_prompt_embeds`` from a face and a prompt.

The face goes through the face ViT of the SDXL variant (patch tokens only) and a 768 -> 4096 projection; the
prompt through a T5-v1.1-XXL encoder (``transformers.T5EncoderModel``, 512 tokens, no attention mask); the
FaceT5 fuser (:mod:`faceclip.models.facet5_fusion`) fuses the two and its text stream is the ``(B, 512, 4096)``
prompt embedding. The ``(B, 768)`` pooled embedding is the CLIP-L text model's (``transformers.CLIPTextModel``)
pooled output of the plain prompt, tokenized as FLUX.1-dev's CLIP tokenizer does. Identity enters only through
the face patches: there is no identity token and no prompt prefix.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from faceclip.models.face_vit import FaceViT, FaceViTConfig
from faceclip.models.facet5_fusion import FaceT5Fuser, FaceT5FuserConfig
from faceclip.models.inputs import check_face_batch, check_prompts
from faceclip.models.tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
T5_TIED_KEY = "text_encoder_2.encoder.embed_tokens.weight"  # the same tensor as text_encoder_2.shared.weight


@dataclass
class FaceT5EncoderOutput(BaseOutput):
    """Output of :class:`FaceT5Encoder`.

    Attributes:
        prompt_embeds: (B, max_sequence_length, T5 width) fused text tokens, (B, 512, 4096) for FaceT5-FLUX.
        pooled_prompt_embeds: (B, CLIP width) CLIP-L pooled output of the plain prompt, (B, 768).
        clip_input_ids: (B, 77) the CLIP token ids used.
        t5_input_ids: (B, max_sequence_length) the T5 token ids used.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    clip_input_ids: torch.Tensor
    t5_input_ids: torch.Tensor


def flux_clip_input_ids(prompts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """FLUX.1-dev's CLIP tokenization: start, BPE tokens, end-of-text, padded with end-of-text.

    Prompts longer than ``context_length - 2`` tokens are cut there (one warning lists them).

    Returns:
        (B, context_length) int64 ids.
    """
    tokenizer = get_tokenizer()
    out = torch.full((len(prompts), context_length), tokenizer.end_id, dtype=torch.long)
    truncated = []
    for row, prompt in enumerate(prompts):
        tokens = tokenizer.encode(prompt)
        if len(tokens) > context_length - 2:
            truncated.append(f"row {row} ({len(tokens) + 2} tokens)")
            tokens = tokens[: context_length - 2]
        out[row, : len(tokens) + 1] = torch.tensor([tokenizer.start_id, *tokens])
    if truncated:
        logger.warning("CLIP keeps %d tokens; truncated: %s.", context_length - 2, ", ".join(truncated))
    return out


def build_clip_config(sizes: Mapping[str, Any]) -> CLIPTextConfig:
    """The CLIP-L text config. ``eos_token_id=2`` as in FLUX.1-dev's config: pooled at the first end-of-text."""
    return CLIPTextConfig(
        **{**sizes, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}, attn_implementation="eager"
    )


def build_t5_config(sizes: Mapping[str, Any]) -> T5Config:
    """The T5-v1.1 encoder config: gated tanh-GELU FFN, eager attention (bit-identical to the released T5)."""
    return T5Config(
        **sizes,
        feed_forward_proj="gated-gelu",
        dense_act_fn="gelu_pytorch_tanh",
        is_encoder_decoder=False,
        use_cache=False,
        attn_implementation="eager",
    )


class FaceT5Encoder(ModelMixin, ConfigMixin):
    """FaceT5 encoder: face ViT + T5 encoder + CLIP-L text model + FaceT5 fuser.

    The T5 encoder (``text_encoder_2``) and CLIP-L (``text_encoder``) live inside: the released T5 is part of
    the encoder's checkpoint (not known to equal FLUX.1-dev's own), and the encoder is one loadable unit.

    Args:
        clip_config: ``transformers.CLIPTextConfig`` sizes of CLIP-L.
        t5_config: ``transformers.T5Config`` sizes of the T5 encoder (its ``d_model`` is the fuser width).
        face_config: :class:`FaceViTConfig` sizes (built without the identity head, which is never read).
        fuser_config: :class:`FaceT5FuserConfig` sizes.
        max_sequence_length: T5 tokens per prompt (512): pads are attended, so this is part of the model.
    """

    config_name = "config.json"
    # transformers keeps T5's `wo` in fp32 (fp16 overflows there); cast() and from_pretrained(torch_dtype=...) too.
    _keep_in_fp32_modules: ClassVar[list[str]] = ["wo"]

    @register_to_config
    def __init__(
        self,
        clip_config: dict | None = None,
        t5_config: dict | None = None,
        face_config: dict | None = None,
        fuser_config: dict | None = None,
        max_sequence_length: int = 512,
    ) -> None:
        super().__init__()
        fuser = FaceT5FuserConfig(**{"max_text_length": max_sequence_length, **(fuser_config or {})})
        if fuser.max_text_length < max_sequence_length:
            raise ValueError(
                f"fuser_config.max_text_length={fuser.max_text_length} is shorter than "
                f"max_sequence_length={max_sequence_length}."
            )
        face = FaceViTConfig(**{**(face_config or {}), "identity_head": False})
        self.text_encoder = CLIPTextModel(build_clip_config(clip_config or {}))
        self.text_encoder_2 = T5EncoderModel(build_t5_config(t5_config or {}))
        # One module for the tied T5 embedding: loading `shared.weight` sets both names.
        self.text_encoder_2.encoder.embed_tokens = self.text_encoder_2.shared
        width = self.text_encoder_2.config.d_model
        self.face_encoder = FaceViT(face)
        self.face_patch_proj = nn.Linear(face.width, width)
        self.fuser = FaceT5Fuser(width, fuser)
        self._register_state_dict_hook(_drop_tied_key)
        self.register_load_state_dict_pre_hook(_fill_tied_key)
        self.t5_tokenizer = None  # a transformers T5 tokenizer; set by the loaders when the weights ship one
        self.freeze_backbones()

    def freeze_backbones(self) -> None:
        """Freeze the face ViT, T5 and CLIP-L (FaceT5 trains only the projection and the fuser)."""
        for module in (self.text_encoder, self.text_encoder_2, self.face_encoder):
            module.requires_grad_(False)

    @property
    def face_image_size(self) -> int:
        return self.face_encoder.config.image_size

    @property
    def clip_context_length(self) -> int:
        return self.text_encoder.config.max_position_embeddings

    # ----------------------------------------------------------------------------------------------- inputs

    def tokenize_t5(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, max_sequence_length) T5 ids, padded and truncated as FLUX.1 does (needs ``t5_tokenizer``)."""
        if self.t5_tokenizer is None:
            raise ValueError(
                "t5_input_ids: no T5 tokenizer is attached to this encoder; pass t5_input_ids (B, "
                f"{self.config.max_sequence_length}) or set encoder.t5_tokenizer = "
                "transformers.AutoTokenizer.from_pretrained('<weights>/model/tokenizer')."
            )
        length = self.config.max_sequence_length
        encoded = self.t5_tokenizer(
            list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        return encoded.input_ids

    def _check_t5_ids(self, t5_input_ids: torch.Tensor, batch: int) -> torch.Tensor:
        length, vocab = self.config.max_sequence_length, self.text_encoder_2.config.vocab_size
        if (
            not isinstance(t5_input_ids, torch.Tensor)
            or t5_input_ids.is_floating_point()
            or t5_input_ids.is_complex()
            or t5_input_ids.dtype == torch.bool
        ):
            kind = (
                t5_input_ids.dtype if isinstance(t5_input_ids, torch.Tensor) else type(t5_input_ids).__name__
            )
            raise TypeError(
                f"t5_input_ids: expected an integer (int64) tensor of shape ({batch}, {length}), got {kind}."
            )
        if t5_input_ids.ndim == 2 and t5_input_ids.shape[0] != batch:
            raise ValueError(
                f"t5_input_ids: {t5_input_ids.shape[0]} rows for {batch} prompts; pass one row per prompt."
            )
        if t5_input_ids.shape != (batch, length):
            raise ValueError(
                f"t5_input_ids: expected shape ({batch}, {length}), got {tuple(t5_input_ids.shape)}; pad every "
                f"row to {length} tokens with the pad id 0 (the model attends the pads)."
            )
        if bool((t5_input_ids < 0).any()) or bool((t5_input_ids >= vocab).any()):
            raise ValueError(f"t5_input_ids: ids must lie in [0, {vocab}).")
        return t5_input_ids.long()

    def _faces(self, face_images: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, 3, H, W) faces on the model's device; None -> zero faces (the released negative)."""
        dtype = self.face_patch_proj.weight.dtype
        if face_images is None:
            size = self.face_image_size
            return torch.zeros(batch, 3, size, size, device=self.device, dtype=dtype)
        check_face_batch(face_images, batch)
        return face_images.to(self.device)

    # ---------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        face_images: torch.Tensor | None = None,
        prompts: str | Sequence[str] = "",
        t5_input_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FaceT5EncoderOutput | tuple[torch.Tensor, ...]:
        """Encode faces and prompts into FLUX.1 conditioning; every row depends only on its own inputs.

        Args:
            face_images: (B, 3, H, W) aligned face crops in [0, 1], any size (resized to the ViT's input
                inside), or None for zero faces (the released negative).
            prompts: a prompt or B prompts.
            t5_input_ids: (B, max_sequence_length) T5 ids; given, the T5 tokenizer is not used.
            return_dict: False returns the tuple (prompt_embeds, pooled_prompt_embeds, clip_input_ids,
                t5_input_ids).

        Returns:
            FaceT5EncoderOutput: prompt_embeds (B, 512, 4096), pooled_prompt_embeds (B, 768) for FaceT5-FLUX.
        """
        prompts = check_prompts(prompts)
        batch = len(prompts)
        faces = self._faces(face_images, batch)
        t5_ids = (
            self.tokenize_t5(prompts) if t5_input_ids is None else self._check_t5_ids(t5_input_ids, batch)
        )
        t5_ids = t5_ids.to(self.device)
        clip_ids = flux_clip_input_ids(prompts, self.clip_context_length).to(self.device)
        pooled = self.text_encoder(input_ids=clip_ids).pooler_output  # (B, 768)
        text = self.text_encoder_2(input_ids=t5_ids).last_hidden_state  # (B, 512, 4096), pads attended
        patches = self.face_encoder(faces).patch_tokens  # (B, 144, 768)
        face_tokens = self.face_patch_proj(patches.to(self.face_patch_proj.weight.dtype))
        fuser_dtype = self.fuser.layers[0].text_layer.linear1.weight.dtype
        prompt_embeds = self.fuser(face_tokens.to(fuser_dtype), text.to(fuser_dtype))
        output = FaceT5EncoderOutput(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled,
            clip_input_ids=clip_ids,
            t5_input_ids=t5_ids,
        )
        return output if return_dict else output.to_tuple()

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> FaceT5Encoder:
        """Load an encoder saved by ``save_pretrained`` / the converter: a local folder or hub id.

        Takes the keyword arguments of ``diffusers.ModelMixin.from_pretrained`` (``torch_dtype``, ``subfolder``,
        ``revision``, ...). A ``tokenizer_2`` folder beside the weights, if any, becomes ``t5_tokenizer``.

        Raises:
            faceclip.hub.WeightsNotFoundError: the folder, hub repo or files cannot be found.
        """
        from faceclip.hub import WeightsNotFoundError

        try:
            model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as err:
            raise WeightsNotFoundError(
                f"Could not load the FaceT5 encoder from {str(pretrained_model_name_or_path)!r}: {err}\n"
                "Pass a folder written by save_pretrained / faceclip.convert.convert_facet5_encoder (config.json + "
                "diffusion_pytorch_model*.safetensors) or a hub repo id that holds one; for the released "
                "face_t5_encoder.pt use FaceT5Encoder.from_official."
            ) from err
        model.freeze_backbones()
        return model.eval()

    @classmethod
    def from_official(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor],
        config: str | dict = "facet5-flux",
        torch_dtype: torch.dtype | None = None,
    ) -> FaceT5Encoder:
        """Load weights in the released ``face_t5_encoder.pt`` layout (``encoder_1.*`` CLIP-L, ``encoder_2.*``).

        Depths and widths are read from the keys and shapes; the rest (head counts) from ``config``. The file is
        memory-mapped and its tensors are taken over, not copied.

        Args:
            source: ``face_t5_encoder.pt``, a folder or hub id holding ``model/face_t5_encoder.pt``, or a state dict.
            config: a packaged config name (``facet5-flux``, ``facet5-tiny``) or a config dict.
            torch_dtype: cast the weights (``wo`` stays fp32); None keeps the checkpoint's dtypes.

        Raises:
            faceclip.hub.WeightsNotFoundError: the file cannot be found.
            faceclip.convert.CheckpointKeyError: keys missing or unexpected, or shapes that do not fit.
        """
        from accelerate import init_empty_weights

        from faceclip.convert.facet5_encoder import (
            config_from_released_keys,
            convert_released_state_dict,
            load_released_state_dict,
            load_released_t5_tokenizer,
        )

        state_dict = source if isinstance(source, Mapping) else load_released_state_dict(source)
        base = facet5_config(config) if isinstance(config, str) else dict(config)
        model_config = config_from_released_keys(state_dict, base)
        with init_empty_weights(include_buffers=False):
            model = cls.from_config(model_config)
        expected_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        converted = convert_released_state_dict(state_dict, model_config, expected_shapes)
        del state_dict
        model.load_state_dict(converted, strict=True, assign=True)
        model.freeze_backbones()
        if torch_dtype is not None:
            model.cast(torch_dtype)
        if not isinstance(source, Mapping):
            model.t5_tokenizer = load_released_t5_tokenizer(source)
        return model.eval()

    def cast(self, dtype: torch.dtype) -> FaceT5Encoder:
        """Cast floating-point weights to ``dtype`` in place, T5's ``wo`` kept in fp32; returns ``self``."""
        for name, module in self.named_modules():
            keep = any(part in self._keep_in_fp32_modules for part in name.split("."))
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None and tensor.is_floating_point():
                        tensor.data = tensor.data.to(torch.float32 if keep else dtype)
        return self


def _drop_tied_key(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: store the tied T5 embedding once (as ``text_encoder_2.shared.weight``)."""
    state_dict.pop(prefix + T5_TIED_KEY, None)


def _fill_tied_key(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: the tied T5 embedding key loads from ``text_encoder_2.shared.weight``."""
    shared = prefix + "text_encoder_2.shared.weight"
    if shared in state_dict and prefix + T5_TIED_KEY not in state_dict:
        state_dict[prefix + T5_TIED_KEY] = state_dict[shared]


def list_facet5_configs() -> list[str]:
    """Names of the packaged FaceT5 configs (``facet5-flux``, ``facet5-tiny``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("facet5-*.json"))


def facet5_config(name: str) -> dict:
    """The config dict of a packaged FaceT5 config (see :func:`list_facet5_configs`)."""
    path = CONFIG_DIR / f"{name}.json"
    if name not in list_facet5_configs():
        raise ValueError(f"config: unknown FaceT5 config {name!r}; choose one of {list_facet5_configs()}.")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def create_facet5_encoder(name: str = "facet5-tiny", seed: int | None = None) -> FaceT5Encoder:
    """A randomly initialised FaceT5 encoder from a packaged config, in eval mode (global RNG untouched)."""
    config = facet5_config(name)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return FaceT5Encoder.from_config(config).eval()
