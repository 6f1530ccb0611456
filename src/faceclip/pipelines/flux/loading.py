"""Loading FaceT5-FLUX from a resolved :class:`~faceclip.model_family.ModelSource` (see :mod:`faceclip.registry`).

- tiny: tiny random components (offline, about a second; the images are noise);
- our layout: a folder or hub repo written by ``FaceT5FluxPipeline.save_pretrained``;
- released: ``model/face_t5_encoder.pt``, ``model/dit.pt`` and ``model/tokenizer/`` (the ``ByteDance/FaceCLIP``
  hub repo or a local copy), plus FLUX.1-dev (``black-forest-labs/FLUX.1-dev``, gated: accept its licence on the
  hub first, or a local copy) for the VAE, the scheduler and the transformer config. The pickles are converted
  to safetensors once (:mod:`faceclip.pipelines.released_files`), streaming: converting needs about 5 GB of RAM,
  not the files' 36 GB.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from faceclip.model_family import ModelSource, SourceKind
from faceclip.models.facet5_encoder import FaceT5Encoder, create_facet5_encoder
from faceclip.pipelines.flux.family import (
    FLUX_BASE,
    LICENSE_NOTICE,
    RELEASED_ENCODER_FILE,
    RELEASED_TOKENIZER_FOLDER,
    RELEASED_TRANSFORMER_FILE,
)
from faceclip.pipelines.flux.pipeline_facet5_flux import FaceT5FluxPipeline
from faceclip.pipelines.flux.tiny import build_tiny_components
from faceclip.pipelines.released_files import (
    FileSearch,
    conversion_folder,
    conversion_outdated,
    converted_dir,
    read_config,
)

logger = logging.getLogger(__name__)

BASE_FILES = {
    "transformer/config.json": "the FLUX.1-dev transformer config",
    "vae/config.json": "the FLUX.1-dev VAE config",
    "vae/diffusion_pytorch_model.safetensors": "the FLUX.1-dev VAE weights",
    "scheduler/scheduler_config.json": "the FLUX.1-dev scheduler config",
}
RELEASED_ENCODER_CONFIG = "facet5-flux"
"""The packaged encoder config whose head counts the released encoder has (sizes are read from its keys)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
"""The T5 tokenizer's files in ``model/tokenizer/``; ``tokenizer.json`` is required, the others used if there."""


def load_flux_pipeline(
    source: ModelSource,
    *,
    torch_dtype: torch.dtype | None = None,
    base_model: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FaceT5FluxPipeline:
    """A FaceT5-FLUX pipeline (on the CPU) from ``source``; see :func:`faceclip.registry.load_pipeline`."""
    if source.kind is SourceKind.TINY:
        logger.info("tiny-random-flux: tiny random weights; the images will be noise (for testing only)")
        components = build_tiny_components()
        if torch_dtype not in (None, torch.float32):
            for name in ("vae", "transformer"):  # nn.Module.to: diffusers' own .to warns on every dtype cast
                torch.nn.Module.to(components[name], torch_dtype)
            components["faceclip_encoder"].cast(torch_dtype)
        return FaceT5FluxPipeline(**components)
    if source.kind is SourceKind.RELEASED:
        components = load_released_components(
            source.location, base_model or FLUX_BASE, torch_dtype=torch_dtype, cache_dir=cache_dir
        )
        return FaceT5FluxPipeline(**components)
    return FaceT5FluxPipeline.from_pretrained(
        source.location, torch_dtype=torch_dtype, revision=source.revision
    )


def load_facet5_encoder(
    source: ModelSource, *, torch_dtype: torch.dtype | None = None, seed: int = 0
) -> FaceT5Encoder:
    """The FaceT5 encoder alone: tiny (random, seeded), our layout (a pipeline's ``faceclip_encoder/`` or an
    encoder folder), or the released ``face_t5_encoder.pt``."""
    if source.kind is SourceKind.TINY:
        logger.warning("encoder '%s' starts from random weights (seed %d)", source.location, seed)
        return create_facet5_encoder("facet5-tiny", seed=seed)
    if source.kind is SourceKind.RELEASED:
        logger.warning(LICENSE_NOTICE)
        return FaceT5Encoder.from_official(source.location, torch_dtype=torch_dtype)
    local = Path(source.location).expanduser()
    subfolder = "faceclip_encoder" if not (local / "config.json").is_file() else None
    return FaceT5Encoder.from_pretrained(
        source.location, subfolder=subfolder, torch_dtype=torch_dtype, revision=source.revision
    )


def load_released_components(
    model: str | os.PathLike,
    base: str | os.PathLike = FLUX_BASE,
    torch_dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike | None = None,
    encoder_config: str | dict | None = None,
) -> dict[str, object]:
    """Components from the released FaceT5-FLUX files and FLUX.1-dev, converting the ``.pt`` files once.

    Args:
        model: ``"ByteDance/FaceCLIP"`` or a folder holding ``model/face_t5_encoder.pt``, ``model/dit.pt`` and
            ``model/tokenizer/tokenizer.json``.
        base: FLUX.1-dev's hub id or a local copy (``transformer/config.json``, ``vae/``, ``scheduler/``).
        torch_dtype: dtype for the model weights; ``None`` keeps the stored dtype (bf16 for the released files).
        cache_dir: root of the converted-weights cache (default ``$FACECLIP_CACHE``, else ``$HF_HOME/faceclip``).
        encoder_config: the config whose head counts the released encoder has (default
            :data:`RELEASED_ENCODER_CONFIG`).

    Raises:
        faceclip.hub.WeightsNotFoundError: listing every missing file, where it was looked for, and how to get it.
    """
    logger.warning(LICENSE_NOTICE)
    target = converted_dir(model, cache_dir, kind="facet5-flux")
    released = (RELEASED_ENCODER_FILE, RELEASED_TRANSFORMER_FILE)
    needs_conversion = conversion_outdated(target, model, released)
    search = FileSearch("FaceT5-FLUX")
    if needs_conversion:
        search.find(model, RELEASED_ENCODER_FILE, "the FaceT5 encoder weights")
        search.find(model, RELEASED_TRANSFORMER_FILE, "the FaceT5-FLUX transformer")
    tokenizer = search.find(model, f"{RELEASED_TOKENIZER_FOLDER}/tokenizer.json", "the T5 tokenizer")
    for filename, what in BASE_FILES.items():
        search.find(base, filename, what)
    search.raise_if_missing(
        "or pass local folders: --model DIR (with model/face_t5_encoder.pt, model/dit.pt and model/tokenizer/, or "
        "a folder written by save_pretrained) and --base-model DIR (a copy of black-forest-labs/FLUX.1-dev)."
    )
    found = search.found
    if needs_conversion:
        _convert(model, found, target, encoder_config or RELEASED_ENCODER_CONFIG)
    scheduler_config = _read_base_config(found["scheduler/scheduler_config.json"])
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(scheduler_config),
        "vae": AutoencoderKL.from_pretrained(found["vae/config.json"].parent, torch_dtype=torch_dtype),
        "transformer": FluxTransformer2DModel.from_pretrained(
            target / "transformer", torch_dtype=torch_dtype
        ),
        "faceclip_encoder": FaceT5Encoder.from_pretrained(
            target / "faceclip_encoder", torch_dtype=torch_dtype
        ),
        "tokenizer_2": _load_tokenizer(model, tokenizer),
    }


def _read_base_config(path: Path) -> dict:
    """A config file of FLUX.1-dev, or a ValueError naming it."""
    return read_config(
        path,
        f"download it again (it is part of {FLUX_BASE}), or pass another copy of FLUX.1-dev with --base-model.",
    )


def _load_tokenizer(model: str | os.PathLike, tokenizer_json: Path):
    """The released T5 tokenizer: ``tokenizer.json``, with its config files where the repo has them."""
    from transformers import AutoTokenizer

    from faceclip.hub import WeightsNotFoundError, resolve_file

    for name in TOKENIZER_FILES[1:]:
        with contextlib.suppress(
            WeightsNotFoundError
        ):  # optional: tokenizer.json alone is a working tokenizer
            resolve_file(model, f"{RELEASED_TOKENIZER_FOLDER}/{name}", what="a T5 tokenizer file")
    return AutoTokenizer.from_pretrained(tokenizer_json.parent)


def _convert(
    model: str | os.PathLike, found: dict[str, Path], target: Path, encoder_config: str | dict
) -> None:
    """Convert both released pickles into ``target`` (staged, then renamed: whole or not at all)."""
    from faceclip.convert.facet5_files import convert_facet5_encoder
    from faceclip.convert.flux_transformer import convert_released_transformer

    logger.info("converting the released FaceT5-FLUX weights to safetensors in %s (once)", target)
    files = {name: found[name] for name in (RELEASED_ENCODER_FILE, RELEASED_TRANSFORMER_FILE)}
    with conversion_folder(target, model, files) as staging:
        convert_facet5_encoder(
            found[RELEASED_ENCODER_FILE], staging / "faceclip_encoder", config=encoder_config
        )
        transformer_config = _read_base_config(found["transformer/config.json"])
        convert_released_transformer(
            found[RELEASED_TRANSFORMER_FILE], transformer_config, staging / "transformer"
        )
