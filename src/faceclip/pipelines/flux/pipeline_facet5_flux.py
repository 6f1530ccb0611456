"""FaceT5-FLUX: one face photo and a prompt in, new photos of that person out, on FLUX.1-dev.

The FaceT5 encoder replaces FLUX's two text encoders: its ``prompt_embeds`` (B, 512, 4096) and
``pooled_prompt_embeds`` (B, 768) have exactly the shapes FLUX's T5 and CLIP-L give. :class:`FaceT5FluxPipeline`
is a diffusers ``FluxPipeline`` whose text encoding is the FaceT5 encoder's; denoising *is* ``FluxPipeline``'s
(``__call__`` computes the embeddings and hands them to ``FluxPipeline.__call__``), so every FLUX option,
offloading mode, quantized transformer and LoRA works as it does there.
"""

# No ``from __future__ import annotations`` here: diffusers reads the constructor's type hints at run time.

import logging
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from transformers import PreTrainedTokenizerBase

from faceclip.models.facet5_encoder import FaceT5Encoder
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
from faceclip.pipelines.flux.family import DEFAULTS
from faceclip.pipelines.saved_layout import SavedLayout, SavedLayoutMixin

logger = logging.getLogger(__name__)


class FaceT5FluxPipelineOutput(FacePipelineOutput):
    """Output of :class:`FaceT5FluxPipeline`: ``images`` and the aligned ``face`` (see :class:`FacePipelineOutput`)."""


class FaceT5FluxPipeline(FacePipelineMixin, SavedLayoutMixin, FluxPipeline):
    """Identity-preserving text-to-image generation with FaceT5-FLUX.

    Args:
        scheduler: FLUX.1-dev's ``FlowMatchEulerDiscreteScheduler``.
        vae: FLUX.1-dev's ``AutoencoderKL`` (16 latent channels).
        transformer: the FaceT5-FLUX ``FluxTransformer2DModel`` (FLUX.1-dev architecture, fine-tuned weights).
        faceclip_encoder: the FaceT5 encoder (face ViT, T5 and CLIP-L, fuser); it replaces FLUX's text encoders
            and tokenizers.
        tokenizer_2: the T5 tokenizer (saved and loaded with the pipeline); ``None`` keeps the encoder's own
            ``t5_tokenizer``.
    """

    model_cpu_offload_seq = "faceclip_encoder->transformer->vae"
    _optional_components = ["tokenizer_2"]  # noqa: RUF012 (diffusers' class attribute)
    _lora_loadable_modules = ["transformer"]  # noqa: RUF012 (the text side is the FaceT5 encoder)
    saved_layout = SavedLayout(
        title="FaceT5-FLUX",
        pipeline_class="FaceT5FluxPipeline",
        pipeline_module="faceclip.pipelines.flux.pipeline_facet5_flux",
        encoder_class="FaceT5Encoder",
        encoder_module="faceclip.models.facet5_encoder",
        components=("scheduler", "vae", "transformer", "faceclip_encoder"),
    )
    text_encoder = None
    """FLUX's CLIP text encoder: none here (the FaceT5 encoder holds its own CLIP-L); LoRA loading reads it."""
    text_encoder_2 = None
    tokenizer = None

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        transformer: FluxTransformer2DModel,
        faceclip_encoder: FaceT5Encoder,
        tokenizer_2: PreTrainedTokenizerBase | None = None,
    ):
        DiffusionPipeline.__init__(self)
        if tokenizer_2 is None:
            tokenizer_2 = faceclip_encoder.t5_tokenizer
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            transformer=transformer,
            faceclip_encoder=faceclip_encoder,
            tokenizer_2=tokenizer_2,
        )
        faceclip_encoder.t5_tokenizer = tokenizer_2
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor * 2)
        self.tokenizer_max_length = faceclip_encoder.clip_context_length
        self.default_sample_size = vae.config.sample_size // self.vae_scale_factor
        self.init_face_state()

    # ------------------------------------------------------------------ defaults

    @property
    def default_size(self) -> tuple[int, int]:
        """``(height, width)`` when none is given: the released 1152 x 864, scaled to the VAE's native size
        (``vae.config.sample_size``: 1024 for FLUX.1-dev), in multiples of 16."""
        return DEFAULTS.size_for(self.vae.config.sample_size)

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens per prompt, fixed by the encoder (512 for FaceT5-FLUX: the pads are attended)."""
        return self.faceclip_encoder.config.max_sequence_length

    # ------------------------------------------------------------------ embeddings

    def run_encoder(self, faces, prompts):
        out = self.faceclip_encoder(face_images=faces, prompts=prompts)
        return out.prompt_embeds, out.pooled_prompt_embeds

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        prompt_2: str | list[str] | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int | None = None,
        lora_scale: float | None = None,
        face_image: FaceInput | PreparedFace | None = None,
        face_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``FluxPipeline.encode_prompt``, with the face: one encoder call for all prompts.

        Args:
            prompt: one prompt or a list of B (``None`` when ``prompt_embeds`` is given).
            prompt_2: must be ``None`` or equal ``prompt``: the FaceT5 encoder reads one prompt for T5 and CLIP-L.
            device: where the embeddings go (default: the pipeline's execution device).
            num_images_per_prompt: each row is repeated this many times (prompt-major).
            prompt_embeds, pooled_prompt_embeds: (B, 512, 4096) and (B, 768) computed before.
            max_sequence_length: ``None`` or the encoder's own (512); the encoder fixes it.
            lora_scale: accepted for ``FluxPipeline``'s call; LoRAs scale through ``joint_attention_kwargs``.
            face_image: a photo or an aligned face tensor (3, H, W) in [0, 1]; required with ``prompt``.
            face_index: which face of the photo, when it shows several (largest first).

        Returns:
            ``(prompt_embeds, pooled_prompt_embeds, text_ids)``: (N, 512, 4096), (N, 768) and (512, 3) zeros,
            N = B * num_images_per_prompt.
        """
        self._check_sequence_length(max_sequence_length)
        if prompt_2 is not None and prompt_2 != prompt:
            raise ValueError(
                "prompt_2: the FaceT5 encoder reads one prompt for T5 and CLIP-L; pass prompt only."
            )
        device = device or self._execution_device
        if prompt_embeds is None:
            if face_image is None or prompt is None:
                raise ValueError("encode_prompt: pass prompt and face_image, or prompt_embeds.")
            prompt_embeds, pooled_prompt_embeds = self.encode_face_prompts(
                face_image, prompt, device, face_index
            )
        elif pooled_prompt_embeds is None:
            raise ValueError("encode_prompt: prompt_embeds needs pooled_prompt_embeds.")
        dtype = self.transformer.dtype if self.transformer is not None else prompt_embeds.dtype
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype)
        return (
            per_image(prompt_embeds, num_images_per_prompt, device, dtype),
            per_image(pooled_prompt_embeds, num_images_per_prompt, device, dtype),
            text_ids,
        )

    def _check_sequence_length(self, max_sequence_length: int | None) -> None:
        if max_sequence_length not in (None, self.max_sequence_length):
            raise ValueError(
                f"max_sequence_length: the FaceT5 encoder always gives {self.max_sequence_length} T5 tokens "
                f"(the pads are attended, so the length is part of the model); got {max_sequence_length}."
            )

    # ------------------------------------------------------------------ inputs

    def check_face_inputs(
        self,
        face_image: object,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
        true_cfg_scale: float,
    ) -> None:
        """Validate the face, prompt and embedding arguments of :meth:`__call__` before anything is encoded;
        ``FluxPipeline.check_inputs`` then checks the rest (size, callbacks) as in stock FLUX."""
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1; got {num_images_per_prompt}.")
        if not isinstance(true_cfg_scale, int | float) or not 0 <= true_cfg_scale < float("inf"):
            raise ValueError(f"true_cfg_scale must be a finite number >= 0; got {true_cfg_scale!r}.")
        check_prompt_inputs(face_image, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds)
        check_negative_embeds(
            negative_prompt, prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds
        )
        length, width = self.max_sequence_length, self.transformer.config.joint_attention_dim
        pooled = self.transformer.config.pooled_projection_dim
        for name, embeds, trailing in (
            ("prompt_embeds", prompt_embeds, (length, width)),
            ("negative_prompt_embeds", negative_prompt_embeds, (length, width)),
            ("pooled_prompt_embeds", pooled_prompt_embeds, (pooled,)),
            ("negative_pooled_prompt_embeds", negative_pooled_prompt_embeds, (pooled,)),
        ):
            check_embeds(name, embeds, trailing)
        if isinstance(face_image, PreparedFace | torch.Tensor):
            check_face_values(face_image.tensor if isinstance(face_image, PreparedFace) else face_image)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        face_image: FaceInput | PreparedFace | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        true_cfg_scale: float = DEFAULTS.true_cfg_scale,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        sigmas: list[float] | None = None,
        guidance_scale: float = DEFAULTS.guidance_scale,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        face_index: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
    ) -> FaceT5FluxPipelineOutput | tuple:
        """Generate images of the person in ``face_image``; the embeddings then go to ``FluxPipeline.__call__``.

        Args:
            face_image: a photo (path, PIL image, HxWx3 array; the face is detected and aligned) or an aligned
                face tensor (3, H, W) in [0, 1].
            prompt: one prompt or a list; each gets ``num_images_per_prompt`` images.
            negative_prompt: ``None`` = the released negative prompt (with a zero face, as released); a string
                for all prompts, or one per prompt. Used only with ``true_cfg_scale > 1``.
            true_cfg_scale: true classifier-free guidance (two transformer passes per step); <= 1 turns it off.
            height, width: output size in pixels (multiples of 16); default :attr:`default_size`.
            num_inference_steps, sigmas: the flow-matching schedule, as in ``FluxPipeline``.
            guidance_scale: FLUX.1-dev's distilled-guidance input (1.0 for FaceT5-FLUX).
            num_images_per_prompt, generator, latents: as in ``FluxPipeline`` (latents are packed:
                (N, (height / 16) * (width / 16), 4 * latent channels)).
            prompt_embeds, pooled_prompt_embeds: (B, 512, 4096) and (B, 768) from :meth:`encode_prompt` instead
                of ``face_image`` + ``prompt``; ``negative_*`` the same for the negative pass.
            face_index: which detected face to use when the photo shows several (largest first).
            output_type, return_dict, joint_attention_kwargs, callback_on_step_end,
                callback_on_step_end_tensor_inputs: as in ``FluxPipeline`` (``{"scale": s}`` scales LoRAs).
            max_sequence_length: fixed by the encoder (512); ``None`` or that value.
        """
        self.check_face_inputs(
            face_image, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds,
            negative_pooled_prompt_embeds, num_images_per_prompt, true_cfg_scale,
        )  # fmt: skip
        self._check_sequence_length(max_sequence_length)
        default_height, default_width = self.default_size
        device = self._execution_device
        face = None
        if prompt_embeds is None:
            face = self.prepare_face(face_image, face_index=face_index)
            prompt_embeds, pooled_prompt_embeds = self.encode_face_prompts(face, prompt, device)
        if true_cfg_scale > 1 and negative_prompt_embeds is None:
            negatives = negative_prompts_for(
                negative_prompt, prompt_embeds.shape[0], DEFAULTS.negative_prompt
            )
            negative_prompt_embeds, negative_pooled_prompt_embeds = self.encode_negative_prompt(
                negatives, device
            )
        images = FluxPipeline.__call__(
            self,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            true_cfg_scale=true_cfg_scale,
            height=height or default_height,
            width=width or default_width,
            num_inference_steps=num_inference_steps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            latents=latents,
            output_type=output_type,
            return_dict=False,
            joint_attention_kwargs=joint_attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs or ["latents"],
            max_sequence_length=self.max_sequence_length,
        )[0]
        if not return_dict:
            return (images,)
        return FaceT5FluxPipelineOutput(images=images, face=face)
