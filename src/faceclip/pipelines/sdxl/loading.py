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

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from faceclip.convert.sdxl_unet import convert_released_unet, load_released_unet_file
from faceclip.hub import WeightsNotFoundError, hub_unreachable_reason, is_offline, resolve_file
from faceclip.model_family import ModelSource, SourceKind
from faceclip.models import FaceCLIPEncoder, create_encoder
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

CONVERSION_RECORD = "conversion.json"

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


def default_cache_dir() -> Path:
    """``$FACECLIP_CACHE`` if set, else ``$HF_HOME/faceclip`` (``~/.cache/huggingface/faceclip``)."""
    if os.environ.get("FACECLIP_CACHE"):
        return Path(os.environ["FACECLIP_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "faceclip"


def converted_dir(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted safetensors of the released weights at ``model`` live (or will live)."""
    local = Path(model).expanduser()
    key = str(local.resolve()) if local.is_dir() else str(model)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", key.strip("/"))[-60:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(cache_dir or default_cache_dir()) / "converted" / f"{slug}-{digest}"


@dataclass(frozen=True)
class _Missing:
    what: str
    source: str
    filenames: tuple[str, ...]
    where: str


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
        cache_dir: root of the converted-weights cache (default :func:`default_cache_dir`).
        encoder_config: the encoder config the released encoder weights follow (``faceclip-sdxl``).

    Raises:
        faceclip.hub.WeightsNotFoundError: listing every missing file, where it was looked for, and how to get it.
    """
    import diffusers

    logger.warning(LICENSE_NOTICE)
    target = converted_dir(model, cache_dir)
    needs_conversion = _conversion_outdated(target, model)
    found: dict[str, Path] = {}
    missing: list[_Missing] = []
    files = dict(_SDXL_CONFIG_FILES)
    if needs_conversion:
        files = {
            RELEASED_ENCODER_FILE: "the FaceCLIP encoder weights",
            RELEASED_UNET_FILE: "the FaceCLIP-SDXL UNet",
        } | files
    for filename, what in files.items():
        source = model if filename.startswith("model/") else sdxl
        _probe(source, filename, what, found, missing)
    vae_variant = _probe_vae_weights(sdxl, torch_dtype, found, missing)
    if missing:
        raise WeightsNotFoundError(_missing_message(missing))

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
    """A config file of the base model (a UTF-8 JSON object), or a ValueError naming it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict):
        raise ValueError(
            f"{path}: not a readable JSON config; download it again (it is part of {SDXL_BASE}), or pass "
            "another copy of SDXL base with --base-model."
        )
    return config


def _probe(source, filename: str, what: str, found: dict[str, Path], missing: list[_Missing]) -> None:
    try:
        found[filename] = resolve_file(source, filename, what=what)
    except WeightsNotFoundError as err:
        where = next((line for line in str(err).splitlines() if line.startswith("Looked in:")), "")
        missing.append(
            _Missing(what, str(source), (filename,), where.removeprefix("Looked in: ").rstrip("."))
        )


def _probe_vae_weights(sdxl, torch_dtype, found: dict[str, Path], missing: list[_Missing]) -> str | None:
    """Find SDXL's VAE weights, full precision or the ``fp16`` variant; returns the variant found."""
    order = ["fp16", None] if torch_dtype in (torch.float16, torch.bfloat16) else [None, "fp16"]
    tried = []
    for variant in order:
        probe: list[_Missing] = []
        _probe(sdxl, _SDXL_VAE_WEIGHTS[variant], "the SDXL VAE weights", found, probe)
        if not probe:
            return variant
        tried.append(probe[0])
    missing.append(
        _Missing(
            "the SDXL VAE weights (either file)", str(sdxl), tuple(_SDXL_VAE_WEIGHTS.values()), tried[0].where
        )
    )
    return None


def _missing_message(missing: list[_Missing]) -> str:
    lines = [f"FaceCLIP-SDXL cannot be loaded: {len(missing)} required file(s) not found."]
    for item in missing:
        lines.append(f"  - {item.what}: {' or '.join(item.filenames)} (looked in {item.where})")
    lines.append("To fix this, download them while online:")
    by_source: dict[str, list[str]] = {}
    for item in missing:
        by_source.setdefault(item.source, []).append(item.filenames[0])
    for source, filenames in by_source.items():
        if Path(source).expanduser().exists():
            lines.append(f"    put {' '.join(filenames)} inside {source}")
        else:
            lines.append(f"    hf download {source} {' '.join(filenames)}")
    lines.append(
        "or pass local folders: --model DIR (with model/face_clip_encoder.pt and model/unet.pt, or a folder "
        "written by save_pretrained) and --base-model DIR (a copy of stabilityai/stable-diffusion-xl-base-1.0)."
    )
    if is_offline():
        lines.append("HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched.")
    elif hub_unreachable_reason():
        lines.append(
            f"The Hugging Face hub could not be reached ({hub_unreachable_reason()}), so the local cache was searched "
            "instead; check the network connection, or set HF_HUB_OFFLINE=1 to skip the hub."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- conversion cache


def _current_file(model: str | os.PathLike, filename: str) -> Path | None:
    """The released file if it is on disk right now (no download)."""
    local = Path(model).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(model), filename)
    return Path(cached) if isinstance(cached, str) else None


def _fingerprint(path: Path) -> dict[str, object]:
    real = path.resolve()
    stat = real.stat()
    return {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _conversion_outdated(target: Path, model: str | os.PathLike) -> bool:
    """True if there is no finished conversion, or the released files on disk changed since it was made."""
    record_path = target / CONVERSION_RECORD
    if not record_path.is_file():
        return True
    try:
        files = json.loads(record_path.read_text(encoding="utf-8"))["files"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        files = None
    if not isinstance(files, dict):
        logger.warning("%s is damaged; converting again", record_path)
        return True
    for filename in (RELEASED_ENCODER_FILE, RELEASED_UNET_FILE):
        current = _current_file(model, filename)
        if current is not None and _fingerprint(current) != files.get(filename):
            logger.info("%s changed since it was converted; converting again", current)
            return True
    return False


def _convert(
    model: str | os.PathLike, found: dict[str, Path], target: Path, encoder_config: str | dict
) -> None:
    """Convert both released files into ``target`` (written to a temporary folder, then renamed)."""
    from faceclip.outputs import give_usual_permissions

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("converting the released FaceCLIP-SDXL weights to safetensors in %s (once)", target)
    try:
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
        record = {
            "source": str(model),
            "files": {
                name: _fingerprint(found[name]) for name in (RELEASED_ENCODER_FILE, RELEASED_UNET_FILE)
            },
        }
        (staging / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
        give_usual_permissions(staging)  # a shared cache: readable by whoever may read the user's files
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
