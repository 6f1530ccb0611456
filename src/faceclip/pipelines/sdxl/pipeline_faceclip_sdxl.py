"""FaceCLIP-SDXL: one face photo and a prompt in, new photos of that person out.

FaceCLIP (Liu et al., arXiv 2504.14202) replaces SDXL's two CLIP text encoders by a joint identity-text
encoder whose outputs have exactly SDXL's shapes (``prompt_embeds`` (B, 77, 2048) and
``pooled_prompt_embeds`` (B, 1280)), next to a fine-tuned SDXL UNet. This pipeline therefore only prepares
the face and the embeddings; denoising and decoding are diffusers' own ``StableDiffusionXLPipeline``, called
with those embeddings on the same VAE, UNet and scheduler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from PIL import Image

from faceclip.pipelines.embedding_cache import CacheInfo, EmbeddingCache
from faceclip.pipelines.face_input import FaceInput, PreparedFace, prepare_face
from faceclip.pipelines.sdxl.family import DEFAULTS

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.face import FaceAnalyzer
    from faceclip.models import FaceCLIPEncoder

logger = logging.getLogger(__name__)


@dataclass
class FaceCLIPStableDiffusionXLPipelineOutput(BaseOutput):
    """Output of :class:`FaceCLIPStableDiffusionXLPipeline`.

    Attributes:
        images: ``num_prompts * num_images_per_prompt`` PIL images (prompt-major), or an array / tensor
            depending on ``output_type``.
        face: the aligned face that conditioned them (``None`` when embeddings were passed in).
    """

    images: list[Image.Image] | Any
    face: PreparedFace | None = None


class FaceCLIPStableDiffusionXLPipeline(DiffusionPipeline):
    """Identity-preserving text-to-image generation with FaceCLIP-SDXL.

    Args:
        vae: SDXL's ``AutoencoderKL``.
        unet: the FaceCLIP-SDXL ``UNet2DConditionModel`` (SDXL architecture, fine-tuned weights).
        scheduler: a diffusers scheduler (the released model uses SDXL base's ``EulerDiscreteScheduler``).
        faceclip_encoder: the joint identity-text encoder (``faceclip.models.FaceCLIPEncoder``).
    """

    model_cpu_offload_seq = "faceclip_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]  # noqa: RUF012

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        faceclip_encoder: FaceCLIPEncoder,
    ):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, faceclip_encoder=faceclip_encoder)
        self.negative_cache = EmbeddingCache()
        self._face_analyzer: FaceAnalyzer | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        **kwargs,
    ) -> FaceCLIPStableDiffusionXLPipeline:
        """Load a pipeline saved by :meth:`save_pretrained` (a local folder or a hub repo in that layout).

        Args:
            pretrained_model_name_or_path: folder or hub id with ``model_index.json``, ``vae/``, ``unet/``,
                ``scheduler/`` and ``faceclip_encoder/``.
            torch_dtype: dtype of the model weights; ``None`` keeps the saved dtype.
            **kwargs: ``revision`` (branch, tag or commit) for hub repos.

        Raises:
            faceclip.hub.WeightsNotFoundError: a file is missing (with where we looked and how to get it).
        """
        from faceclip.pipelines.sdxl.loading import load_components

        unknown = sorted(set(kwargs) - {"revision"})
        if unknown:
            raise TypeError(
                f"from_pretrained: unsupported argument(s) {', '.join(unknown)}; supported: torch_dtype, revision "
                "(set HF_HUB_OFFLINE=1 for the local cache only; HF_HUB_CACHE / HF_TOKEN as usual)."
            )
        return cls(**load_components(pretrained_model_name_or_path, torch_dtype=torch_dtype, **kwargs))

    def load_lora_weights(
        self,
        path_or_dir: str | os.PathLike,
        adapter_name: str | None = None,
        weight_name: str = "pytorch_lora_weights.safetensors",
    ) -> str:
        """Load a UNet LoRA (e.g. ``final/lora/`` of ``faceclip train stage2`` with ``model.lora.enabled``).

        The file is diffusers' SDXL LoRA format: ``unet.``-prefixed weights and, in the safetensors header, the
        adapter's rank and alpha (so the training-time scale ``alpha / rank`` is kept). It is added to
        ``self.unet`` through ``unet.load_lora_adapter`` and is active afterwards.

        Args:
            path_or_dir: the LoRA file, a folder holding ``weight_name``, or a hub repo id.
            adapter_name: name of the new adapter (``None``: ``default_0``, ``default_1``, ...).
            weight_name: the file inside ``path_or_dir`` when it is a folder or a repo.

        Returns:
            The adapter's name.

        Raises:
            FileNotFoundError: a local path that does not exist.
            ValueError: the file holds no ``unet.`` LoRA weights.
        """
        path = os.fspath(path_or_dir)
        if os.path.isfile(path):
            path, weight_name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
        elif not os.path.isdir(path):
            owner, _, name = path.partition("/")
            if os.path.isabs(path) or owner.startswith(".") or not name or "/" in name:  # not a hub repo id
                raise FileNotFoundError(f"load_lora_weights: '{path}' is neither a LoRA file nor a folder.")
        before = set(getattr(self.unet, "peft_config", {}) or {})
        self.unet.load_lora_adapter(path, prefix="unet", adapter_name=adapter_name, weight_name=weight_name)
        added = sorted(set(getattr(self.unet, "peft_config", {}) or {}) - before)
        if not added:
            raise ValueError(
                f"load_lora_weights: '{os.path.join(path, weight_name)}' holds no UNet LoRA weights (keys starting "
                "with 'unet.'); save LoRAs with faceclip.training.stage2.save_unet_lora or diffusers' "
                "StableDiffusionXLPipeline.save_lora_weights."
            )
        return added[0]

    # ------------------------------------------------------------------ defaults

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

    # ------------------------------------------------------------------ face

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
        """Detect and align a photo (or check an aligned tensor); see :func:`faceclip.pipelines.prepare_face`."""
        if isinstance(face_image, PreparedFace | torch.Tensor):
            return prepare_face(face_image)
        return prepare_face(face_image, analyzer=self.face_analyzer, face_index=face_index)

    # ------------------------------------------------------------------ inputs

    def check_inputs(
        self,
        face_image: object,
        prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        height: int,
        width: int,
    ) -> list[str] | None:
        """Validate the arguments; return the prompts as a list (``None`` when embeddings are given)."""
        if height % 8 or width % 8 or height <= 0 or width <= 0:
            raise ValueError(
                f"height and width must be positive multiples of 8; got height={height}, width={width}."
            )
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1; got {num_images_per_prompt}.")
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
            return None
        if prompt is None:
            raise ValueError("prompt: required (a string or a list of strings), or pass prompt_embeds.")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings; got {prompt!r}.")
        if face_image is None:
            raise ValueError(
                "face_image: required (a photo path, PIL image, array, or an aligned face tensor)."
            )
        if isinstance(negative_prompt, list) and len(negative_prompt) != len(prompts):
            raise ValueError(
                f"negative_prompt: a list must have one entry per prompt ({len(prompts)}); "
                f"got {len(negative_prompt)}. Pass a single string to use it for every prompt."
            )
        return prompts

    # ------------------------------------------------------------------ embeddings

    @torch.no_grad()
    def encode_prompt(
        self,
        face: FaceInput | PreparedFace,
        prompts: str | list[str],
        device: torch.device | None = None,
        face_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint face-text embeddings for each prompt, with one face for all of them.

        Args:
            face: a photo (path, PIL image, array), an aligned face tensor, or a :meth:`prepare_face` result.
            prompts: one prompt or a list.
            device: where to compute (default: the pipeline's execution device).
            face_index: which detected face to use when a photo shows several.

        Returns:
            prompt_embeds (B, 77, D) and pooled_prompt_embeds (B, P) for B = len(prompts) (D = 2048 and
            P = 1280 for FaceCLIP-SDXL).
        """
        device = device or self._execution_device
        encoder = self.faceclip_encoder
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not isinstance(face, PreparedFace):
            face = self.prepare_face(face, face_index=face_index)
        faces = face.tensor.to(device=device, dtype=encoder.dtype).expand(len(prompts), -1, -1, -1)
        has_face = torch.ones(len(prompts), dtype=torch.bool, device=device)
        out = encoder(face_images=faces, prompts=prompts, has_face=has_face)
        return out.prompt_embeds, out.pooled_prompt_embeds

    @torch.no_grad()
    def encode_negative_prompt(
        self, negative_prompts: list[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unconditional embeddings, one row per entry, computed once per distinct text and cached.

        As in the released model, the negative path runs a black face through the encoder without the id
        token, so it depends on the encoder weights and is not a plain text embedding.

        Returns:
            negative_prompt_embeds (B, 77, D) and negative_pooled_prompt_embeds (B, P).
        """
        device = device or self._execution_device
        encoder = self.faceclip_encoder
        rows = {}
        weights = _weights_version(encoder)
        for text in dict.fromkeys(negative_prompts):
            key = (text, str(device), encoder.dtype, weights)
            cached = self.negative_cache.get(key)
            if cached is None:
                # Every row of the negative batch is identical, so one row is computed and repeated.
                no_face = torch.zeros(1, dtype=torch.bool, device=device)
                out = encoder(face_images=None, prompts=[text], has_face=no_face)
                cached = (out.prompt_embeds, out.pooled_prompt_embeds)
                self.negative_cache.put(key, cached)
            rows[text] = cached
        embeds = torch.cat([rows[text][0] for text in negative_prompts])
        pooled = torch.cat([rows[text][1] for text in negative_prompts])
        return embeds, pooled

    def negative_cache_info(self) -> CacheInfo:
        """Hits, misses and size of the negative-embedding cache."""
        return self.negative_cache.info()

    # ------------------------------------------------------------------ generation

    def _sdxl_pipeline(self) -> StableDiffusionXLPipeline:
        sdxl = StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=None,
            text_encoder_2=None,
            tokenizer=None,
            tokenizer_2=None,
            unet=self.unet,
            scheduler=self.scheduler,
            add_watermarker=False,
        )
        sdxl.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return sdxl

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
        face_index: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **sdxl_kwargs: Any,
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
            guidance_scale: classifier-free guidance weight; <= 1 turns guidance off.
            generator: a ``torch.Generator`` or one per image, for reproducible latents.
            latents: initial latents (B * num_images_per_prompt, 4, height/8, width/8).
            prompt_embeds, pooled_prompt_embeds: embeddings from :meth:`encode_prompt` instead of
                ``face_image`` + ``prompt``.
            face_index: which detected face to use when the photo shows several (largest first).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`FaceCLIPStableDiffusionXLPipelineOutput` rather than a tuple.
            callback_on_step_end: called as ``fn(pipe, step, timestep, callback_kwargs)`` after every step
                (``pipe`` is the ``StableDiffusionXLPipeline`` doing the denoising); returns ``callback_kwargs``.
            callback_on_step_end_tensor_inputs: the tensors passed in ``callback_kwargs``.
            **sdxl_kwargs: further ``StableDiffusionXLPipeline`` arguments (``guidance_rescale``,
                ``original_size``, ``denoising_end``, ``negative_prompt_embeds``, ...).
        """
        height = height or self.default_height
        width = width or self.default_width

        # 1. Check inputs
        prompts = self.check_inputs(
            face_image,
            prompt,
            prompt_embeds,
            pooled_prompt_embeds,
            negative_prompt,
            num_images_per_prompt,
            height,
            width,
        )
        device = self._execution_device

        # 2. Face and prompt embeddings: the face is aligned and encoded once for all prompts
        face = None
        if prompt_embeds is None:
            face = self.prepare_face(face_image, face_index=face_index)
            prompt_embeds, pooled_prompt_embeds = self.encode_prompt(face, prompts, device)
        batch_size = prompt_embeds.shape[0]

        # 3. Negative embeddings (cached per negative prompt)
        if "negative_prompt_embeds" in sdxl_kwargs and negative_prompt is not None:
            raise ValueError("Pass either negative_prompt or negative_prompt_embeds, not both.")
        if guidance_scale > 1 and "negative_prompt_embeds" not in sdxl_kwargs:
            if negative_prompt is None:
                negative_prompt = DEFAULTS.negative_prompt
            negatives = (
                [negative_prompt] * batch_size if isinstance(negative_prompt, str) else negative_prompt
            )
            embeds, pooled = self.encode_negative_prompt(negatives, device)
            sdxl_kwargs.update(negative_prompt_embeds=embeds, negative_pooled_prompt_embeds=pooled)

        # 4. Denoise and decode with diffusers' SDXL pipeline (classifier-free guidance batched there)
        result = self._sdxl_pipeline()(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            num_images_per_prompt=num_images_per_prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            latents=latents,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs or ["latents"],
            **sdxl_kwargs,
        )

        # 5. Offload all models
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result.images,)
        return FaceCLIPStableDiffusionXLPipelineOutput(images=result.images, face=face)


def _weights_version(module: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever the weights change: in place (``load_state_dict`` bumps tensor versions) or replaced."""
    params = list(module.parameters())
    return (id(module), id(params[0]) if params else 0, sum(p._version for p in params))
