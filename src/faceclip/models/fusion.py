"""The face-text fuser: a Grounding DINO style feature enhancer (Liu et al., 2023, arXiv 2303.05499).

Each layer runs, in order: bi-directional cross-attention between face patches and text tokens, a text
self-attention layer (the "text enhancer"), and a single-level deformable self-attention layer on the face
patch grid (Zhu et al., Deformable DETR, arXiv 2010.04159), computed in pure PyTorch with ``grid_sample``.
Nothing is masked: padding tokens take part, as in the released model. The fuser returns the text tokens;
the image side of the last layer cannot reach them and is not built. Written from the papers and the
FaceCLIP specification; no code copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FuserConfig:
    """Sizes of the fuser (``width`` is the branch width D)."""

    layers: int = 6
    deform_heads: int = 8
    deform_points: int = 4
    deform_mlp_dim: int = 2048
    text_heads: int = 4
    text_mlp_dim: int = 1024
    fusion_dim: int = 1024
    fusion_heads: int = 4
    layer_scale_init: float = 1e-4
    dropout: float = 0.0


class BiAttention(nn.Module):
    """Bi-directional cross-attention between image tokens ``v`` and text tokens ``t`` with layer scale.

    Both directions share one attention-logit matrix ``A = v_proj(v) l_proj(t)^T / sqrt(head_dim)``:
    image tokens read text values through ``softmax(A)``, text tokens read image values through
    ``softmax(A^T)``. The residuals are added to the *normalised* inputs. With ``update_image=False`` only
    the text side is computed (and built).
    """

    def __init__(self, width: int, config: FuserConfig, update_image: bool = True) -> None:
        super().__init__()
        self.heads = config.fusion_heads
        self.dropout = config.dropout
        self.update_image = update_image
        dim = config.fusion_dim
        self.layer_norm_v = nn.LayerNorm(width)
        self.layer_norm_l = nn.LayerNorm(width)
        self.v_proj = nn.Linear(width, dim)
        self.l_proj = nn.Linear(width, dim)
        self.values_v_proj = nn.Linear(width, dim)
        self.out_l_proj = nn.Linear(dim, width)
        self.gamma_l = nn.Parameter(torch.full((width,), config.layer_scale_init))
        if update_image:
            self.values_l_proj = nn.Linear(width, dim)
            self.out_v_proj = nn.Linear(dim, width)
            self.gamma_v = nn.Parameter(torch.full((width,), config.layer_scale_init))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), dropout_p=p)
        return out.transpose(1, 2).flatten(2)

    def forward(self, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Nv, D) image tokens, (B, Nt, D) text tokens -> updated (image, text); image is None if not updated."""
        v, t = self.layer_norm_v(v), self.layer_norm_l(t)
        query_v, key_t = self.v_proj(v), self.l_proj(t)
        t_out = t + self.gamma_l * self.out_l_proj(self._attend(key_t, query_v, self.values_v_proj(v)))
        if not self.update_image:
            return None, t_out
        v_out = v + self.gamma_v * self.out_v_proj(self._attend(query_v, key_t, self.values_l_proj(t)))
        return v_out, t_out


class TextEnhancerLayer(nn.Module):
    """Post-LN text self-attention layer; queries and keys carry the positional embedding, values do not."""

    def __init__(self, width: int, config: FuserConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            width, config.text_heads, dropout=config.dropout, batch_first=True
        )
        self.linear1 = nn.Linear(width, config.text_mlp_dim)
        self.linear2 = nn.Linear(config.text_mlp_dim, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(B, Nt, D) text tokens and positional embedding -> (B, Nt, D)."""
        qk = t + pos
        t = self.norm1(t + self.dropout(self.self_attn(qk, qk, t, need_weights=False)[0]))
        return self.norm2(t + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(t))))))


class DeformableAttention(nn.Module):
    """Single-level multi-head deformable attention over a ``(H, W)`` token grid.

    Each query predicts ``points`` sampling offsets and softmaxed weights per head; values are sampled
    bilinearly (zero padding) around the query's reference point with ``grid_sample``.
    """

    def __init__(self, width: int, heads: int, points: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"deform_heads={heads} must divide the fuser width {width}.")
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(width, heads * points * 2)
        self.attention_weights = nn.Linear(width, heads * points)
        self.value_proj = nn.Linear(width, width)
        self.output_proj = nn.Linear(width, width)

    def forward(
        self, query: torch.Tensor, value: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Attend.

        Args:
            query: (B, N, D) queries, N = H * W.
            value: (B, N, D) grid tokens, row-major.
            reference: (N, 2) reference points (x, y) in [0, 1].
            grid: (H, W).

        Returns:
            (B, N, D).
        """
        b, n, d = query.shape
        h, w = grid
        heads, points, head_dim = self.heads, self.points, d // self.heads
        values = self.value_proj(value).view(b, h, w, heads, head_dim).permute(0, 3, 4, 1, 2)
        values = values.reshape(b * heads, head_dim, h, w)
        offsets = self.sampling_offsets(query).view(b, n, heads, points, 2)
        scale = torch.tensor([w, h], dtype=offsets.dtype, device=offsets.device)
        locations = reference[None, :, None, None, :] + offsets / scale  # (B, N, heads, points, 2)
        sample_grid = (2 * locations - 1).permute(0, 2, 1, 3, 4).reshape(b * heads, n, points, 2)
        sampled = F.grid_sample(
            values, sample_grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        weights = self.attention_weights(query).view(b, n, heads, points).softmax(-1)
        weights = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, n, points)
        out = (sampled * weights).sum(-1)  # (B*heads, head_dim, N)
        out = out.view(b, heads * head_dim, n).transpose(1, 2)
        return self.output_proj(out)


class DeformableLayer(nn.Module):
    """Post-LN deformable self-attention layer on the face patch grid."""

    def __init__(self, width: int, config: FuserConfig) -> None:
        super().__init__()
        self.self_attn = DeformableAttention(width, config.deform_heads, config.deform_points)
        self.norm1 = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, config.deform_mlp_dim)
        self.linear2 = nn.Linear(config.deform_mlp_dim, width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, v: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """(B, N, D) face tokens and positional embedding -> (B, N, D)."""
        v = self.norm1(v + self.dropout(self.self_attn(v + pos, v, reference, grid)))
        return self.norm2(v + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(v))))))


class FuserLayer(nn.Module):
    """Bi-attention, then text enhancer, then (except in the last layer) the deformable image layer."""

    def __init__(self, width: int, config: FuserConfig, last: bool) -> None:
        super().__init__()
        self.bi_attn = BiAttention(width, config, update_image=not last)
        self.text_layer = TextEnhancerLayer(width, config)
        self.image_layer = None if last else DeformableLayer(width, config)

    def forward(self, v, v_pos, t, t_pos, reference, grid):
        v, t = self.bi_attn(v, t)
        t = self.text_layer(t, t_pos)
        if self.image_layer is not None:
            v = self.image_layer(v, v_pos, reference, grid)
        return v, t


class FaceTextFuser(nn.Module):
    """Fuse text tokens with face patch tokens; returns the fused text tokens."""

    def __init__(self, width: int, config: FuserConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            FuserLayer(width, config, last=i == config.layers - 1) for i in range(config.layers)
        )

    @staticmethod
    def reference_points(grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(H*W, 2) cell centres (x, y) in [0, 1], row-major."""
        h, w = grid
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)

    def forward(
        self,
        face_tokens: torch.Tensor,
        face_pos: torch.Tensor,
        text_tokens: torch.Tensor,
        text_pos: torch.Tensor,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """Fuse.

        Args:
            face_tokens: (B, H*W, D) projected face patch tokens.
            face_pos: (B or 1, H*W, D) projected face positional embedding.
            text_tokens: (B, L, D) projected text tokens.
            text_pos: (B or 1, L, D) projected text positional embedding.
            grid: (H, W) of the face patch grid.

        Returns:
            (B, L, D) fused text tokens.
        """
        reference = self.reference_points(grid, face_tokens.device, face_tokens.dtype)
        v, t = face_tokens, text_tokens
        for layer in self.layers:
            v, t = layer(v, face_pos, t, text_pos, reference, grid)
        return t
