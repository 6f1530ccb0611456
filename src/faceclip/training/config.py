"""Typed training settings: dataclasses loaded from YAML, overridable from the command line, saved beside
every checkpoint.

A config file is a YAML mapping whose top-level keys are the fields of :class:`Stage1Config` or
:class:`Stage2Config` (``run``, ``data``, ``optim``, ``model``, ...). Unknown keys are errors, so a typo never
silently falls back to a default. A top-level ``family: facet5-flux`` selects the FaceT5-FLUX stages'
configs (:class:`FaceT5Stage1Config`, :class:`FluxStage2Config`); without it a config is FaceCLIP-SDXL's. Overrides use dotted paths: ``--set optim.lr=3e-4 loss.kind=softmax``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from faceclip.text_input import NotUTF8Error, read_utf8

T = TypeVar("T")


@dataclass
class RunConfig:
    """How the run is driven: length, precision, logging and checkpoints."""

    output_dir: str = "outputs/train"
    max_steps: int = 1000
    seed: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (Accelerate's names)
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    tensorboard: bool = False
    max_nonfinite_steps: int = 5  # stop after this many non-finite losses in a row
    progress_bar: bool = True
    eval_samples: int = 64  # held-out samples for the retrieval metrics at the start and the end (0: none)
    # DDP: only needed if a trainable parameter gets no gradient in some step (DDP then raises and says so);
    # every stage-1 and stage-2 set-up shipped here uses all its trainable parameters, so the extra graph walk is off.
    find_unused_parameters: bool = False


@dataclass
class DataConfig:
    """Where samples come from and how they are batched (``batch_size`` is per process)."""

    source: str = "synthetic"  # "synthetic", a folder of WebDataset shards, or a folder with a JSONL manifest
    batch_size: int = 8
    num_workers: int = 0
    image_size: int = 64  # training image side (stage 2 resolution; the stage-1 image target's input)
    face_size: int = 448  # aligned reference face side
    different_reference_photo: bool = True  # use another photo of the same identity as reference when known
    synthetic_samples: int = 512
    synthetic_identities: int = 16
    seed: int = 0


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    scheduler: str = "constant"  # "constant" | "linear" | "cosine"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # <= 0 disables clipping
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit


@dataclass
class LossConfig:
    """The stage-1 alignment loss (see ``faceclip.training.losses``)."""

    kind: str = "sigmoid"  # "sigmoid" (SigLIP, uses the branch's logit_scale/logit_bias) | "softmax" (CLIP)
    face_weight: float = 1.0
    text_weight: float = 1.0
    image_weight: float = 1.0
    mask_same_identity: bool = True  # same-identity pairs are not used as negatives when labels are known
    init_logit_scale: float | None = 2.6592  # ln(1/0.07), set when a run starts (not on resume); None keeps
    init_logit_bias: float | None = -10.0  # the encoder's values


@dataclass
class HeadConfig:
    """Projection heads on the fused tokens Z (B, 77, D): flatten, then one linear layer."""

    face_dim: int = 512
    normalize: bool = True
    # Subtract the (global) batch mean of each head's output before the loss. Flattened fused tokens share a
    # large sample-independent part (padding positions, positional terms); centring removes it, which lets a
    # freshly initialised head separate samples in tens of steps instead of thousands.
    center: bool = True


@dataclass
class TargetConfig:
    """Where the frozen alignment targets come from.

    ``face``/``text``: ``"encoder"`` computes them with the branch's own frozen face ViT and text tower,
    ``"precomputed"`` reads ``face_<b>``/``text_<b>`` from the data (e.g. synthetic data).
    ``image_l``/``image_g`` name the CLIP vision tower of each branch: ``"precomputed"`` (read from the data;
    no tower in memory), ``"tiny-random"`` (a small seeded CLIP vision tower, for smoke runs only), or a
    transformers ``CLIPVisionModelWithProjection`` hub id or folder. It should be the vision half of the CLIP
    whose text tower the branch uses, so that text and image targets share one space.
    """

    face: str = "encoder"  # "encoder": the branch's frozen face ViT identity vector | "precomputed"
    text: str = "encoder"  # "encoder": the branch's frozen text tower + text_projection | "precomputed"
    image_l: str = "openai/clip-vit-large-patch14"
    image_g: str = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
    seed: int = 0


@dataclass
class Stage1ModelConfig:
    """The joint encoder being aligned, and which of its branches train."""

    encoder: str = "faceclip-sdxl"  # a packaged config name (random init), a local folder or a hub id
    encoder_seed: int = 0
    branches: list[str] = field(default_factory=lambda: ["l", "g"])
    init_text_towers_from: str | None = None  # e.g. "stabilityai/stable-diffusion-xl-base-1.0"
    heads: HeadConfig = field(default_factory=HeadConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999


@dataclass
class LoRAConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class Stage2ModelConfig:
    """SDXL components and how the UNet is fine-tuned on FaceCLIP conditioning."""

    components: str = (
        "stabilityai/stable-diffusion-xl-base-1.0"  # "tiny-random" (seeded tiny parts) | hub id | folder
    )
    encoder: str = (
        "ByteDance/FaceCLIP"  # any model argument of faceclip.registry ("tiny-random" with tiny components)
    )
    seed: int = 0
    train_encoder: bool = False
    condition_dropout: float = 0.1  # black face, no-face flag and empty prompt together
    min_snr_gamma: float | None = None  # e.g. 5.0; None = plain MSE
    gradient_checkpointing: bool = True
    ema: EMAConfig = field(default_factory=EMAConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class Stage1Config:
    """Stage 1: multi-modal alignment of the joint encoder."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class Stage2Config:
    """Stage 2: fine-tuning the SDXL UNet on FaceCLIP conditioning."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)


FACET5_FLUX = "facet5-flux"
FACECLIP_SDXL = "faceclip-sdxl"
FLUX_WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")
"""diffusers' ``compute_density_for_timestep_sampling`` / ``compute_loss_weighting_for_sd3`` schemes."""


@dataclass
class FaceT5TargetConfig:
    """The frozen alignment targets of FaceT5 stage 1.

    ``face``: ``"encoder"`` (the mean of the frozen face ViT's patch tokens) or ``"precomputed"`` (``face_l`` from
    the data). ``text``: ``"clip"`` (the frozen CLIP-L pooled output of the caption), ``"t5"`` (the frozen T5
    output averaged over the caption's tokens) or ``"precomputed"`` (``text_l``). ``image``: as
    :attr:`TargetConfig.image_l` (``"precomputed"`` reads ``image_l``, as ``faceclip prepare`` stores it).
    """

    face: str = "encoder"
    text: str = "clip"
    image: str = "openai/clip-vit-large-patch14"
    seed: int = 0


@dataclass
class FaceT5Stage1ModelConfig:
    """The FaceT5 encoder being aligned (trainable: ``face_patch_proj`` and the fuser) and its heads."""

    encoder: str = (
        "ByteDance/FaceCLIP"  # a packaged FaceT5 config (facet5-tiny: random), a folder or a hub id
    )
    encoder_seed: int = 0
    pooling: str = (
        "mean"  # "mean" over the caption's T5 tokens (see docs/training.md) | "flatten" (all tokens)
    )
    heads: HeadConfig = field(default_factory=HeadConfig)
    targets: FaceT5TargetConfig = field(default_factory=FaceT5TargetConfig)


@dataclass
class FluxStage2ModelConfig:
    """FaceT5-FLUX components and how the FLUX transformer is fine-tuned on FaceT5 conditioning."""

    components: str = "ByteDance/FaceCLIP"  # "tiny-random-flux" | released repo | a saved pipeline folder
    encoder: str | None = None  # None: the components' FaceT5 encoder; else any FaceT5 encoder argument
    base_model: str | None = None  # FLUX.1-dev copy for released weights (None: the hub id)
    seed: int = 0
    train_encoder: bool = False  # face_patch_proj + fuser train with the transformer
    condition_dropout: float = 0.1  # zero face and empty prompt together (the released negative)
    guidance: float = 1.0  # FLUX.1-dev's distilled-guidance input (FaceT5-FLUX samples at 1.0)
    weighting_scheme: str = "none"  # one of FLUX_WEIGHTING_SCHEMES
    logit_mean: float = 0.0  # logit_normal timestep density
    logit_std: float = 1.0
    mode_scale: float = 1.29  # "mode" timestep density
    cache_latents: bool = False  # keep each sample's VAE latent distribution in memory (by data index)
    gradient_checkpointing: bool = True
    ema: EMAConfig = field(default_factory=EMAConfig)
    # Default targets: the attention projections of every double and single block (the FLUX DreamBooth default).
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class FaceT5Stage1Config:
    """FaceT5-FLUX stage 1: multi-modal alignment of the FaceT5 encoder."""

    family: str = FACET5_FLUX
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: FaceT5Stage1ModelConfig = field(default_factory=FaceT5Stage1ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class FluxStage2Config:
    """FaceT5-FLUX stage 2: fine-tuning the FLUX transformer on FaceT5 conditioning."""

    family: str = FACET5_FLUX
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    model: FluxStage2ModelConfig = field(default_factory=FluxStage2ModelConfig)


SCHEDULERS = ("constant", "linear", "cosine")
LOSS_KINDS = ("sigmoid", "softmax")  # see faceclip.training.losses

STAGES: dict[str, type] = {"stage1": Stage1Config, "stage2": Stage2Config}
#: (stage, family) -> config class; ``family`` is a top-level config key (default faceclip-sdxl).
FAMILY_STAGES: dict[tuple[str, str], type] = {
    ("stage1", FACECLIP_SDXL): Stage1Config,
    ("stage2", FACECLIP_SDXL): Stage2Config,
    ("stage1", FACET5_FLUX): FaceT5Stage1Config,
    ("stage2", FACET5_FLUX): FluxStage2Config,
}


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclasses."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, checking names and types.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type (the message names the dotted key).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}."
        )
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}.")
        return from_dict(tp, value, where=f"{key}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}; e.g. [l, g].")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, key) for v in value]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r} ({type(value).__name__}).")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML and JSON)."""
    return dataclasses.asdict(config)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``"a.b.c=value"`` overrides to a nested dict (values parsed as YAML: ``1e-4``, ``[l]``, ``null``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set: '{item}' is not KEY=VALUE; e.g. --set optim.lr=3e-4.")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: '{key}' goes through a non-mapping value.")
        node[parts[-1]] = parse_yaml(
            raw, f"--set '{item}': the value", "quote it, e.g. --set 'run.output_dir=\"runs/a: b\"'."
        )
    return data


def parse_yaml(text: str, what: str, fix: str) -> Any:
    """``text`` parsed as YAML (``safe_load``).

    Args:
        what: names the text in the error, e.g. ``"--config: 'a.yaml'"``.
        fix: what to do about an error.

    Raises:
        ConfigError: ``text`` is not valid YAML; the message names ``what`` and the line and column.
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{what} is not valid YAML ({problem}{_yaml_error_place(err, text)}); {fix}"
        ) from None


def _yaml_error_place(err: Exception, text: str) -> str:
    """``" at line L, column C"`` of a YAML error in ``text`` (1-based), or ``""`` when it has no place."""
    import yaml

    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(err, yaml.reader.ReaderError):  # a control character: located by its offset
        line, line_start = text.count("\n", 0, err.position) + 1, text.rfind("\n", 0, err.position) + 1
        return f" at line {line}, column {err.position - line_start + 1}"
    return ""


def load_config(
    stage: str,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Any:
    """Load a stage's config from YAML (or the defaults when ``path`` is None), apply overrides, and check it.

    Args:
        stage: ``"stage1"`` or ``"stage2"``.
        path: a YAML file; its top level may also carry ``stage: stage1`` (checked against ``stage``).
        overrides: ``["optim.lr=3e-4", ...]`` (values parsed as YAML).
        values: ``{"run.output_dir": "runs/x #1", ...}``, set as given (not parsed), after the overrides.

    Raises:
        ConfigError: a file that is not UTF-8 or not valid YAML, an unknown key, a wrong type, or a value out of
            range (see :func:`validate`).
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {sorted(STAGES)}, got '{stage}'.")
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"--config: '{path}' does not exist; see src/faceclip/training/configs/ for examples."
            )
        try:
            text = read_utf8(path)
        except NotUTF8Error as err:
            raise ConfigError(f"--config: {err}") from None
        data = parse_yaml(text, f"--config: '{path}'", "fix the file.") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"--config: '{path}' must hold a YAML mapping, got {type(data).__name__}.")
    declared = data.pop("stage", stage)
    if declared != stage:
        raise ConfigError(f"--config: '{path}' is a {declared} config, but '{stage}' was asked for.")
    data = apply_overrides(data, overrides or [])
    for key, value in (values or {}).items():
        node = data
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = value
    config = from_dict(config_class(stage, data), data)
    validate(config)
    return config


def config_class(stage: str, data: dict[str, Any]) -> type:
    """The config class of ``stage`` for the ``family`` in ``data`` (popped when the class has no such field).

    Raises:
        ConfigError: an unknown family.
    """
    family = data.get("family", FACECLIP_SDXL)
    families = sorted({f for _, f in FAMILY_STAGES})
    if (stage, family) not in FAMILY_STAGES:
        raise ConfigError(f"config key 'family' must be one of {', '.join(families)}, got {family!r}.")
    cls = FAMILY_STAGES[(stage, family)]
    if "family" not in {f.name for f in dataclasses.fields(cls)}:
        data.pop("family", None)
    return cls


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' must be {rule}, got {value!r}.")


def validate(config: Any) -> None:
    """Check ranges and choices that the types alone do not (before anything is written).

    Raises:
        ConfigError: the first value out of range, naming its dotted key and what it must be.
    """
    run, data, optim = config.run, config.data, config.optim
    for key in (
        "max_steps",
        "gradient_accumulation_steps",
        "log_every",
        "checkpoint_every",
        "max_nonfinite_steps",
    ):
        _check(getattr(run, key) >= 1, f"run.{key}", ">= 1", getattr(run, key))
    for key in ("keep_checkpoints", "eval_samples"):
        _check(getattr(run, key) >= 0, f"run.{key}", ">= 0", getattr(run, key))
    _check(run.mixed_precision in ("no", "bf16", "fp16"), "run.mixed_precision", "one of no, bf16, fp16",
           run.mixed_precision)  # fmt: skip
    for key in ("batch_size", "image_size", "face_size", "synthetic_samples", "synthetic_identities"):
        _check(getattr(data, key) >= 1, f"data.{key}", ">= 1", getattr(data, key))
    _check(data.num_workers >= 0, "data.num_workers", ">= 0", data.num_workers)
    _check(optim.lr >= 0, "optim.lr", ">= 0", optim.lr)
    _check(optim.weight_decay >= 0, "optim.weight_decay", ">= 0", optim.weight_decay)
    _check(0 <= optim.beta1 < 1, "optim.beta1", "in [0, 1)", optim.beta1)
    _check(0 <= optim.beta2 < 1, "optim.beta2", "in [0, 1)", optim.beta2)
    _check(optim.eps > 0, "optim.eps", "> 0", optim.eps)
    _check(
        optim.scheduler in SCHEDULERS, "optim.scheduler", "one of " + ", ".join(SCHEDULERS), optim.scheduler
    )
    _check(optim.warmup_steps >= 0, "optim.warmup_steps", ">= 0", optim.warmup_steps)
    model = config.model
    if isinstance(config, FluxStage2Config):
        _validate_flux_stage2(config)
    elif isinstance(config, FaceT5Stage1Config):
        _validate_facet5_stage1(config)
    elif isinstance(config, Stage1Config):
        loss = config.loss
        _check(loss.kind in LOSS_KINDS, "loss.kind", "one of " + ", ".join(LOSS_KINDS), loss.kind)
        for key in ("face_weight", "text_weight", "image_weight"):
            _check(getattr(loss, key) >= 0, f"loss.{key}", ">= 0", getattr(loss, key))
        for key in ("face", "text"):
            value = getattr(model.targets, key)
            _check(
                value in ("encoder", "precomputed"), f"model.targets.{key}", "encoder or precomputed", value
            )
        _check(bool(model.branches) and set(model.branches) <= {"l", "g"}, "model.branches",
               "a non-empty subset of [l, g]", model.branches)  # fmt: skip
        _check(model.heads.face_dim >= 1, "model.heads.face_dim", ">= 1", model.heads.face_dim)
    else:
        _check(
            0 <= model.condition_dropout < 1, "model.condition_dropout", "in [0, 1)", model.condition_dropout
        )
        gamma = model.min_snr_gamma
        _check(gamma is None or gamma > 0, "model.min_snr_gamma", "> 0 or null", gamma)
        _check(0 <= model.ema.decay <= 1, "model.ema.decay", "in [0, 1]", model.ema.decay)
        _check(model.lora.rank >= 1, "model.lora.rank", ">= 1", model.lora.rank)


def _validate_flux_stage2(config: FluxStage2Config) -> None:
    model, size = config.model, config.data.image_size
    _check(size % 16 == 0, "data.image_size", "a multiple of 16 (FLUX packs 2 x 2 latent patches)", size)
    _check(0 <= model.condition_dropout < 1, "model.condition_dropout", "in [0, 1)", model.condition_dropout)
    _check(model.weighting_scheme in FLUX_WEIGHTING_SCHEMES, "model.weighting_scheme",
           "one of " + ", ".join(FLUX_WEIGHTING_SCHEMES), model.weighting_scheme)  # fmt: skip
    _check(model.logit_std > 0, "model.logit_std", "> 0", model.logit_std)
    _check(0 <= model.ema.decay <= 1, "model.ema.decay", "in [0, 1]", model.ema.decay)
    _check(model.lora.rank >= 1, "model.lora.rank", ">= 1", model.lora.rank)


def _validate_facet5_stage1(config: FaceT5Stage1Config) -> None:
    loss, model = config.loss, config.model
    _check(loss.kind in LOSS_KINDS, "loss.kind", "one of " + ", ".join(LOSS_KINDS), loss.kind)
    for key in ("face_weight", "text_weight", "image_weight"):
        _check(getattr(loss, key) >= 0, f"loss.{key}", ">= 0", getattr(loss, key))
    targets = model.targets
    _check(targets.face in ("encoder", "precomputed"), "model.targets.face", "encoder or precomputed",
           targets.face)  # fmt: skip
    _check(targets.text in ("clip", "t5", "precomputed"), "model.targets.text", "clip, t5 or precomputed",
           targets.text)  # fmt: skip
    _check(model.pooling in ("mean", "flatten"), "model.pooling", "mean or flatten", model.pooling)
    _check(model.heads.face_dim >= 1, "model.heads.face_dim", ">= 1", model.heads.face_dim)


def dump_config(config: Any, stage: str) -> str:
    """The config as YAML text, with its stage, as :func:`load_config` reads it back."""
    import yaml

    return yaml.safe_dump({"stage": stage, **to_dict(config)}, sort_keys=False)


def save_config(config: Any, path: str | Path, stage: str) -> None:
    """Write the config as YAML (whole or not at all), so it can be loaded back with :func:`load_config`."""
    from faceclip.outputs import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, dump_config(config, stage))
