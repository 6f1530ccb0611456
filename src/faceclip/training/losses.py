"""Stage-1 alignment losses: pairwise contrastive terms between the fused tokens' projections and frozen targets.

Default: the sigmoid loss of SigLIP (Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
arXiv 2303.15343), ``L = -(1/N) sum_ij log sigmoid(z_ij * (exp(s) <a_i, b_j> + beta))`` with ``z_ij = +1`` on
the diagonal and ``-1`` elsewhere, using the branch's learnable ``logit_scale`` ``s`` and ``logit_bias`` ``beta``.
Option: the symmetric softmax (InfoNCE) loss of CLIP. Pairs of different samples showing the same identity
can be excluded, so they are never pushed apart as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceclip.training.config import LOSS_KINDS

MAX_LOGIT_SCALE = 100.0  # exp(s) is clamped here, as CLIP does, to keep early training stable


def same_identity_mask(identity: torch.Tensor | None) -> torch.Tensor | None:
    """Pairs ``(i, j)``, ``i != j``, with the same known identity label.

    Args:
        identity: (N,) int64 labels; negative values mean "unknown" and never match.

    Returns:
        (N, N) bool, or None when no labels are given.
    """
    if identity is None:
        return None
    same = identity[:, None] == identity[None, :]
    known = (identity >= 0)[:, None] & (identity >= 0)[None, :]
    eye = torch.eye(identity.shape[0], dtype=torch.bool, device=identity.device)
    return same & known & ~eye


def sigmoid_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss.

    Args:
        a: (N, d) embeddings (normally L2-normalised); row i is paired with row i of ``b``.
        b: (N, d) target embeddings.
        logit_scale: scalar ``s``; the logits use ``exp(s)``.
        logit_bias: scalar ``beta``.
        ignore: (N, N) bool, off-diagonal pairs left out of the sum (e.g. :func:`same_identity_mask`).

    Returns:
        scalar: ``-(1/N) sum_ij log sigmoid(z_ij * logit_ij)``.
    """
    n = a.shape[0]
    logits = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * (a @ b.T) + logit_bias  # (N, N)
    signs = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    terms = -F.logsigmoid(signs * logits)
    if ignore is not None:
        terms = terms.masked_fill(ignore, 0.0)
    return terms.sum() / n


def softmax_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric softmax cross-entropy (InfoNCE) loss.

    Args:
        a: (N, d) embeddings; row i is paired with row i of ``b``.
        b: (N, d) target embeddings.
        logit_scale: scalar ``s``; the logits use ``exp(s)``.
        ignore: (N, N) bool, off-diagonal pairs removed from both softmaxes.

    Returns:
        scalar: mean of the a->b and b->a cross-entropies.
    """
    logits = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * (a @ b.T)  # (N, N)
    if ignore is not None:
        logits = logits.masked_fill(ignore, float("-inf"))
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def contrastive_loss(
    kind: str,
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch to :func:`sigmoid_loss` or :func:`softmax_loss` (which ignores ``logit_bias``)."""
    if kind == "sigmoid":
        return sigmoid_loss(a, b, logit_scale, logit_bias, ignore)
    if kind == "softmax":
        return softmax_loss(a, b, logit_scale, ignore)
    raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got '{kind}'.")


@dataclass
class AlignmentLossOutput:
    """The weighted total and its unweighted terms (each a scalar tensor; a missing term is None)."""

    total: torch.Tensor
    face: torch.Tensor | None = None
    text: torch.Tensor | None = None
    image: torch.Tensor | None = None


def alignment_loss(
    face_pred: torch.Tensor,
    text_pred: torch.Tensor,
    face_target: torch.Tensor,
    text_target: torch.Tensor | None,
    image_target: torch.Tensor | None,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    *,
    kind: str = "sigmoid",
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    identity: torch.Tensor | None = None,
) -> AlignmentLossOutput:
    """The stage-1 loss of one branch: ``w_face L(face_pred, face_target) + w_text L(text_pred, text_target)
    + w_image L(text_pred, image_target)``.

    All embeddings are L2-normalised here. Same-identity pairs are ignored in the face term only (two photos
    of one person are true positives there; their captions and scenes still differ, so the text and image
    terms keep them as negatives). Pass ``identity=None`` to mask nothing.

    Args:
        face_pred: (N, 512) face-head output.
        text_pred: (N, d_clip) text-head output.
        face_target: (N, 512) frozen identity vectors of the reference faces.
        text_target: (N, d_clip) frozen CLIP text embeddings of the captions, or None to skip the term.
        image_target: (N, d_clip) frozen CLIP image embeddings of the images, or None to skip the term.
        logit_scale, logit_bias: the branch's scalars.
        kind: ``"sigmoid"`` or ``"softmax"``.
        weights: ``(w_face, w_text, w_image)``.
        identity: (N,) int64 identity labels (-1 = unknown), or None.
    """
    w_face, w_text, w_image = weights
    norm = lambda x: F.normalize(x.float(), dim=-1)  # noqa: E731
    scale, bias = logit_scale.float(), logit_bias.float()
    face = contrastive_loss(
        kind, norm(face_pred), norm(face_target), scale, bias, same_identity_mask(identity)
    )
    total = w_face * face
    text = image = None
    if text_target is not None:
        text = contrastive_loss(kind, norm(text_pred), norm(text_target), scale, bias)
        total = total + w_text * text
    if image_target is not None:
        image = contrastive_loss(kind, norm(text_pred), norm(image_target), scale, bias)
        total = total + w_image * image
    return AlignmentLossOutput(total=total, face=face, text=text, image=image)


@torch.no_grad()
def retrieval_accuracy(
    query: torch.Tensor, keys: torch.Tensor, identity: torch.Tensor | None = None
) -> float:
    """Top-1 retrieval accuracy of row i of ``query`` finding row i of ``keys`` by cosine similarity.

    Args:
        query: (N, d).
        keys: (N, d).
        identity: (N,) labels; when given, retrieving any key with the query's (known) identity counts.
    """
    sim = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T  # (N, N)
    best = sim.argmax(dim=1)
    hit = best == torch.arange(query.shape[0], device=query.device)
    if identity is not None:
        hit |= (identity[best] == identity) & (identity >= 0)
    return hit.float().mean().item()
