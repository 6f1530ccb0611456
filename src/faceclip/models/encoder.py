"""The FaceCLIP joint identity-text encoder: SDXL ``prompt_embeds`` / ``pooled_prompt_embeds`` from faces + text.

Two branches (CLIP ViT-L/14 width 768 and bigG width 1280 text towers, each with a face ViT and a fuser)
run on the same faces and prompts; their fused text tokens are concatenated into the ``(B, 77, 2048)``
prompt embedding and the bigG tower's end-of-text state is the ``(B, 1280)`` pooled embedding.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import get_module_execution_device

from faceclip.models.branch import BranchConfig, FaceCLIPBranch
from faceclip.models.face_vit import FaceFeatures
from faceclip.models.inputs import check_face_batch, check_prompts
from faceclip.models.tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
PROMPT_PREFIX = "Photo of a id person. "


@dataclass
class FaceCLIPEncoderOutput(BaseOutput):
    """Output of :class:`FaceCLIPEncoder`.

    Attributes:
        prompt_embeds: (B, 77, prompt_embeds_dim) fused text tokens of both branches (2048 for faceclip-sdxl).
        pooled_prompt_embeds: (B, pooled_dim) bigG text tower output at the end-of-text token (1280).
        input_ids: (B, 77) the token ids used (prompt prefix included on face rows).
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    input_ids: torch.Tensor


class FaceCLIPEncoder(ModelMixin, ConfigMixin):
    """FaceCLIP joint encoder (two :class:`FaceCLIPBranch` es: ``branch_l`` and ``branch_g``).

    Args:
        branch_l_config: sizes of ``branch_l`` (``{"text": ..., "face": ..., "fuser": ...}``).
        branch_g_config: sizes of ``branch_g``, whose pooled output is the pooled embedding.
        share_face_encoder: build one face ViT, used by both branches (the released weights hold two
            identical copies).
        prompt_prefix: prepended to the prompts of rows with a face.
        id_position: index of the ``id`` token in the tokenized prefix (start token at 0).
        id_token_id: token id of ``id``.
    """

    config_name = "config.json"
    # The released model runs its fusers in fp32 (an fp32 autocast region); from_pretrained(torch_dtype=...) and
    # cast() keep their weights in fp32, and each branch runs its fuser in that dtype.
    _keep_in_fp32_modules: ClassVar[list[str]] = ["fuser"]

    @register_to_config
    def __init__(
        self,
        branch_l_config: dict | None = None,
        branch_g_config: dict | None = None,
        share_face_encoder: bool = False,
        prompt_prefix: str = PROMPT_PREFIX,
        id_position: int = 4,
        id_token_id: int = 1014,
    ) -> None:
        super().__init__()
        config_l = BranchConfig.from_dict(branch_l_config or {})
        config_g = BranchConfig.from_dict(branch_g_config or {})
        if share_face_encoder and config_l.face != config_g.face:
            raise ValueError("share_face_encoder=True needs identical face configs in branch_l and branch_g.")
        self.branch_l = FaceCLIPBranch(config_l, id_position, id_token_id)
        self.branch_g = FaceCLIPBranch(
            config_g, id_position, id_token_id, own_face_encoder=not share_face_encoder
        )
        if share_face_encoder:
            self.branch_g.tie_face_encoder(self.branch_l.face_encoder)
        self._prefix_checked = False

    @property
    def prompt_embeds_dim(self) -> int:
        return self.branch_l.config.width + self.branch_g.config.width

    @property
    def pooled_dim(self) -> int:
        return self.branch_g.config.width

    @property
    def execution_device(self) -> torch.device:
        """Where the inputs go: the accelerator while offloaded (weights on the CPU or ``meta``), else ``device``."""
        return get_module_execution_device(self)

    @property
    def face_image_size(self) -> int:
        return self.branch_l.config.face.image_size

    @property
    def context_length(self) -> int:
        return self.branch_l.config.text.context_length

    # ----------------------------------------------------------------------------------------------- inputs

    def tokenize(
        self, prompts: str | Sequence[str], has_face: torch.Tensor | Sequence[bool] | None = None
    ) -> torch.Tensor:
        """Token ids, with the prompt prefix on face rows.

        Args:
            prompts: a prompt or a list of B prompts.
            has_face: (B,) bool, rows that get the prefix; None = no row.

        Returns:
            (B, 77) int64 ids.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        has_face = [False] * len(prompts) if has_face is None else [bool(f) for f in has_face]
        if len(has_face) != len(prompts):
            raise ValueError(
                f"has_face: {len(has_face)} entries for {len(prompts)} prompts; give one per prompt."
            )
        tokenizer = get_tokenizer()
        if not self._prefix_checked:
            prefix_ids = tokenizer.encode(self.config.prompt_prefix)
            if (
                len(prefix_ids) < self.config.id_position
                or prefix_ids[self.config.id_position - 1] != self.config.id_token_id
            ):
                raise ValueError(
                    f"prompt_prefix {self.config.prompt_prefix!r} does not hold token {self.config.id_token_id} "
                    f"at position {self.config.id_position}; fix id_position/id_token_id in the config."
                )
            self._prefix_checked = True
        texts = [self.config.prompt_prefix + p if f else p for p, f in zip(prompts, has_face)]
        return tokenizer(texts)

    def _check_inputs(
        self, face_images: torch.Tensor | None, prompts: str | Sequence[str], has_face
    ) -> tuple[list[str], torch.Tensor]:
        """Types, shapes and dtypes of the inputs (nothing that reads device values back); (prompts, (B,) has_face).

        Pixel values are not checked here (finite, in [0, 1]): the pipeline checks them once per call.
        """
        prompts = check_prompts(prompts)
        batch = len(prompts)
        if face_images is not None:
            check_face_batch(face_images, batch)
        if has_face is None:
            has_face = torch.full((batch,), face_images is not None, dtype=torch.bool)
        else:
            try:
                has_face = torch.as_tensor(has_face)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"has_face: expected a bool tensor or list of {batch} bools, got {type(has_face).__name__}."
                ) from None
            if has_face.dtype != torch.bool or has_face.shape != (batch,):
                raise ValueError(
                    f"has_face: expected a bool tensor of shape ({batch},), got {has_face.dtype} "
                    f"of shape {tuple(has_face.shape)}."
                )
            has_face = has_face.cpu()  # the tokenizer needs the flags on the host anyway
            if face_images is None and bool(has_face.any()):
                raise ValueError("has_face: rows are marked True but face_images is None; pass the faces.")
        return prompts, has_face

    # ------------------------------------------------------------------------------------------------ faces

    def encode_faces(self, face_images: torch.Tensor | None, batch: int) -> tuple[FaceFeatures, FaceFeatures]:
        """Face features of both branches for B rows; each distinct face goes through each face ViT once.

        Args:
            face_images: (B, 3, H, W) in [0, 1], or None for black faces.
            batch: B.

        Returns:
            (features for branch_l, features for branch_g), each with B rows.
        """
        device = self.execution_device
        if face_images is None:
            size = self.face_image_size
            distinct = torch.zeros(1, 3, size, size, device=device, dtype=self.dtype)
            index = torch.zeros(batch, dtype=torch.long, device=device)
        else:
            face_images = face_images.to(device)
            representatives: list[int] = []
            rows: list[int] = []
            for i in range(batch):
                match = next(
                    (k for k, r in enumerate(representatives) if torch.equal(face_images[i], face_images[r])),
                    None,
                )
                if match is None:
                    representatives.append(i)
                    match = len(representatives) - 1
                rows.append(match)
            distinct = face_images[representatives]
            index = torch.tensor(rows, dtype=torch.long, device=device)
        features_l = self.branch_l.encode_face(distinct)
        features_g = features_l if self.config.share_face_encoder else self.branch_g.encode_face(distinct)
        return features_l.index_select(index), features_g.index_select(index)

    # ---------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        face_images: torch.Tensor | None = None,
        prompts: str | Sequence[str] = "",
        has_face: torch.Tensor | Sequence[bool] | None = None,
        return_dict: bool = True,
    ) -> FaceCLIPEncoderOutput | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode faces and prompts into SDXL conditioning.

        Args:
            face_images: (B, 3, H, W) float in [0, 1], any H, W (resized inside), or None for black faces.
            prompts: a prompt or a list of B prompts (without the ``"Photo of a id person. "`` prefix).
            has_face: (B,) bool; rows whose prompt gets the prefix and the face identity token. None = all
                True when faces are given, else all False. Rows without a face still run their face image
                (black or not) through the fuser, as the released model does.
            return_dict: return a FaceCLIPEncoderOutput; False returns the tuple
                (prompt_embeds, pooled_prompt_embeds, input_ids).

        Returns:
            FaceCLIPEncoderOutput with prompt_embeds (B, 77, prompt_embeds_dim), pooled_prompt_embeds
            (B, pooled_dim) and input_ids (B, 77).
        """
        prompts, has_face = self._check_inputs(face_images, prompts, has_face)
        input_ids = self.tokenize(prompts, has_face).to(self.execution_device)
        has_face = has_face.to(input_ids.device)
        features_l, features_g = self.encode_faces(face_images, len(prompts))
        out_l = self.branch_l(input_ids, has_face, face_features=features_l)
        out_g = self.branch_g(input_ids, has_face, face_features=features_g)
        output = FaceCLIPEncoderOutput(
            prompt_embeds=torch.cat([out_l.fused, out_g.fused], dim=-1),
            pooled_prompt_embeds=out_g.pooled,
            input_ids=input_ids,
        )
        return output if return_dict else output.to_tuple()

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> FaceCLIPEncoder:
        """Load an encoder saved by ``save_pretrained`` (or ``faceclip convert``): a local folder or hub id.

        Takes the keyword arguments of ``diffusers.ModelMixin.from_pretrained`` (``torch_dtype``, ``subfolder``,
        ``revision``, ``local_files_only``, ...).

        Raises:
            faceclip.hub.WeightsNotFoundError: the folder, hub repo or files cannot be found.
        """
        from faceclip.hub import WeightsNotFoundError

        try:
            model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as err:
            raise WeightsNotFoundError(
                f"Could not load the FaceCLIP encoder from {str(pretrained_model_name_or_path)!r}: {err}\n"
                "Pass a folder written by `faceclip convert` / save_pretrained (config.json + "
                "diffusion_pytorch_model.safetensors) or a hub repo id that holds one; for the released "
                "face_clip_encoder.pt use FaceCLIPEncoder.from_official."
            ) from err
        for branch in (model.branch_l, model.branch_g):
            branch.freeze_backbones()
        return model

    @classmethod
    def from_official(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor],
        config: str | dict = "faceclip-sdxl",
        torch_dtype: torch.dtype | None = None,
    ) -> FaceCLIPEncoder:
        """Load weights in the released FaceCLIP key layout (``face_clip_l.*`` / ``face_clip_g.*``).

        Args:
            source: ``face_clip_encoder.pt`` (read with ``weights_only=True``), a ``.safetensors`` file, a
                folder or hub id holding ``model/face_clip_encoder.pt``, or an in-memory state dict; keys may
                carry a leading ``model.``.
            config: a packaged config name (see ``list_configs()``) or a config dict.
            torch_dtype: cast the weights to this dtype (default: keep the checkpoint's).

        Raises:
            faceclip.hub.WeightsNotFoundError: the file cannot be found.
            faceclip.convert.CheckpointKeyError: a key is missing or unexpected, or a shape does not fit
                (the message names it).
        """
        from faceclip.convert.faceclip_encoder import (
            convert_released_state_dict,
            load_released_state_dict,
            with_share_face_encoder,
        )

        state_dict = source if isinstance(source, Mapping) else load_released_state_dict(source)
        base_config = encoder_config(config) if isinstance(config, str) else dict(config)
        model_config = with_share_face_encoder(state_dict, base_config)
        with torch.device("meta"):
            model = cls.from_config(model_config)
        expected_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        converted = convert_released_state_dict(state_dict, model_config, expected_shapes)
        model.load_state_dict(converted, strict=True, assign=True)
        for branch in (model.branch_l, model.branch_g):
            branch.freeze_backbones()
        if torch_dtype is not None:
            model.cast(torch_dtype)
        return model.eval()

    def cast(self, dtype: torch.dtype) -> FaceCLIPEncoder:
        """Cast the floating-point weights to ``dtype`` in place, keeping the fusers in fp32; returns ``self``.

        ``.to(dtype)`` casts everything, fusers included (the branches then run their fusers in that dtype).
        """
        for name, module in self.named_modules():
            if any(part in self._keep_in_fp32_modules for part in name.split(".")):
                continue
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None and tensor.is_floating_point():
                        tensor.data = tensor.data.to(dtype)
        return self


def list_configs() -> list[str]:
    """Names of the packaged encoder configs (``faceclip-sdxl``, ``faceclip-tiny``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("faceclip-*.json"))


def encoder_config(name: str) -> dict:
    """The config dict of the packaged encoder config ``name`` (see :func:`list_configs`)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"config: unknown encoder config {name!r}; choose one of {list_configs()}.")
    config = json.loads(path.read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def create_encoder(name: str = "faceclip-sdxl", seed: int | None = None, **overrides) -> FaceCLIPEncoder:
    """A randomly initialised encoder from a packaged config, in eval mode.

    Args:
        name: config name, see :func:`list_configs`.
        seed: seed for the initialisation (the global RNG is left untouched); None uses the global RNG.
        **overrides: top-level config entries to replace, e.g. ``share_face_encoder=True``.
    """
    config = encoder_config(name)
    unknown = (
        set(overrides) - set(config) - {"share_face_encoder", "prompt_prefix", "id_position", "id_token_id"}
    )
    if unknown:
        raise TypeError(f"create_encoder: unknown config entries {sorted(unknown)}.")
    config.update(overrides)
    if seed is None:
        return FaceCLIPEncoder.from_config(config).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FaceCLIPEncoder.from_config(config).eval()
