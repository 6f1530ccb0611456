"""Stage 2 of FaceT5-FLUX: fine-tuning the FLUX transformer on FaceT5 conditioning.

The recipe is diffusers' flow-matching one, as ``examples/dreambooth/train_dreambooth_lora_flux.py`` in the
diffusers repository trains FLUX.1-dev (written here for this project's loop): a timestep density ``u`` from
``compute_density_for_timestep_sampling`` picks an entry of the ``FlowMatchEulerDiscreteScheduler``'s
``timesteps`` / ``sigmas`` tables; the latent ``x = (z - shift_factor) * scaling_factor`` is noised as
``x_t = (1 - sigma) x + sigma * noise``; the transformer sees ``x_t`` packed into 2 x 2 patches
(``FluxPipeline._pack_latents``), FluxPipeline's image ids, zero text ids, ``timestep = t / 1000`` and the
distilled-guidance input ``model.guidance`` (1.0 for FaceT5-FLUX); the loss is the
``compute_loss_weighting_for_sd3``-weighted MSE to the velocity ``noise - x``. With FLUX.1-dev's scheduler
config (dynamic shifting) the tables are the unshifted ``sigma = t / 1000``.

The FaceT5 encoder (frozen by default; ``model.train_encoder`` trains ``face_patch_proj`` and the fuser) gives
``prompt_embeds`` (B, L, 4096) and ``pooled_prompt_embeds`` (B, 768). A dropped condition is a zero face and an
empty prompt, the released negative. All randomness is drawn per sample from its place in the data stream
(as in :mod:`faceclip.training.stage2`), so results do not depend on the number of processes.

With ``model.lora`` the run saves ``final/lora/pytorch_lora_weights.safetensors`` in diffusers' FLUX LoRA
format (:func:`save_transformer_lora`): ``FaceT5FluxPipeline.load_lora_weights("final/lora")`` and stock
``FluxPipeline.load_lora_weights`` read it. Without it, ``final/transformer`` holds the full fine-tune.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from faceclip.training.config import FluxStage2Config
from faceclip.training.stage1_facet5 import TRAINABLE_ENCODER_PARTS, load_facet5_training_encoder
from faceclip.training.stage2 import LORA_WEIGHT_NAME, Stage2Task, _stream_generator, make_ema
from faceclip.training.task import StepOutput

logger = logging.getLogger(__name__)


def load_flux_components(config: FluxStage2Config) -> dict:
    """``scheduler``, ``vae``, ``transformer`` and ``faceclip_encoder`` (with its T5 tokenizer attached).

    Raises:
        faceclip.hub.WeightsNotFoundError: weights are not available.
        ValueError: ``model.encoder`` ships no T5 tokenizer.
    """
    from faceclip.registry import load_pipeline

    mc = config.model
    pipe = load_pipeline(mc.components, family="facet5-flux", base_model=mc.base_model)
    names = ("scheduler", "vae", "transformer", "faceclip_encoder")
    components = {name: getattr(pipe, name) for name in names}
    if mc.encoder is not None:  # e.g. a stage-1 result: runs/facet5-s1/final/encoder
        tokenizer = pipe.faceclip_encoder.t5_tokenizer
        components["faceclip_encoder"] = load_facet5_training_encoder(mc.encoder, mc.seed, tokenizer)
    return components


class FluxStage2Model(nn.Module):
    """FLUX transformer + frozen VAE + FaceT5 encoder, computing the flow-matching loss of a batch.

    Args:
        transformer, vae, encoder: the ``FluxTransformer2DModel``, its VAE and the FaceT5 encoder.
        noise_scheduler: a ``FlowMatchEulerDiscreteScheduler`` (its ``timesteps`` and ``sigmas`` tables).
        config: the stage-2 config.
    """

    def __init__(self, transformer: nn.Module, vae: nn.Module, encoder: nn.Module, noise_scheduler,
                 config: FluxStage2Config):  # fmt: skip
        super().__init__()
        self.transformer, self.vae, self.encoder = transformer, vae, encoder
        self.noise_scheduler = noise_scheduler
        self.config = config
        self.latent_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> (mean, std) (C, h, w)

    def train(self, mode: bool = True) -> FluxStage2Model:
        super().train(mode)
        self.vae.eval()
        self.encoder.eval()  # a trainable fuser still runs without dropout
        return self

    def _per_sample(self, positions: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """Per-sample noise, VAE sampling noise (both ``shape``), density draw ``u`` and dropout draw, (B, ...)."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        seed, mc = self.config.run.seed, self.config.model
        noise, eps, u, drop = [], [], [], []
        for p in positions.tolist():
            noise.append(torch.randn(shape, generator=_stream_generator(seed, p, 0)))
            eps.append(torch.randn(shape, generator=_stream_generator(seed, p, 1)))
            u.append(compute_density_for_timestep_sampling(
                mc.weighting_scheme, 1, logit_mean=mc.logit_mean, logit_std=mc.logit_std,
                mode_scale=mc.mode_scale, generator=_stream_generator(seed, p, 2),
            ))  # fmt: skip
            drop.append(float(torch.rand(1, generator=_stream_generator(seed, p, 3))))
        return torch.stack(noise), torch.stack(eps), torch.cat(u), torch.tensor(drop)

    def conditioning(self, batch: dict, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FaceT5 prompt embeds (B, L, 4096) and pooled embeds (B, 768); dropped rows: zero face, empty prompt."""
        keep = drop >= self.config.model.condition_dropout  # (B,) bool, on the CPU
        # A sample without a detected face gets the zero face too.
        face_kept = (keep & batch["has_face"].cpu()).to(batch["face"].device)
        faces = batch["face"] * face_kept[:, None, None, None]
        prompts = [c if k else "" for c, k in zip(batch["caption"], keep.tolist())]
        context = torch.enable_grad() if self.config.model.train_encoder else torch.no_grad()
        with context:
            out = self.encoder(face_images=faces, prompts=prompts)
        return out.prompt_embeds, out.pooled_prompt_embeds

    def latent_distribution(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent mean and std (B, C, h, w), from the cache when ``model.cache_latents`` knows them.

        The cache is keyed by the sample's data index and used in training mode only (the held-out batch
        reuses indices); the images are deterministic centre crops, so a cached entry equals a fresh encode.
        """
        images = batch["image"]  # (B, 3, S, S) in [0, 1]
        indices = batch["index"].tolist() if "index" in batch else None
        use_cache = self.config.model.cache_latents and self.training and indices is not None
        if use_cache and all(i in self.latent_cache for i in indices):
            mean, std = zip(*(self.latent_cache[i] for i in indices))
            return torch.stack(mean).to(images.device), torch.stack(std).to(images.device)
        with torch.no_grad():
            dist = self.vae.encode(images.to(self.vae.dtype) * 2 - 1).latent_dist
        if use_cache:
            for row, i in enumerate(indices):
                self.latent_cache[i] = (dist.mean[row].detach().cpu(), dist.std[row].detach().cpu())
        return dist.mean, dist.std

    def forward(self, batch: dict) -> StepOutput:
        """The weighted flow-matching MSE (velocity ``noise - x``), averaged over this process's samples."""
        from diffusers import FluxPipeline
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        mean, std = self.latent_distribution(batch)
        b, c, h, w = mean.shape
        noise, eps, u, drop = self._per_sample(batch["position"].cpu(), (c, h, w))
        vae_config, device = self.vae.config, mean.device
        mean, std, eps = mean.float(), std.float(), eps.to(device)  # the flow-matching arithmetic in fp32
        latents = (mean + std * eps - vae_config.shift_factor) * vae_config.scaling_factor
        scheduler = self.noise_scheduler
        indices = (u * scheduler.config.num_train_timesteps).long()
        timesteps = scheduler.timesteps[indices].to(device)
        sigmas = scheduler.sigmas[indices].to(device, torch.float32)[:, None, None, None]  # (B, 1, 1, 1)
        noise = noise.to(device)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        prompt_embeds, pooled = self.conditioning(batch, drop)
        dtype = self.transformer.dtype  # the frozen weights' dtype (autocast handles mixed precision)
        prompt_embeds, pooled, noisy = prompt_embeds.to(dtype), pooled.to(dtype), noisy.to(dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.config.model.guidance, device=device)
        prediction = self.transformer(
            hidden_states=FluxPipeline._pack_latents(noisy, b, c, h, w),  # (B, h/2 * w/2, 4C)
            timestep=timesteps / 1000, guidance=guidance, pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype),
            return_dict=False,
        )[0]  # fmt: skip
        target = FluxPipeline._pack_latents(noise - latents, b, c, h, w)
        weighting = compute_loss_weighting_for_sd3(self.config.model.weighting_scheme, sigmas=sigmas[:, :, 0])
        per_sample = (weighting.float() * (prediction.float() - target.float()) ** 2).mean(dim=(1, 2))  # (B,)
        return StepOutput(
            loss=per_sample.mean(),
            logs={"dropped": (drop < self.config.model.condition_dropout).float().mean()},
        )


class FluxStage2Task(Stage2Task):
    """Builds the FaceT5-FLUX stage-2 model from a config; checkpoints, EMA and evaluation as
    :class:`~faceclip.training.stage2.Stage2Task`. A :class:`~faceclip.training.task.TrainingTask`."""

    name = "stage2"

    def __init__(self, config: FluxStage2Config):
        # Stage2Task.__init__ builds SDXL parts, so it is not called; the other members are shared.
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.training_utils import cast_training_params

        mc = config.model
        components = load_flux_components(config)
        transformer, vae, encoder = (
            components["transformer"],
            components["vae"],
            components["faceclip_encoder"],
        )
        noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(components["scheduler"].config)
        vae.requires_grad_(False)
        encoder.requires_grad_(False)
        if mc.train_encoder:
            for part in TRAINABLE_ENCODER_PARTS:
                getattr(encoder, part).requires_grad_(True)
        if mc.lora.enabled:
            with torch.random.fork_rng(devices=[]):  # the adapter's initial weights follow model.seed alone
                torch.manual_seed(mc.seed)
                self._add_lora(transformer, mc)
        else:
            transformer.requires_grad_(True)
        if mc.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        # fp32 master weights for what trains (bf16 released weights stay bf16 where frozen), as the recipe does.
        cast_training_params([transformer, encoder], dtype=torch.float32)
        self.config = config
        self.model = FluxStage2Model(transformer, vae, encoder, noise_scheduler, config)
        self.ema = make_ema(self.trainable_parameters(), mc.ema.decay) if mc.ema.enabled else None

    def save_final(self, folder: Path) -> None:
        """``folder/lora`` (:func:`save_transformer_lora`) or ``folder/transformer`` (full fine-tune; EMA
        weights when enabled), and ``folder/faceclip_encoder`` when the encoder was trained."""
        params = self.trainable_parameters()
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        if self.config.model.lora.enabled:
            save_transformer_lora(self.model.transformer, folder / "lora")
        else:
            self.model.transformer.save_pretrained(folder / "transformer")
        if self.config.model.train_encoder:
            self.model.encoder.save_pretrained(folder / "faceclip_encoder")
        if self.ema is not None:
            self.ema.restore(params)


def save_transformer_lora(transformer: nn.Module, folder: Path) -> Path:
    """Save the transformer's LoRA adapter in diffusers' FLUX LoRA format; returns the file.

    ``folder/pytorch_lora_weights.safetensors`` holds ``transformer.``-prefixed peft weights and, in its header,
    the adapter's ``LoraConfig`` (rank, alpha, targets), so loaders rebuild the training-time scale. Load it with
    ``FaceT5FluxPipeline.load_lora_weights(folder)`` or ``diffusers.FluxPipeline.load_lora_weights(folder)``.
    """
    from diffusers import FluxPipeline
    from peft.utils import get_peft_model_state_dict

    adapter = "default"
    state = get_peft_model_state_dict(transformer, adapter_name=adapter)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    FluxPipeline.save_lora_weights(
        folder, transformer_lora_layers=state, weight_name=LORA_WEIGHT_NAME,
        transformer_lora_adapter_metadata=transformer.peft_config[adapter].to_dict(),
    )  # fmt: skip
    return folder / LORA_WEIGHT_NAME
