"""Loading FaceCLIP-SDXL from a resolved :class:`~faceclip.model_family.ModelSource` (see :mod:`faceclip.registry`).

- tiny: tiny random components (offline, seconds; the images are noise);
- our layout: a folder or hub repo written by ``FaceCLIPStableDiffusionXLPipeline.save_pretrained``;
- released: ``model/face_clip_encoder.pt`` and ``model/unet.pt`` (the ``ByteDance/FaceCLIP`` hub repo or a local
  copy), plus SDXL base (``stabilityai/stable-diffusion-xl-base-1.0`` or a local copy) for the VAE, the
  scheduler and the UNet config. The pickled ``.pt`` files are converted to safetensors on first use into a cache
  folder (``$FACECLIP_CACHE``, default ``$HF_HOME/faceclip``); later starts load the converted files and need
  neither the ``.pt`` files nor the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from faceclip.convert.sdxl_unet import convert_released_unet, load_released_unet_file
from faceclip.hub import WeightsNotFoundError
from faceclip.model_family import ModelSource, SourceKind
from faceclip.models import FaceCLIPEncoder, create_encoder
from faceclip.pipelines.released_files import (
    FileSearch,
    conversion_folder,
    conversion_outdated,
    converted_dir,
    read_config,
)
from faceclip.pipelines.sdxl.family import (
    LICENSE_NOTICE,
    RELEASED_ENCODER_FILE,
    RELEASED_UNET_FILE,
    SDXL_BASE,
    TINY_RANDOM,
)
from faceclip.pipelines.sdxl.pipeline_faceclip_sdxl import FaceCLIPStableDiffusionXLPipeline
from faceclip.pipelines.sdxl.tiny import build_tiny_components

logger = logging.getLogger(__name__)

RELEASED_FILES = (RELEASED_ENCODER_FILE, RELEASED_UNET_FILE)

_SDXL_CONFIG_FILES = {
    "unet/config.json": "the SDXL UNet config",
    "vae/config.json": "the SDXL VAE config",
    "scheduler/scheduler_config.json": "the SDXL scheduler config",
}
_SDXL_VAE_WEIGHTS = {
    None: "vae/diffusion_pytorch_model.safetensors",
    "fp16": "vae/diffusion_pytorch_model.fp16.safetensors",
}


def load_sdxl_pipeline(
    source: ModelSource,
    *,
    torch_dtype: torch.dtype | None = None,
    base_model: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FaceCLIPStableDiffusionXLPipeline:
    """A FaceCLIP-SDXL pipeline (on the CPU) from ``source``; see :func:`faceclip.registry.load_pipeline`."""
    if source.kind is SourceKind.TINY:
        logger.info(
            "tiny-random: tiny random weights; the images will be noise (for testing the pipeline only)"
        )
        components = build_tiny_components()
        if torch_dtype not in (None, torch.float32):
            for name in ("vae", "unet"):  # nn.Module.to: diffusers' own .to warns on every dtype cast
                torch.nn.Module.to(components[name], torch_dtype)
            components["faceclip_encoder"].cast(torch_dtype)  # the fusers stay fp32, as when loaded
        return FaceCLIPStableDiffusionXLPipeline(**components)
    if source.kind is SourceKind.RELEASED:
        components = load_released_components(
            source.location, base_model or SDXL_BASE, torch_dtype=torch_dtype, cache_dir=cache_dir
        )
        return FaceCLIPStableDiffusionXLPipeline(**components)
    return FaceCLIPStableDiffusionXLPipeline.from_pretrained(
        source.location, torch_dtype=torch_dtype, revision=source.revision
    )


def load_faceclip_encoder(
    source: ModelSource, *, torch_dtype: torch.dtype | None = None, seed: int = 0
) -> FaceCLIPEncoder:
    """The FaceCLIP encoder alone from ``source``: tiny (random, seeded), our layout, or the released file.

    A pipeline folder or repo in our layout gives its ``faceclip_encoder/``; a folder of the encoder alone (as
    ``faceclip convert`` writes it) loads directly.
    """
    if source.kind is SourceKind.TINY:
        logger.warning("encoder '%s' starts from random weights (seed %d)", source.location, seed)
        return create_encoder("faceclip-tiny", seed=seed)
    if source.kind is SourceKind.RELEASED:
        return FaceCLIPEncoder.from_official(source.location, torch_dtype=torch_dtype)
    local = Path(source.location).expanduser()
    subfolder = "faceclip_encoder" if not (local / "config.json").is_file() else None
    return FaceCLIPEncoder.from_pretrained(
        source.location, subfolder=subfolder, torch_dtype=torch_dtype, revision=source.revision
    )


def load_base_components(base_model: str | os.PathLike, seed: int = 0) -> dict[str, object]:
    """``unet``, ``vae`` and a DDPM ``scheduler`` of SDXL base (what stage-2 training starts from), or all tiny
    random components (with ``faceclip_encoder``) for ``"tiny-random"``.

    Raises:
        faceclip.hub.WeightsNotFoundError: SDXL base cannot be found.
    """
    from diffusers import DDPMScheduler

    if os.fspath(base_model) == TINY_RANDOM:
        return build_tiny_components(seed=seed)
    try:
        return {
            "unet": UNet2DConditionModel.from_pretrained(base_model, subfolder="unet"),
            "vae": AutoencoderKL.from_pretrained(base_model, subfolder="vae"),
            "scheduler": DDPMScheduler.from_pretrained(base_model, subfolder="scheduler"),
        }
    except OSError as err:
        raise WeightsNotFoundError(
            f"Could not load the SDXL components from '{base_model}': {err}\n"
            f"Download SDXL base while online (hf download {SDXL_BASE}) or pass a local folder with unet/, vae/ "
            f"and scheduler/; '{TINY_RANDOM}' selects tiny random parts."
        ) from err


# ----------------------------------------------------------------------------------------- released weights


def load_released_components(
    model: str | os.PathLike,
    sdxl: str | os.PathLike = SDXL_BASE,
    torch_dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike | None = None,
    encoder_config: str | dict = "faceclip-sdxl",
) -> dict[str, object]:
    """Components from the released FaceCLIP-SDXL weights and SDXL base, converting the ``.pt`` files once.

    Args:
        model: ``"ByteDance/FaceCLIP"`` or a folder holding ``model/face_clip_encoder.pt`` and ``model/unet.pt``.
        sdxl: SDXL base hub id or folder (``unet/config.json``, ``vae/``, ``scheduler/``).
        torch_dtype: dtype for the model weights; ``None`` keeps the stored dtype.
        cache_dir: root of the converted-weights cache (default :func:`faceclip.pipelines.released_files.default_cache_dir`).
        encoder_config: the encoder config the released encoder weights follow (``faceclip-sdxl``).

    Raises:
        faceclip.hub.WeightsNotFoundError: listing every missing file, where it was looked for, and how to get it.
    """
    import diffusers

    logger.warning(LICENSE_NOTICE)
    target = converted_dir(model, cache_dir)
    needs_conversion = conversion_outdated(target, model, RELEASED_FILES)
    search = FileSearch("FaceCLIP-SDXL")
    if needs_conversion:
        search.find(model, RELEASED_ENCODER_FILE, "the FaceCLIP encoder weights")
        search.find(model, RELEASED_UNET_FILE, "the FaceCLIP-SDXL UNet")
    for filename, what in _SDXL_CONFIG_FILES.items():
        search.find(sdxl, filename, what)
    half = torch_dtype in (torch.float16, torch.bfloat16)
    variants = ["fp16", None] if half else [None, "fp16"]
    vae_file = search.find_first(sdxl, [_SDXL_VAE_WEIGHTS[v] for v in variants], "the SDXL VAE weights")
    search.raise_if_missing(
        "or pass local folders: --model DIR (with model/face_clip_encoder.pt and model/unet.pt, or a folder "
        "written by save_pretrained) and --base-model DIR (a copy of stabilityai/stable-diffusion-xl-base-1.0)."
    )
    found = search.found
    vae_variant = next(v for v in variants if _SDXL_VAE_WEIGHTS[v] == vae_file)
    scheduler_config = _read_base_config(found["scheduler/scheduler_config.json"])
    if needs_conversion:
        _convert(model, found, target, encoder_config)
    scheduler_cls = getattr(
        diffusers, scheduler_config.get("_class_name", ""), diffusers.EulerDiscreteScheduler
    )
    return {
        "vae": AutoencoderKL.from_pretrained(
            found["vae/config.json"].parent, torch_dtype=torch_dtype, variant=vae_variant
        ),
        "unet": UNet2DConditionModel.from_pretrained(target / "unet", torch_dtype=torch_dtype),
        "scheduler": scheduler_cls.from_config(scheduler_config),
        "faceclip_encoder": FaceCLIPEncoder.from_pretrained(
            target / "faceclip_encoder", torch_dtype=torch_dtype
        ),
    }


def _read_base_config(path: Path) -> dict:
    """A config file of SDXL base, or a ValueError naming it."""
    return read_config(
        path,
        f"download it again (it is part of {SDXL_BASE}), or pass another copy of SDXL base with --base-model.",
    )


def _convert(
    model: str | os.PathLike, found: dict[str, Path], target: Path, encoder_config: str | dict
) -> None:
    """Convert both released files into ``target`` (staged, then renamed: whole or not at all)."""
    logger.info("converting the released FaceCLIP-SDXL weights to safetensors in %s (once)", target)
    with conversion_folder(target, model, {name: found[name] for name in RELEASED_FILES}) as staging:
        # Every input is read (weights memory-mapped) before anything is converted, so a bad one fails first.
        unet_config = _read_base_config(found["unet/config.json"])
        unet_weights = load_released_unet_file(found[RELEASED_UNET_FILE])
        encoder = FaceCLIPEncoder.from_official(found[RELEASED_ENCODER_FILE], config=encoder_config)
        encoder.save_pretrained(staging / "faceclip_encoder")
        del encoder
        convert_released_unet(
            found[RELEASED_UNET_FILE], unet_config, staging / "unet", state_dict=unet_weights
        )
        del unet_weights
