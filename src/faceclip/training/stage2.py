"""Stage 2: fine-tuning the SDXL UNet on FaceCLIP conditioning (FaceCLIP-SDXL).

The frozen VAE encodes the training image; the FaceCLIP encoder (frozen by default) turns the reference face
and the caption into SDXL's ``prompt_embeds`` (B, 77, 2048) and ``pooled_prompt_embeds`` (B, 1280); the UNet
learns the usual noise-prediction objective with SDXL's size/crop micro-conditioning. With probability
``condition_dropout`` a sample's condition is dropped (black face, no-face flag, empty prompt), which is what
classifier-free guidance needs at inference. All randomness (noise, timestep, dropout, VAE sampling) is drawn
per sample from its position in the data stream, so results do not depend on the number of processes.

With ``model.lora`` the run saves ``final/lora/pytorch_lora_weights.safetensors`` (:func:`save_unet_lora`,
diffusers' SDXL LoRA format with the adapter's rank and alpha in the header); load it with
``FaceCLIPStableDiffusionXLPipeline.load_lora_weights("final/lora")``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from faceclip.training.config import Stage2Config
from faceclip.training.stage1 import CONDITIONING_BRANCH_PARTS, load_encoder, set_trainable
from faceclip.training.task import StepOutput

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel

logger = logging.getLogger(__name__)


def load_components(config: Stage2Config) -> dict:
    """``vae``, ``unet``, ``scheduler`` and ``faceclip_encoder`` as ``model.components`` / ``model.encoder`` say.

    Raises:
        faceclip.hub.WeightsNotFoundError: SDXL or encoder weights are not available.
    """
    from faceclip.pipelines.sdxl.loading import load_base_components

    mc = config.model
    components = load_base_components(mc.components, seed=mc.seed)
    if mc.encoder != mc.components or "faceclip_encoder" not in components:
        components["faceclip_encoder"] = load_encoder(mc.encoder, mc.seed)
    return components


def _stream_generator(seed: int, position: int, purpose: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + position) * 8 + purpose)


class Stage2Model(nn.Module):
    """UNet + frozen VAE + FaceCLIP encoder, computing the noise-prediction loss of a batch.

    Args:
        unet, vae, encoder: the SDXL UNet, its VAE and the FaceCLIP encoder.
        noise_scheduler: a diffusers scheduler with ``add_noise`` / ``get_velocity`` (DDPM).
        config: the stage-2 config.
    """

    def __init__(
        self, unet: nn.Module, vae: nn.Module, encoder: nn.Module, noise_scheduler, config: Stage2Config
    ):
        super().__init__()
        self.unet, self.vae, self.encoder = unet, vae, encoder
        self.noise_scheduler = noise_scheduler
        self.config = config

    def train(self, mode: bool = True) -> Stage2Model:
        super().train(mode)
        self.vae.eval()
        self.encoder.eval()  # frozen parts; a trainable encoder still runs without dropout / BN updates
        return self

    def _per_sample(self, positions: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """Per-sample noise, VAE sampling noise, timestep and dropout draw, from the stream positions."""
        seed, steps = self.config.run.seed, self.noise_scheduler.config.num_train_timesteps
        noise, eps, t, drop = [], [], [], []
        for p in positions.tolist():
            noise.append(torch.randn(shape, generator=_stream_generator(seed, p, 0)))
            eps.append(torch.randn(shape, generator=_stream_generator(seed, p, 1)))
            t.append(int(torch.randint(steps, (1,), generator=_stream_generator(seed, p, 2))))
            drop.append(float(torch.rand(1, generator=_stream_generator(seed, p, 3))))
        return torch.stack(noise), torch.stack(eps), torch.tensor(t), torch.tensor(drop)

    def conditioning(self, batch: dict, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FaceCLIP prompt embeds (B, 77, C) and pooled embeds (B, P), with dropped rows made unconditional."""
        keep = drop >= self.config.model.condition_dropout  # (B,) bool, on the CPU
        faces = batch["face"] * keep.to(batch["face"].device)[:, None, None, None]  # dropped -> black face
        has_face = batch["has_face"].cpu() & keep
        prompts = [c if k else "" for c, k in zip(batch["caption"], keep.tolist())]
        context = torch.enable_grad() if self.config.model.train_encoder else torch.no_grad()
        with context:
            out = self.encoder(face_images=faces, prompts=prompts, has_face=has_face)
        return out.prompt_embeds, out.pooled_prompt_embeds

    def forward(self, batch: dict) -> StepOutput:
        """The (optionally min-SNR weighted) noise-prediction MSE, averaged over this process's samples."""
        images = batch["image"]  # (B, 3, S, S) in [0, 1]
        device = images.device
        with torch.no_grad():
            dist = self.vae.encode(images.to(self.vae.dtype) * 2 - 1).latent_dist
        shape = tuple(dist.mean.shape[1:])
        noise, eps, timesteps, drop = self._per_sample(batch["position"].cpu(), shape)
        noise, eps, timesteps = noise.to(device), eps.to(device), timesteps.to(device)
        latents = (dist.mean + dist.std * eps.to(dist.mean.dtype)) * self.vae.config.scaling_factor
        noisy = self.noise_scheduler.add_noise(latents, noise.to(latents.dtype), timesteps)
        prompt_embeds, pooled = self.conditioning(batch, drop)
        size = torch.tensor([images.shape[-2], images.shape[-1]], device=device).expand(images.shape[0], 2)
        time_ids = torch.cat([batch["original_size"], batch["crop_top_left"], size], dim=1).to(
            prompt_embeds.dtype
        )
        prediction = self.unet(
            noisy, timesteps, encoder_hidden_states=prompt_embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample  # fmt: skip
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        elif kind == "sample":
            target = latents
        else:
            raise ValueError(
                f"scheduler prediction_type '{kind}' is not supported; use epsilon, v_prediction or sample."
            )
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(
            dim=(1, 2, 3)
        )  # (B,)
        gamma = self.config.model.min_snr_gamma
        if gamma is not None:
            per_sample = per_sample * min_snr_weight(self.noise_scheduler, timesteps, gamma, kind)
        return StepOutput(
            loss=per_sample.mean(),
            logs={"dropped": (drop < self.config.model.condition_dropout).float().mean()},
        )


def min_snr_weight(
    noise_scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al., arXiv 2303.09556): (B,) = min(SNR, gamma) / SNR (epsilon),
    / (SNR + 1) (v-prediction), or min(SNR, gamma) (sample), with diffusers' ``compute_snr``
    (``SNR = alphas_cumprod / (1 - alphas_cumprod)`` at each timestep).

    Args:
        noise_scheduler: a diffusers scheduler with ``alphas_cumprod`` (DDPM).
        timesteps: (B,) int64.
    """
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)  # (B,) float32
    clipped = snr.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    return clipped / snr


def make_ema(parameters: list[nn.Parameter], decay: float) -> EMAModel:
    """diffusers' ``EMAModel`` of ``parameters`` with a constant ``decay`` and fp32 shadow weights.

    Each update is ``shadow -= (1 - decay) * (shadow - param)``. ``min_decay=decay`` turns off the library's
    ``(1 + n) / (10 + n)`` warm-up and ``update_after_step=-1`` its plain copy at the first update, so the
    average starts from the initial weights and uses ``decay`` from the first step on; with a constant decay
    the update count (not in checkpoints) does not matter on ``--resume``.
    """
    from diffusers.training_utils import EMAModel

    ema = EMAModel(parameters, decay=decay, min_decay=decay, update_after_step=-1)
    ema.to(dtype=torch.float32)
    return ema


class Stage2Task:
    """Builds the stage-2 model from a config and knows which of its tensors a checkpoint holds.

    A :class:`~faceclip.training.task.TrainingTask`.
    """

    name = "stage2"

    def __init__(self, config: Stage2Config):
        from diffusers import DDPMScheduler

        mc = config.model
        if not 0 <= mc.condition_dropout < 1:
            raise ValueError(f"model.condition_dropout must be in [0, 1), got {mc.condition_dropout}.")
        components = load_components(config)
        unet, vae, encoder = components["unet"], components["vae"], components["faceclip_encoder"]
        noise_scheduler = DDPMScheduler.from_config(components["scheduler"].config)
        vae.requires_grad_(False)
        encoder.requires_grad_(False)
        if mc.train_encoder:
            set_trainable(encoder, ["l", "g"], CONDITIONING_BRANCH_PARTS)
        if mc.lora.enabled:
            self._add_lora(unet, mc)
        else:
            unet.requires_grad_(True)
        if mc.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.config = config
        self.model = Stage2Model(unet, vae, encoder, noise_scheduler, config)
        self.ema = make_ema(self.trainable_parameters(), mc.ema.decay) if mc.ema.enabled else None

    @staticmethod
    def _add_lora(unet: nn.Module, mc) -> None:
        try:
            from peft import LoraConfig
        except ImportError as err:
            raise ImportError('model.lora needs peft: pip install "faceclip[train]"') from err
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=mc.lora.rank, lora_alpha=mc.lora.alpha, init_lora_weights="gaussian",
                                    target_modules=list(mc.lora.target_modules)))  # fmt: skip

    def _trainable(self, model: nn.Module | None = None):
        return [(k, p) for k, p in (model or self.model).named_parameters() if p.requires_grad]

    def to(self, device: torch.device) -> Stage2Task:
        self.model.to(device)
        if self.ema is not None:
            self.ema.to(device=device)
        return self

    def synthetic_target_dims(self) -> dict[str, int]:
        return {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._trainable()]

    def trainable_state(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self._trainable(model)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state())
        if set(state) != expected:
            raise ValueError(
                "--resume: the checkpoint's trainable tensors do not match this config "
                f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})."
            )
        self.model.load_state_dict(state, strict=False)

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.step(self.trainable_parameters())

    def ema_state(self) -> dict[str, torch.Tensor] | None:
        """The EMA weights by trainable-parameter name (what ``ema.safetensors`` holds), or None."""
        if self.ema is None:
            return None
        return dict(zip((k for k, _ in self._trainable()), self.ema.shadow_params))

    def load_ema_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.ema is None:
            raise ValueError("--resume: the checkpoint holds EMA weights; set model.ema.enabled=true.")
        names = [k for k, _ in self._trainable()]
        if set(state) != set(names):
            raise ValueError(
                "--resume: the checkpoint's EMA tensors do not match this config's trainable parameters "
                f"(missing {sorted(set(names) - set(state))[:3]}, unexpected {sorted(set(state) - set(names))[:3]})."
            )
        with torch.no_grad():
            for shadow, name in zip(self.ema.shadow_params, names):
                shadow.copy_(state[name])  # into the fp32 shadow (never aliasing the given tensors)

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """The loss on a fixed batch with fixed noise and timesteps (positions far outside the training stream)."""
        batch = dict(batch, position=torch.arange(len(batch["caption"])) + 10**12)
        was_training = self.model.training
        self.model.eval()
        loss = self.model(batch).loss.item()
        self.model.train(was_training)
        return {"loss": loss}

    def save_final(self, folder: Path) -> None:
        """``folder/unet`` (EMA weights when enabled; full fine-tune) or ``folder/lora`` (LoRA, see
        :func:`save_unet_lora`), and ``folder/faceclip_encoder`` when the encoder was trained."""
        unet, params = self.model.unet, self.trainable_parameters()
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        if self.config.model.lora.enabled:
            save_unet_lora(unet, folder / "lora")
        else:
            unet.save_pretrained(folder / "unet")
        if self.config.model.train_encoder:
            self.model.encoder.save_pretrained(folder / "faceclip_encoder")
        if self.ema is not None:
            self.ema.restore(params)


LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def save_unet_lora(unet: nn.Module, folder: Path) -> Path:
    """Save the UNet's LoRA adapter as diffusers' SDXL LoRA loaders read it; returns the file.

    ``folder/pytorch_lora_weights.safetensors`` holds the adapter weights under ``unet.``-prefixed keys and, in
    the safetensors header (``lora_adapter_metadata``), the adapter's peft ``LoraConfig`` (rank, alpha, target
    modules), so a loader rebuilds the adapter with the training-time scale ``alpha / rank``. Load it with
    ``FaceCLIPStableDiffusionXLPipeline.load_lora_weights(folder)`` or
    ``unet.load_lora_adapter(folder, prefix="unet", weight_name="pytorch_lora_weights.safetensors")``.
    """
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    adapter = "default"
    state = get_peft_model_state_dict(unet, adapter_name=adapter)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    metadata = unet.peft_config[adapter].to_dict()
    StableDiffusionXLPipeline.save_lora_weights(
        folder, unet_lora_layers=convert_state_dict_to_diffusers(state), weight_name=LORA_WEIGHT_NAME,
        unet_lora_adapter_metadata=metadata,
    )  # fmt: skip
    return folder / LORA_WEIGHT_NAME
