"""Stage 1: multi-modal alignment of the FaceCLIP joint encoder.

Per trained branch, the fused text tokens Z (B, 77, D) go through two projection heads; the face head output is
aligned with the frozen identity vector of the reference face, the text head output with the frozen CLIP text
embedding of the caption (the branch's own text tower, no id prefix) and with the frozen CLIP image embedding of
the training image. Trainable: the five input projections, the fuser, the heads, ``logit_scale`` and
``logit_bias``; everything else is frozen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from faceclip.training.config import Stage1Config
from faceclip.training.distributed import gather_batch
from faceclip.training.heads import AlignmentHeads
from faceclip.training.losses import alignment_loss, retrieval_accuracy
from faceclip.training.targets import PRECOMPUTED, TINY_RANDOM, ImageTargetTower, build_image_tower
from faceclip.training.task import StepOutput

logger = logging.getLogger(__name__)

TRAINABLE_BRANCH_PARTS = ("face_token_proj", "face_patch_proj", "face_pos_proj", "text_embed_proj", "text_pos_proj",
                          "fuser", "logit_scale", "logit_bias")  # fmt: skip


@dataclass
class BranchEmbeddings:
    """One branch's predictions and targets for a batch (N rows each)."""

    face_pred: torch.Tensor  # (N, face_dim)
    text_pred: torch.Tensor  # (N, d_clip)
    face_target: torch.Tensor  # (N, face_dim)
    text_target: torch.Tensor  # (N, d_clip)
    image_target: torch.Tensor | None  # (N, d_clip)


def load_encoder(name: str, seed: int = 0):
    """The encoder training starts from: a packaged architecture config name (``faceclip-sdxl``,
    ``faceclip-tiny``: random weights, seeded) or any model argument of :func:`faceclip.registry.load_encoder`."""
    from faceclip.models import create_encoder, list_configs
    from faceclip.registry import load_encoder as load_model_encoder

    if name in list_configs():
        logger.warning("encoder '%s' starts from random weights (seed %d)", name, seed)
        return create_encoder(name, seed=seed)
    return load_model_encoder(name, seed=seed)


#: What the conditioning path uses (stage 2 trains only these: ``logit_scale``/``logit_bias`` serve the stage-1
#: loss alone and would get no gradient, which DDP without ``find_unused_parameters`` refuses).
CONDITIONING_BRANCH_PARTS = tuple(p for p in TRAINABLE_BRANCH_PARTS if not p.startswith("logit_"))


def set_trainable(encoder, branches: list[str], parts: tuple[str, ...] = TRAINABLE_BRANCH_PARTS) -> None:
    """Freeze the encoder except ``parts`` (by default the stage-1 trainable parts) of the chosen branches."""
    encoder.requires_grad_(False)
    for name in branches:
        branch = getattr(encoder, f"branch_{name}")
        for part in parts:
            getattr(branch, part).requires_grad_(True)


class Stage1Model(nn.Module):
    """The encoder, the heads and the frozen target towers, computing the stage-1 loss of a batch.

    Args:
        encoder: a :class:`faceclip.models.FaceCLIPEncoder`.
        heads: ``{"l": AlignmentHeads, "g": ...}`` for the trained branches.
        image_towers: ``{"l": ImageTargetTower | None, ...}``; None reads ``targets["image_<b>"]`` from the batch.
        config: the run config (loss kind, weights, identity masking).
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, AlignmentHeads],
                 image_towers: dict[str, ImageTargetTower | None], config: Stage1Config):  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.image_towers = nn.ModuleDict({k: v for k, v in image_towers.items() if v is not None})
        self.branches = list(heads)
        self.loss_config = config.loss
        self.target_config = config.model.targets
        self.center = config.model.heads.center

    def train(self, mode: bool = True) -> Stage1Model:
        # The frozen face ViT (BatchNorm, patch masking) and the target towers always run in eval mode; the
        # fuser is trained without dropout, which keeps runs reproducible across process counts.
        super().train(mode)
        self.encoder.eval()
        self.image_towers.eval()
        return self

    def embed(self, batch: dict) -> dict[str, BranchEmbeddings]:
        """Predictions and targets of every trained branch for this process's rows."""
        encoder = self.encoder
        captions, faces = batch["caption"], batch["face"]
        has_face = batch["has_face"]
        ids = encoder.tokenize(captions, has_face.cpu()).to(faces.device)  # (N, 77), id prefix on face rows
        plain_ids = encoder.tokenize(captions).to(faces.device)  # (N, 77), the caption alone
        out = {}
        for name in self.branches:
            branch = getattr(encoder, f"branch_{name}")
            with torch.no_grad():
                features = branch.encode_face(faces)  # identity (N, face_dim), patch tokens (N, P, W)
                text_target = branch.encode_text_features(plain_ids)  # (N, d_clip)
                image_target = self._image_target(name, batch)
            fused = branch(ids, has_face, face_features=features).fused  # (N, 77, D)
            heads = self.heads[name](fused)
            out[name] = BranchEmbeddings(
                heads.face, heads.text, features.identity.detach(), text_target, image_target
            )
        return out

    def _image_target(self, name: str, batch: dict) -> torch.Tensor | None:
        if self.loss_config.image_weight == 0:
            return None
        if name in self.image_towers:
            return self.image_towers[name](batch["image"])
        return _precomputed(batch, f"image_{name}", f"model.targets.image_{name}")

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> minus its batch mean when ``model.heads.center`` (and N > 1)."""
        if not self.center or x.shape[0] < 2:
            return x
        return x - x.mean(dim=0, keepdim=True)

    def forward(self, batch: dict) -> StepOutput:
        """The weighted stage-1 loss over the *global* batch (embeddings gathered from all processes)."""
        embeddings = self.embed(batch)
        identity = gather_batch(batch["identity"]) if self.loss_config.mask_same_identity else None
        cfg = self.loss_config
        total, logs = 0.0, {}
        for name, e in embeddings.items():
            branch = getattr(self.encoder, f"branch_{name}")
            face_pred, text_pred = (
                self._center(gather_batch(e.face_pred)),
                self._center(gather_batch(e.text_pred)),
            )
            out = alignment_loss(
                face_pred, text_pred, gather_batch(e.face_target),
                gather_batch(e.text_target), gather_batch(e.image_target), branch.logit_scale, branch.logit_bias,
                kind=cfg.kind, weights=(cfg.face_weight, cfg.text_weight, cfg.image_weight), identity=identity,
            )  # fmt: skip
            total = total + out.total
            for term in ("face", "text", "image"):
                if getattr(out, term) is not None:
                    logs[f"{name}/{term}"] = getattr(out, term).detach()
            logs[f"{name}/logit_scale"] = branch.logit_scale.detach()
        return StepOutput(loss=total, logs=logs)


def _precomputed(batch: dict, key: str, setting: str) -> torch.Tensor:
    if key not in batch.get("targets", {}):
        raise KeyError(
            f"{setting} is 'precomputed' but the data has no '{key}' targets; precompute them with "
            "`faceclip prepare` (image targets: --image-target-l/-g MODEL), or let a frozen model compute them."
        )
    return batch["targets"][key]


def image_target_source(config: Stage1Config, branch: str) -> str:
    """The image-target source of ``branch``: ``model.targets.image_<b>``, or the tiny random tower for a smoke run.

    A smoke run (a packaged random encoder such as ``faceclip-tiny``, e.g. ``stage1_tiny.yaml``) whose config
    says ``precomputed`` on data that holds no such targets (shards prepared without ``--image-target-<b>``)
    takes its image targets from the tiny random tower: no download, and random targets suit random weights.
    A real encoder never gets random targets: there the setting stands (and fails naming the fix).
    """
    from faceclip.models import list_configs

    source = getattr(config.model.targets, f"image_{branch}")
    data = config.data.source
    if source != PRECOMPUTED or data == "synthetic" or config.model.encoder not in list_configs():
        return source
    if branch in _prepared_image_targets(Path(data)):
        return source
    logger.warning(
        "model.targets.image_%s is 'precomputed' but %s holds no image_%s targets; this smoke run (random "
        "encoder %s) uses the tiny random image tower instead. For real targets: faceclip prepare ... "
        "--image-target-%s MODEL.", branch, data, branch, config.model.encoder, branch,
    )  # fmt: skip
    return TINY_RANDOM


def _prepared_image_targets(folder: Path) -> set[str]:
    """Branches whose image targets ``faceclip prepare`` stored in ``folder`` (empty when it records none)."""
    from faceclip.training.prepare import RECORD

    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return set()
    targets = record.get("image_targets") if isinstance(record, dict) else None
    return set(targets) if isinstance(targets, dict) else set()


def _chance(labels: torch.Tensor) -> float:
    return (labels[:, None] == labels[None, :]).float().mean().item()


@torch.no_grad()
def evaluate_retrieval(model: Stage1Model, batch: dict) -> dict[str, float]:
    """Retrieval accuracies on one held-out batch, per branch, with their chance levels.

    ``face_to_text``: a reference face's identity vector finds its fused text tokens (face head), any row of
    the same identity counting; ``text_to_image``: the fused tokens (text head) find the CLIP embedding of
    their image; ``text_to_text``: they find the CLIP embedding of their caption.
    """
    embeddings = model.embed(batch)
    identity = batch["identity"]
    captions = batch.get("caption_id", torch.tensor([hash(c) for c in batch["caption"]]))
    samples = torch.arange(identity.shape[0]) if "index" not in batch else batch["index"]
    metrics = {}
    for name, e in embeddings.items():
        face_pred, text_pred = model._center(e.face_pred), model._center(e.text_pred)
        device = text_pred.device
        metrics[f"{name}/face_to_text"] = retrieval_accuracy(e.face_target, face_pred, identity.to(device))
        metrics[f"{name}/text_to_text"] = retrieval_accuracy(text_pred, e.text_target, captions.to(device))
        if e.image_target is not None:
            metrics[f"{name}/text_to_image"] = retrieval_accuracy(
                text_pred, e.image_target, samples.to(device)
            )
    metrics["chance/face_to_text"] = _chance(identity.cpu())
    metrics["chance/text_to_text"] = _chance(captions.cpu())
    metrics["chance/text_to_image"] = _chance(samples.cpu())
    return metrics


class Stage1Task:
    """Builds the stage-1 model from a config and knows which of its tensors a checkpoint holds.

    A :class:`~faceclip.training.task.TrainingTask`.
    """

    name = "stage1"

    def __init__(self, config: Stage1Config):
        from faceclip.training.text_init import init_text_towers_from_sdxl

        mc = config.model
        unknown = sorted(set(mc.branches) - {"l", "g"})
        if unknown or not mc.branches:
            raise ValueError(f"model.branches must be a non-empty subset of [l, g], got {mc.branches}.")
        encoder = load_encoder(mc.encoder, mc.encoder_seed)
        if mc.init_text_towers_from:
            init_text_towers_from_sdxl(encoder, mc.init_text_towers_from, tuple(mc.branches))
        # The softmax loss has no bias term: a trainable logit_bias would get no gradient (DDP refuses that).
        parts = tuple(
            p for p in TRAINABLE_BRANCH_PARTS if not (config.loss.kind == "softmax" and p == "logit_bias")
        )
        set_trainable(encoder, mc.branches, parts)
        heads, towers = {}, {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            for name in mc.branches:
                branch = getattr(encoder, f"branch_{name}")
                text_dim = branch.config.text.projection_dim
                face_dim = branch.config.face.identity_dim
                heads[name] = AlignmentHeads(
                    width=branch.config.width, text_dim=text_dim, seq_len=encoder.context_length,
                    face_dim=face_dim, normalize=mc.heads.normalize,
                )  # fmt: skip
                if config.loss.init_logit_scale is not None:
                    branch.logit_scale.data.fill_(config.loss.init_logit_scale)
                if config.loss.init_logit_bias is not None:
                    branch.logit_bias.data.fill_(config.loss.init_logit_bias)
                source = image_target_source(config, name)
                towers[name] = (
                    build_image_tower(source, text_dim, seed=mc.targets.seed)
                    if config.loss.image_weight
                    else None
                )
        self.config = config
        self.model = Stage1Model(encoder, heads, towers, config)

    def to(self, device: torch.device) -> Stage1Task:
        self.model.to(device)
        return self

    def after_step(self) -> None:
        """Nothing to do after an optimiser step in stage 1 (no EMA)."""

    def ema_state(self) -> None:
        return None

    def load_ema_state(self, state: dict[str, torch.Tensor]) -> None:
        raise ValueError("--resume: the checkpoint holds EMA weights but stage 1 has no EMA.")

    def synthetic_target_dims(self) -> dict[str, int]:
        """Widths of the targets the config expects precomputed, for the synthetic data set to generate."""
        targets, dims = self.config.model.targets, {}
        for name in self.model.branches:
            branch = getattr(self.model.encoder, f"branch_{name}")
            if targets.face == PRECOMPUTED:
                dims[f"face_{name}"] = branch.config.face.identity_dim
            if targets.text == PRECOMPUTED:
                dims[f"text_{name}"] = branch.config.text.projection_dim
            if getattr(targets, f"image_{name}") == PRECOMPUTED and self.config.loss.image_weight:
                dims[f"image_{name}"] = branch.config.text.projection_dim
        return dims

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        model = model or self.model
        return {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state())
        if set(state) != expected:
            raise ValueError(
                f"--resume: the checkpoint's trainable tensors do not match this config "
                f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})."
            )
        self.model.load_state_dict(state, strict=False)

    def evaluate(self, batch: dict) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        metrics = evaluate_retrieval(self.model, batch)
        self.model.train(was_training)
        return metrics

    def save_final(self, folder: Path) -> None:
        """``folder/encoder`` (the aligned encoder, loadable with FaceCLIPEncoder.from_pretrained) and
        ``folder/heads_<b>``."""
        self.model.encoder.save_pretrained(folder / "encoder")
        for name, heads in self.model.heads.items():
            heads.save_pretrained(folder / f"heads_{name}")
