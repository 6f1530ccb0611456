"""FaceCLIP-SDXL: one face photo and a prompt in, new photos of that person out.

FaceCLIP (Liu et al., arXiv 2504.14202) replaces SDXL's two CLIP text encoders by a joint identity-text
encoder whose outputs have exactly SDXL's shapes (``prompt_embeds`` (B, 77, 2048) and
``pooled_prompt_embeds`` (B, 1280)), next to a fine-tuned SDXL UNet. The pipeline keeps the contracts of
diffusers' ``StableDiffusionXLPipeline``: the same ``encode_prompt`` return values, ``__call__`` arguments, state
properties, callbacks, LoRA loading and ``StableDiffusionMixin`` helpers; denoising is SDXL's, step for step.
"""

# No ``from __future__ import annotations`` here: diffusers reads the constructor's type hints at run time
# (``from_pipe`` carries a component over only when its type matches them).

import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
from diffusers.loaders.lora_base import LoraBaseMixin
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    rescale_noise_cfg,
    retrieve_timesteps,
)
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor

from faceclip.models.encoder import FaceCLIPEncoder
from faceclip.models.inputs import check_prompts
from faceclip.pipelines.face_input import FaceInput, PreparedFace, check_face_values
from faceclip.pipelines.face_pipeline import (
    FacePipelineMixin,
    FacePipelineOutput,
    check_embeds,
    check_negative_embeds,
    check_prompt_inputs,
    negative_prompts_for,
    per_image,
)
from faceclip.pipelines.saved_layout import SavedLayout, SavedLayoutMixin
from faceclip.pipelines.sdxl.family import DEFAULTS

logger = logging.getLogger(__name__)

TEXT_ENCODER_LORA_PREFIXES = ("text_encoder.", "text_encoder_2.")
"""Prefixes of SDXL text-encoder LoRA weights (after diffusers' kohya/A1111 conversion)."""


class FaceCLIPStableDiffusionXLPipelineOutput(FacePipelineOutput):
    """Output of :class:`FaceCLIPStableDiffusionXLPipeline`: ``images`` and the aligned ``face`` (see :class:`FacePipelineOutput`)."""


class FaceCLIPStableDiffusionXLPipeline(
    FacePipelineMixin,
    SavedLayoutMixin,
    DiffusionPipeline,
    StableDiffusionMixin,
    StableDiffusionXLLoraLoaderMixin,
):
    """Identity-preserving text-to-image generation with FaceCLIP-SDXL.

    Args:
        vae: SDXL's ``AutoencoderKL``.
        unet: the FaceCLIP-SDXL ``UNet2DConditionModel`` (SDXL architecture, fine-tuned weights).
        scheduler: a diffusers scheduler (the released model uses SDXL base's ``EulerDiscreteScheduler``).
        faceclip_encoder: the joint identity-text encoder; it replaces SDXL's tokenizers and text encoders.
    """

    model_cpu_offload_seq = "faceclip_encoder->unet->vae"
    _optional_components = []  # noqa: RUF012 (diffusers' class attribute)
    _callback_tensor_inputs = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]  # noqa: RUF012
    _lora_loadable_modules = ["unet"]  # noqa: RUF012 (the text side is the FaceCLIP encoder)
    saved_layout = SavedLayout(
        title="FaceCLIP-SDXL",
        pipeline_class="FaceCLIPStableDiffusionXLPipeline",
        pipeline_module="faceclip.pipelines.sdxl.pipeline_faceclip_sdxl",
        encoder_class="FaceCLIPEncoder",
        encoder_module="faceclip.models.encoder",
        components=("vae", "unet", "scheduler", "faceclip_encoder"),
    )

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        faceclip_encoder: FaceCLIPEncoder,
    ):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, faceclip_encoder=faceclip_encoder)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.init_face_state()
        self._guidance_scale = DEFAULTS.guidance_scale
        self._guidance_rescale = 0.0
        self._cross_attention_kwargs = None
        self._denoising_end = None
        self._num_timesteps = 0
        self._interrupt = False

    # ------------------------------------------------------------------ loading and saving (SavedLayoutMixin)

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ) -> str:
        """Load an SDXL LoRA into the UNet, in any format stock SDXL takes (diffusers, kohya / A1111, ...).

        Also takes the path of the LoRA file itself. ``faceclip train stage2`` writes diffusers' format with the
        adapter's rank and alpha in the header, so the training-time scale ``alpha / rank`` is kept. Text-encoder
        LoRA weights are skipped with a warning: the FaceCLIP encoder takes the place of SDXL's text encoders.

        Args:
            pretrained_model_name_or_path_or_dict: a LoRA file, a folder or hub repo holding ``weight_name``, or
                a state dict.
            adapter_name: name of the new adapter (``None``: ``default_0``, ``default_1``, ...).
            hotswap: replace the weights of the loaded adapter ``adapter_name`` in place.
            **kwargs: diffusers' ``lora_state_dict`` arguments (``weight_name``, ``subfolder``, ``revision``, ...).

        Returns:
            The adapter's name.

        Raises:
            FileNotFoundError: a local path that does not exist.
            ValueError: no UNet LoRA weights in the file.
        """
        source, kwargs = _lora_source(pretrained_model_name_or_path_or_dict, kwargs)
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", None)
        state_dict, network_alphas, metadata = self.lora_state_dict(
            source, unet_config=self.unet.config, return_lora_metadata=True, **kwargs
        )
        where = source if not isinstance(source, dict) else "the state dict"
        if isinstance(source, str) and kwargs.get("weight_name"):
            where = os.path.join(source, kwargs["weight_name"])
        unet_state, unet_alphas = _unet_lora_part(state_dict, network_alphas, where, f"{self.unet_name}.")
        before = set(getattr(self.unet, "peft_config", {}) or {})
        extra = {} if low_cpu_mem_usage is None else {"low_cpu_mem_usage": low_cpu_mem_usage}
        self.load_lora_into_unet(
            unet_state, network_alphas=unet_alphas, unet=self.unet, adapter_name=adapter_name,
            metadata=metadata, _pipeline=self, hotswap=hotswap, **extra,
        )  # fmt: skip
        added = sorted(set(getattr(self.unet, "peft_config", {}) or {}) - before)
        return added[0] if added else adapter_name

    def fuse_lora(
        self,
        components: list[str] | None = None,
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        """diffusers' ``fuse_lora``, on the UNet (the only component that takes LoRAs here) by default."""
        LoraBaseMixin.fuse_lora(
            self, components=components or ["unet"], lora_scale=lora_scale, safe_fusing=safe_fusing,
            adapter_names=adapter_names, **kwargs,
        )  # fmt: skip

    def unfuse_lora(self, components: list[str] | None = None, **kwargs) -> None:
        """diffusers' ``unfuse_lora``, on the UNet by default."""
        LoraBaseMixin.unfuse_lora(self, components=components or ["unet"], **kwargs)

    # ------------------------------------------------------------------ defaults and state

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SDXL's VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> tuple[int, int]:
        """``(height, width)`` when none is given: the released 1152 x 864, scaled to the UNet's native size.

        As diffusers derives its default from ``unet.config.sample_size``, tiny components get a tiny default
        (see :meth:`faceclip.model_family.GenerationDefaults.size_for`).
        """
        return DEFAULTS.size_for(self.unet.config.sample_size * self.vae_scale_factor)

    @property
    def default_height(self) -> int:
        return self.default_size[0]

    @property
    def default_width(self) -> int:
        return self.default_size[1]

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight of the running (or last) call."""
        return self._guidance_scale

    @property
    def guidance_rescale(self) -> float:
        return self._guidance_rescale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Guidance runs when ``guidance_scale > 1`` and the UNet is not guidance-distilled."""
        return self._guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    @property
    def cross_attention_kwargs(self) -> dict[str, Any] | None:
        return self._cross_attention_kwargs

    @property
    def denoising_end(self) -> float | None:
        return self._denoising_end

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the running (or last) call, after ``denoising_end``."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (e.g. in ``callback_on_step_end``) to skip the remaining steps."""
        return self._interrupt

    # ------------------------------------------------------------------ inputs

    def check_inputs(
        self,
        face_image: object,
        prompt: str | list[str] | None,
        height: int,
        width: int,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> None:
        """Validate the arguments of :meth:`__call__`, once per call (including the face tensor's values)."""
        if height % 8 or width % 8 or height <= 0 or width <= 0:
            raise ValueError(
                f"height and width must be positive multiples of 8; got height={height}, width={width}."
            )
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1; got {num_images_per_prompt}.")
        unknown = [
            k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs
        ]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {unknown} are not available; choose from "
                f"{self._callback_tensor_inputs}."
            )
        self._check_embeddings(
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds
        )
        check_prompt_inputs(face_image, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds)
        check_negative_embeds(
            negative_prompt, prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds
        )
        if isinstance(face_image, PreparedFace | torch.Tensor):
            check_face_values(face_image.tensor if isinstance(face_image, PreparedFace) else face_image)

    def _check_embeddings(self, prompt_embeds, pooled, negative_embeds, negative_pooled) -> None:
        """Precomputed embeddings: float tensors, finite, of shape (B, 77, D) (D: the UNet's cross-attention
        width) and (B, P) (P: what the UNet's added conditioning leaves after the time ids), B >= 1."""
        config = self.unet.config
        width = config.cross_attention_dim
        added, time_ids = config.projection_class_embeddings_input_dim, config.addition_time_embed_dim
        pooled_width = added - 6 * time_ids if added and time_ids else "P"
        for name, embeds, trailing in (
            ("prompt_embeds", prompt_embeds, (77, width)),
            ("negative_prompt_embeds", negative_embeds, (77, width)),
            ("pooled_prompt_embeds", pooled, (pooled_width,)),
            ("negative_pooled_prompt_embeds", negative_pooled, (pooled_width,)),
        ):
            check_embeds(name, embeds, trailing)

    # ------------------------------------------------------------------ embeddings

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        face_image: FaceInput | PreparedFace | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        face_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """SDXL's ``encode_prompt``, with one face for all prompts: the face is aligned and encoded once.

        Args:
            prompt: one prompt or a list of B (``None`` when ``prompt_embeds`` is given).
            face_image: a photo (path, PIL image, array), an aligned face tensor (3, H, W) in [0, 1], or a
                :meth:`prepare_face` result; required with ``prompt``.
            device: where the embeddings go (default: the pipeline's execution device).
            num_images_per_prompt: each row is repeated this many times (prompt-major).
            do_classifier_free_guidance: also return the negative embeddings (computed once per text, cached).
            negative_prompt: ``None`` = the released model's negative prompt; a string, or one per prompt.
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds:
                (B, 77, D) and (B, P) computed before (no face needed with ``prompt_embeds``). ``face_index``
                picks a face when a photo shows several.

        Returns:
            ``(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)``, each
            with ``B * num_images_per_prompt`` rows ((N, 77, D) and (N, P); D = 2048 and P = 1280 for
            FaceCLIP-SDXL); the negatives are ``None`` without guidance unless passed in.
        """
        device = device or self._execution_device
        _check_images_per_prompt(num_images_per_prompt)
        self._check_embeddings(
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds
        )
        if prompt_embeds is None:
            if face_image is None or prompt is None:
                raise ValueError("encode_prompt: pass prompt and face_image, or prompt_embeds.")
            prompt_embeds, pooled_prompt_embeds = self.encode_face_prompts(
                face_image, check_prompts(prompt, "prompt"), device, face_index
            )
        _check_rows(prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negatives = negative_prompts_for(
                negative_prompt, prompt_embeds.shape[0], DEFAULTS.negative_prompt
            )
            negative_prompt_embeds, negative_pooled_prompt_embeds = self.encode_negative_prompt(
                negatives, device
            )
        dtype = self.unet.dtype if self.unet is not None else prompt_embeds.dtype
        n = num_images_per_prompt
        return (
            per_image(prompt_embeds, n, device, dtype),
            per_image(negative_prompt_embeds, n, device, dtype),
            per_image(pooled_prompt_embeds, n, device),
            per_image(negative_pooled_prompt_embeds, n, device),
        )

    def run_encoder(self, faces, prompts):
        """One FaceCLIP encoder call; ``faces=None`` is the no-face path (a black face, no identity token)."""
        has_face = torch.full((len(prompts),), faces is not None, dtype=torch.bool)
        out = self.faceclip_encoder(face_images=faces, prompts=prompts, has_face=has_face)
        return out.prompt_embeds, out.pooled_prompt_embeds

    # ------------------------------------------------------------------ denoising helpers

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise (batch_size, C, height / f, width / f) scaled for the scheduler (f = vae_scale_factor)."""
        shape = (
            batch_size,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator: {len(generator)} generators for {batch_size} images (prompts x num_images_per_prompt); "
                "pass one per image or a single one."
            )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}.")
        else:
            latents = latents.to(device)
        return latents * self.scheduler.init_noise_sigma

    def _get_add_time_ids(
        self, original_size, crops_coords_top_left, target_size, dtype: torch.dtype, pooled_dim: int
    ) -> torch.Tensor:
        """SDXL's micro-conditioning (1, 6): original size, crop top-left and target size, as (h, w) pairs."""
        time_ids = [*original_size, *crops_coords_top_left, *target_size]
        given = self.unet.config.addition_time_embed_dim * len(time_ids) + pooled_dim
        expected = self.unet.add_embedding.linear_1.in_features
        if given != expected:
            raise ValueError(
                f"The UNet expects added conditioning of width {expected}, but {len(time_ids)} time ids and pooled "
                f"embeddings of width {pooled_dim} give {given}; the UNet and the encoder do not belong together."
            )
        return torch.tensor([time_ids], dtype=dtype)

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """``eta`` and ``generator`` for schedulers whose ``step`` takes them (DDIM, ancestral samplers)."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        extra = {"eta": eta, "generator": generator}
        return {k: v for k, v in extra.items() if k in accepted}

    def _truncate_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Keep the steps above ``denoising_end`` (a fraction in (0, 1)) of the noise schedule."""
        end = self.denoising_end
        if not isinstance(end, float) or not 0 < end < 1:
            return timesteps
        train_steps = self.scheduler.config.num_train_timesteps
        cutoff = round(train_steps - end * train_steps)
        return timesteps[: int((timesteps >= cutoff).sum())]

    def decode_latents(self, latents: torch.Tensor, output_type: str) -> Any:
        """Latents (N, C, h, w) to images in ``output_type``; an fp16 VAE with ``force_upcast`` decodes in fp32."""
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.vae.to(dtype=torch.float32)
        latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
        config = self.vae.config
        if (
            getattr(config, "latents_mean", None) is not None
            and getattr(config, "latents_std", None) is not None
        ):
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        image = self.vae.decode(latents.to(get_module_execution_device(self.vae)), return_dict=False)[0]
        if upcast:
            self.vae.to(dtype=torch.float16)
        return self.image_processor.postprocess(image, output_type=output_type)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        face_image: FaceInput | PreparedFace | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float = DEFAULTS.guidance_scale,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        denoising_end: float | None = None,
        eta: float = 0.0,
        guidance_rescale: float = 0.0,
        cross_attention_kwargs: dict[str, Any] | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        negative_original_size: tuple[int, int] | None = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: tuple[int, int] | None = None,
        face_index: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> FaceCLIPStableDiffusionXLPipelineOutput | tuple:
        """Generate images of the person in ``face_image``.

        Args:
            face_image: a photo (path, PIL image, HxWx3 array; the face is detected and aligned) or an aligned
                face tensor (3, H, W) in [0, 1].
            prompt: one prompt or a list; each gets ``num_images_per_prompt`` images.
            negative_prompt: ``None`` = the released model's negative prompt; a string for all prompts, or a
                list with one entry per prompt.
            num_images_per_prompt: images per prompt.
            height, width: output size in pixels (multiples of 8); default :attr:`default_size` (1152 x 864
                for the released model).
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight; <= 1 turns guidance off (no negative pass).
            generator: a ``torch.Generator`` or one per image, for reproducible latents.
            latents: initial latents (B * num_images_per_prompt, 4, height / 8, width / 8).
            prompt_embeds, pooled_prompt_embeds: (B, 77, D) and (B, P) from :meth:`encode_prompt` instead of
                ``face_image`` + ``prompt``.
            negative_prompt_embeds, negative_pooled_prompt_embeds: (B, 77, D) and (B, P) unconditional embeddings
                instead of ``negative_prompt`` (e.g. from :meth:`encode_negative_prompt`).
            timesteps, sigmas: custom schedules, for schedulers whose ``set_timesteps`` takes them.
            denoising_end: stop after this fraction (0, 1) of the schedule (SDXL's base + refiner split).
            eta: DDIM's eta (schedulers that take it).
            guidance_rescale: rescale the guided noise prediction (arXiv 2305.08891, 3.4); 0 = off.
            cross_attention_kwargs: passed to the UNet's attention processors (``{"scale": s}`` scales LoRAs).
            original_size, crops_coords_top_left, target_size: SDXL's micro-conditioning, ``(height, width)``
                pairs (default: the output size and (0, 0)); ``negative_*`` the same for the unconditional pass.
            face_index: which detected face to use when the photo shows several (largest first).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`FaceCLIPStableDiffusionXLPipelineOutput` rather than a tuple.
            callback_on_step_end: called as ``fn(pipe, step, timestep, callback_kwargs)`` after every step with
                this pipeline; returns the (possibly changed) ``callback_kwargs``. A diffusers ``PipelineCallback``
                brings its own tensor inputs.
            callback_on_step_end_tensor_inputs: the tensors in ``callback_kwargs`` (of ``latents``,
                ``prompt_embeds``, ``add_text_embeds``, ``add_time_ids``; default ``["latents"]``).
        """
        if isinstance(callback_on_step_end, PipelineCallback | MultiPipelineCallbacks):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        height = height or self.default_height
        width = width or self.default_width
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)

        # 1. Check inputs (once per call, the face tensor's values included)
        self.check_inputs(
            face_image, prompt, height, width, negative_prompt, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, num_images_per_prompt, tensor_inputs,
        )  # fmt: skip
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._cross_attention_kwargs = cross_attention_kwargs
        self._denoising_end = denoising_end
        self._interrupt = False
        device = self._execution_device

        # 2. Face and embeddings: the face is aligned and encoded once for all prompts; negatives are cached
        face = None if prompt_embeds is not None else self.prepare_face(face_image, face_index=face_index)
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = self.encode_prompt(
            prompt, face, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
        )  # fmt: skip
        batch_size = prompt_embeds.shape[0]

        # 3. Timesteps and initial latents
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, timesteps, sigmas
        )
        latents = self.prepare_latents(
            batch_size, height, width, prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 4. SDXL's added conditioning; the unconditional half goes first in the guided batch
        pooled_dim = int(pooled_prompt_embeds.shape[-1])
        add_time_ids = self._get_add_time_ids(
            original_size, crops_coords_top_left, target_size, prompt_embeds.dtype, pooled_dim
        )
        negative_add_time_ids = add_time_ids
        if negative_original_size is not None and negative_target_size is not None:
            negative_add_time_ids = self._get_add_time_ids(
                negative_original_size, negative_crops_coords_top_left, negative_target_size,
                prompt_embeds.dtype, pooled_dim,
            )  # fmt: skip
        add_text_embeds = pooled_prompt_embeds
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
            add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds])
            add_time_ids = torch.cat([negative_add_time_ids, add_time_ids])
        prompt_embeds = prompt_embeds.to(device)
        add_text_embeds = add_text_embeds.to(device)
        add_time_ids = add_time_ids.to(device).repeat(batch_size, 1)

        # 5. Denoising loop
        num_warmup_steps = max(len(timesteps) - num_inference_steps * self.scheduler.order, 0)
        timesteps = self._truncate_timesteps(timesteps)
        num_inference_steps = len(timesteps) if self.denoising_end is not None else num_inference_steps
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            guidance = torch.tensor(self.guidance_scale - 1).repeat(batch_size)
            timestep_cond = _guidance_embedding(guidance, self.unet.config.time_cond_proj_dim)
            timestep_cond = timestep_cond.to(device=device, dtype=latents.dtype)
        self._num_timesteps = len(timesteps)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    timestep_cond=timestep_cond,
                    cross_attention_kwargs=self.cross_attention_kwargs,
                    added_cond_kwargs={"text_embeds": add_text_embeds, "time_ids": add_time_ids},
                    return_dict=False,
                )[0]
                if self.do_classifier_free_guidance:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
                    if self.guidance_rescale > 0.0:
                        noise_pred = rescale_noise_cfg(
                            noise_pred, noise_text, guidance_rescale=self.guidance_rescale
                        )
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[
                    0
                ]

                if callback_on_step_end is not None:
                    available = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "add_text_embeds": add_text_embeds,
                        "add_time_ids": add_time_ids,
                    }
                    outputs = callback_on_step_end(self, i, t, {k: available[k] for k in tensor_inputs})
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    add_text_embeds = outputs.pop("add_text_embeds", add_text_embeds)
                    add_time_ids = outputs.pop("add_time_ids", add_time_ids)
                if i == len(timesteps) - 1 or (
                    i + 1 > num_warmup_steps and (i + 1) % self.scheduler.order == 0
                ):
                    progress_bar.update()

        # 6. Decode, then offload all models
        images = latents if output_type == "latent" else self.decode_latents(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return FaceCLIPStableDiffusionXLPipelineOutput(images=images, face=face)


def _lora_source(source, kwargs: dict) -> tuple[str | dict, dict]:
    """A LoRA argument as diffusers takes it: a file path becomes its folder plus ``weight_name``.

    Raises:
        FileNotFoundError: a local path that does not exist (and is no hub repo id).
    """
    if isinstance(source, dict):
        return source, kwargs
    path = os.fspath(source)
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), {**kwargs, "weight_name": os.path.basename(path)}
    if not os.path.isdir(path):
        from faceclip.hub import is_hub_id

        if not is_hub_id(path):
            raise FileNotFoundError(f"load_lora_weights: '{path}' is neither a LoRA file nor a folder.")
    kwargs.setdefault("weight_name", "pytorch_lora_weights.safetensors" if os.path.isdir(path) else None)
    if kwargs["weight_name"] is None:
        del kwargs["weight_name"]
    return path, kwargs


def _check_rows(
    prompt_embeds: torch.Tensor, pooled: torch.Tensor | None, negative: torch.Tensor | None
) -> None:
    """One row per prompt: ``pooled`` (required) and ``negative`` (optional) have as many rows as the prompts."""
    if pooled is None or pooled.shape[0] != prompt_embeds.shape[0]:
        raise ValueError(
            "encode_prompt: prompt_embeds needs pooled_prompt_embeds with the same batch size "
            "(both come from pipe.encode_prompt)."
        )
    if negative is not None and negative.shape[0] != prompt_embeds.shape[0]:
        raise ValueError(
            f"negative_prompt_embeds: {negative.shape[0]} rows for {prompt_embeds.shape[0]} prompts; pass one "
            "row per prompt (pipe.encode_negative_prompt gives them)."
        )


def _unet_lora_part(
    state_dict: dict, network_alphas: dict | None, where: str, prefix: str
) -> tuple[dict, dict | None]:
    """The UNet weights and alphas of a converted SDXL LoRA; text-encoder weights are dropped with a warning.

    Raises:
        ValueError: no UNet weights.
    """
    text_keys = [k for k in state_dict if k.startswith(TEXT_ENCODER_LORA_PREFIXES)]
    if text_keys:
        logger.warning(
            "load_lora_weights: skipped %d text-encoder LoRA weights of %s (e.g. %s): FaceCLIP-SDXL has no SDXL "
            "text encoders (the FaceCLIP encoder replaces them); only the UNet part is loaded.",
            len(text_keys), where, text_keys[0],
        )  # fmt: skip
    unet_state = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not unet_state:
        raise ValueError(
            f"load_lora_weights: {where} holds no UNet LoRA weights (keys starting with 'unet.', or kohya's "
            "'lora_unet_'); save LoRAs with faceclip.training.stage2.save_unet_lora or diffusers' "
            "StableDiffusionXLPipeline.save_lora_weights."
        )
    alphas = None
    if network_alphas:
        alphas = {k: v for k, v in network_alphas.items() if not k.startswith(TEXT_ENCODER_LORA_PREFIXES)}
    return unet_state, alphas


def _guidance_embedding(guidance: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of guidance weights (N,), for guidance-distilled UNets (``time_cond_proj_dim``)."""
    half = dim // 2
    frequencies = torch.exp(
        -torch.log(torch.tensor(10000.0)) * torch.arange(half, dtype=torch.float32) / (half - 1)
    )
    angles = (guidance.float() * 1000.0)[:, None] * frequencies[None]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.nn.functional.pad(embedding, (0, dim % 2))


def _check_images_per_prompt(num_images_per_prompt) -> None:
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be a whole number >= 1; got {num_images_per_prompt!r}.")
