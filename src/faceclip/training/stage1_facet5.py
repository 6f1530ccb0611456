"""Stage 1 of FaceT5-FLUX: multi-modal alignment of the FaceT5 encoder.

The encoder's fused T5 stream Z (B, L, 4096) is pooled to one vector per sample, by default the mean over the
caption's T5 tokens (ids other than the pad id, the end token included; see docs/training.md for why), and two
projection heads (:class:`~faceclip.training.heads.AlignmentHeads`) map it to the target spaces:

- the face head is aligned with the frozen identity representation of the reference face: the mean of the
  frozen face ViT's patch tokens (FaceT5's ViT carries no identity head), or ``face_l`` from the data;
- the text head with the frozen text embedding of the caption: CLIP-L's pooled output (``clip``), the frozen
  T5 output averaged over the caption's tokens (``t5``), or ``text_l`` from the data;
- the same text-head vector with the frozen CLIP image embedding of the training image (``image_l`` from the
  data, or a CLIP vision tower as in :mod:`faceclip.training.stage1`).

Trainable: ``face_patch_proj``, the fuser, the heads, one ``logit_scale`` and one ``logit_bias``; the face
ViT, T5 and CLIP-L stay frozen, as released. Losses, retrieval metrics and checkpoints are stage 1's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch
from torch import nn

from faceclip.training.config import FaceT5Stage1Config
from faceclip.training.distributed import gather_batch
from faceclip.training.heads import AlignmentHeads
from faceclip.training.losses import alignment_loss
from faceclip.training.stage1 import BranchEmbeddings, Stage1Task, _precomputed, _prepared_image_targets
from faceclip.training.targets import PRECOMPUTED, TINY_RANDOM, build_image_tower
from faceclip.training.task import StepOutput

logger = logging.getLogger(__name__)

BRANCH = "t5"
"""The one branch name of FaceT5 stage 1 (log and metric names ``t5/face``, ``eval_end/t5/face_to_text`` ...)."""
TARGETS = {"face": "face_l", "text": "text_l", "image": "image_l"}
"""Precomputed target names: those of the SDXL variant's L branch, whose face ViT and CLIP-L FaceT5 shares
(``faceclip prepare --image-target-l openai/clip-vit-large-patch14`` stores ``image_l``)."""
TRAINABLE_ENCODER_PARTS = ("face_patch_proj", "fuser")


def load_facet5_training_encoder(name: str, seed: int = 0, tokenizer=None):
    """The FaceT5 encoder a stage starts from, with a T5 tokenizer attached.

    Args:
        name: a packaged FaceT5 config (``facet5-tiny``, ``facet5-flux``: random weights, seeded, with the
            character-level tiny T5 tokenizer) or any FaceT5 encoder argument of
            :func:`faceclip.registry.load_encoder` (e.g. a stage-1 ``final/encoder`` folder).
        tokenizer: the T5 tokenizer to attach when the loaded encoder ships none (stage 2: the pipeline's).

    Raises:
        ValueError: the loaded encoder ships no T5 tokenizer and none is given.
    """
    from faceclip.models.facet5_encoder import create_facet5_encoder, list_facet5_configs

    if name in list_facet5_configs():
        from faceclip.pipelines.flux.tiny import build_tiny_t5_tokenizer

        logger.warning("encoder '%s' starts from random weights (seed %d)", name, seed)
        encoder = create_facet5_encoder(name, seed=seed)
        encoder.t5_tokenizer = build_tiny_t5_tokenizer()
        return encoder
    from faceclip.registry import load_encoder

    encoder = load_encoder(name, family="facet5-flux", seed=seed)
    encoder.t5_tokenizer = encoder.t5_tokenizer or tokenizer
    if encoder.t5_tokenizer is None:
        raise ValueError(
            f"model.encoder: '{name}' ships no T5 tokenizer; use the released weights or a pipeline folder "
            "saved with its tokenizer_2/."
        )
    return encoder


def smoke_run_targets(config: FaceT5Stage1Config) -> FaceT5Stage1Config:
    """``config``, or for a smoke run on real data a copy whose missing precomputed targets are computed.

    As for the SDXL stage 1 (:func:`faceclip.training.stage1.image_target_source`): only a packaged random
    encoder (``facet5-tiny``) on shards or a manifest gets them; ``faceclip prepare`` stores no face or text
    targets, so ``precomputed`` face / text become the frozen ViT / CLIP-L, and image targets the tiny random
    tower unless the shards hold ``image_l``. A real encoder keeps its settings (and fails naming the fix).
    """
    from faceclip.models.facet5_encoder import list_facet5_configs

    targets, data = config.model.targets, config.data.source
    if data == "synthetic" or config.model.encoder not in list_facet5_configs():
        return config
    image_ready = "l" in _prepared_image_targets(Path(data))
    changes = {
        key: value
        for key, value, needed in (
            ("face", "encoder", True),
            ("text", "clip", True),
            ("image", TINY_RANDOM, not image_ready),
        )
        if getattr(targets, key) == PRECOMPUTED and needed
    }
    if not changes:
        return config
    logger.warning(
        "this smoke run (random encoder %s) on %s computes the targets the data lacks: %s. For real image "
        "targets: faceclip prepare ... --image-target-l openai/clip-vit-large-patch14.",
        config.model.encoder, data, ", ".join(f"model.targets.{k}={v}" for k, v in changes.items()),
    )  # fmt: skip
    model = dataclasses.replace(config.model, targets=dataclasses.replace(targets, **changes))
    return dataclasses.replace(config, model=model)


def masked_mean(tokens: torch.Tensor, ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """(B, L, W) tokens averaged over the positions whose (B, L) id is not ``pad_id`` -> (B, W)."""
    keep = (ids != pad_id).to(tokens.dtype)[..., None]  # (B, L, 1)
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class FaceT5Stage1Model(nn.Module):
    """The FaceT5 encoder, its heads and the frozen targets, computing the stage-1 loss of a batch.

    Args:
        encoder: a :class:`~faceclip.models.facet5_encoder.FaceT5Encoder` with ``t5_tokenizer`` set.
        heads: the face and text heads on the pooled fused stream.
        image_tower: a frozen CLIP image tower, or None to read ``targets[TARGETS["image"]]`` from the batch.
        config: the run config.
    """

    def __init__(self, encoder: nn.Module, heads: AlignmentHeads, image_tower: nn.Module | None,
                 config: FaceT5Stage1Config):  # fmt: skip
        super().__init__()
        self.encoder, self.heads, self.image_tower = encoder, heads, image_tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.config = config
        self.branches = [BRANCH]

    def train(self, mode: bool = True) -> FaceT5Stage1Model:
        super().train(mode)
        self.encoder.eval()  # frozen parts and a dropout-free fuser: reproducible across process counts
        if self.image_tower is not None:
            self.image_tower.eval()
        return self

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) minus its batch mean when ``model.heads.center`` (and N > 1)."""
        if not self.config.model.heads.center or x.shape[0] < 2:
            return x
        return x - x.mean(dim=0, keepdim=True)

    @torch.no_grad()
    def _targets(self, batch: dict, faces: torch.Tensor, t5_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Frozen face (N, face_dim), text (N, text_dim) and image (N, text_dim) or None targets."""
        targets, encoder = self.config.model.targets, self.encoder
        if targets.face == PRECOMPUTED:
            face = _precomputed(batch, TARGETS["face"], "model.targets.face")
        else:
            face = encoder.face_encoder(faces).patch_tokens.mean(dim=1)  # (N, ViT width)
        if targets.text == PRECOMPUTED:
            text = _precomputed(batch, TARGETS["text"], "model.targets.text")
        elif targets.text == "clip":
            from faceclip.models.facet5_encoder import flux_clip_input_ids

            ids = flux_clip_input_ids(batch["caption"], encoder.clip_context_length).to(faces.device)
            text = encoder.text_encoder(input_ids=ids).pooler_output  # (N, 768)
        else:
            text = masked_mean(encoder.text_encoder_2(input_ids=t5_ids).last_hidden_state, t5_ids)
        image = None
        if self.config.loss.image_weight:
            image = (self.image_tower(batch["image"]) if self.image_tower is not None
                     else _precomputed(batch, TARGETS["image"], "model.targets.image"))  # fmt: skip
        return face, text, image

    def embed(self, batch: dict) -> dict[str, BranchEmbeddings]:
        """``{"t5": BranchEmbeddings}``: head outputs on the pooled fused stream, and the frozen targets."""
        faces = batch["face"] * batch["has_face"].to(batch["face"].device)[:, None, None, None]
        t5_ids = self.encoder.tokenize_t5(batch["caption"]).to(faces.device)  # (N, L)
        fused = self.encoder(face_images=faces, prompts=batch["caption"], t5_input_ids=t5_ids).prompt_embeds
        pooled = masked_mean(fused, t5_ids)[:, None] if self.config.model.pooling == "mean" else fused
        heads = self.heads(pooled)
        face, text, image = self._targets(batch, faces, t5_ids)
        return {BRANCH: BranchEmbeddings(heads.face, heads.text, face, text, image)}

    def forward(self, batch: dict) -> StepOutput:
        """The weighted alignment loss over the global batch (embeddings gathered from all processes)."""
        e, cfg = self.embed(batch)[BRANCH], self.config.loss
        identity = gather_batch(batch["identity"]) if cfg.mask_same_identity else None
        out = alignment_loss(
            self._center(gather_batch(e.face_pred)), self._center(gather_batch(e.text_pred)),
            gather_batch(e.face_target), gather_batch(e.text_target), gather_batch(e.image_target),
            self.logit_scale, self.logit_bias, kind=cfg.kind,
            weights=(cfg.face_weight, cfg.text_weight, cfg.image_weight), identity=identity,
        )  # fmt: skip
        terms = {t: getattr(out, t) for t in ("face", "text", "image") if getattr(out, t) is not None}
        logs = {f"{BRANCH}/{t}": value.detach() for t, value in terms.items()}
        return StepOutput(loss=out.total, logs={**logs, f"{BRANCH}/logit_scale": self.logit_scale.detach()})


class FaceT5Stage1Task(Stage1Task):
    """Builds the FaceT5 stage-1 model from a config; checkpoints and retrieval metrics as
    :class:`~faceclip.training.stage1.Stage1Task`. A :class:`~faceclip.training.task.TrainingTask`."""

    name = "stage1"

    def __init__(self, config: FaceT5Stage1Config):
        # Stage1Task.__init__ builds the SDXL encoder's branches, so it is not called.
        config = smoke_run_targets(config)
        mc = config.model
        encoder = load_facet5_training_encoder(mc.encoder, mc.encoder_seed)
        encoder.requires_grad_(False)
        for part in TRAINABLE_ENCODER_PARTS:
            getattr(encoder, part).requires_grad_(True)
        self.config = config
        width, length = encoder.text_encoder_2.config.d_model, encoder.config.max_sequence_length
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            heads = AlignmentHeads(
                width=width, text_dim=self.text_dim(encoder), seq_len=1 if mc.pooling == "mean" else length,
                face_dim=self.face_dim(encoder), normalize=mc.heads.normalize,
            )  # fmt: skip
        tower = None
        if config.loss.image_weight:
            tower = build_image_tower(mc.targets.image, self.text_dim(encoder), seed=mc.targets.seed)
        self.model = FaceT5Stage1Model(encoder, heads, tower, config)
        if config.loss.init_logit_scale is not None:
            self.model.logit_scale.data.fill_(config.loss.init_logit_scale)
        if config.loss.init_logit_bias is not None:
            self.model.logit_bias.data.fill_(config.loss.init_logit_bias)
        if config.loss.kind == "softmax":  # no bias term: it would get no gradient (DDP refuses that)
            self.model.logit_bias.requires_grad_(False)

    def face_dim(self, encoder) -> int:
        """Width of the face target: the ViT width, or ``model.heads.face_dim`` for precomputed targets."""
        if self.config.model.targets.face == PRECOMPUTED:
            return self.config.model.heads.face_dim
        return encoder.face_encoder.config.width

    def text_dim(self, encoder) -> int:
        """Width of the text (and image) targets: CLIP-L's (also for precomputed ones) or T5's."""
        if self.config.model.targets.text == "t5":
            return encoder.text_encoder_2.config.d_model
        return encoder.text_encoder.config.hidden_size

    def synthetic_target_dims(self) -> dict[str, int]:
        """The precomputed targets the config expects, for the synthetic data set to generate."""
        targets, encoder, dims = self.config.model.targets, self.model.encoder, {}
        if targets.face == PRECOMPUTED:
            dims[TARGETS["face"]] = self.face_dim(encoder)
        if targets.text == PRECOMPUTED:
            dims[TARGETS["text"]] = self.text_dim(encoder)
        if targets.image == PRECOMPUTED and self.config.loss.image_weight:
            dims[TARGETS["image"]] = self.text_dim(encoder)
        return dims

    def save_final(self, folder: Path) -> None:
        """``folder/encoder`` (``FaceT5Encoder.from_pretrained``) and ``folder/heads``."""
        self.model.encoder.save_pretrained(folder / "encoder")
        self.model.heads.save_pretrained(folder / "heads")
