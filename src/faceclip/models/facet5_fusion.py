"""The FaceT5 fuser: face patch tokens and T5 text tokens fused at the T5 width (4096 in FaceT5-FLUX).

Each layer runs, in order: the bi-directional cross-attention of the SDXL variant's fuser
(:class:`faceclip.models.fusion.BiAttention`, residuals onto the normalised inputs), a post-LN text
self-attention layer whose queries and keys carry a fixed sinusoidal position table
(:class:`faceclip.models.fusion.TextEnhancerLayer`), and a post-LN face layer that is **not** deformable.

The released face layer is a sequence-first multi-head attention fed a batch-first ``(B, 144, D)`` tensor, so it
attends across the batch, once per patch position. The released inference calls the encoder with one face at a
time: each patch token then attends only to itself, and the attention reduces to its value and output
projections. :class:`PatchwiseFaceLayer` computes exactly that for every row, so a row's output depends only on
that row's inputs. The face stream after the last layer's text layer is never read: the last layer builds
neither its face layer nor the face-side update of its bi-attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from faceclip.models.fusion import BiAttention, FuserConfig, TextEnhancerLayer


@dataclass(frozen=True)
class FaceT5FuserConfig:
    """Sizes of the FaceT5 fuser (its width is the T5 width)."""

    layers: int = 6
    fusion_dim: int = 1024
    fusion_heads: int = 4
    text_heads: int = 4
    text_mlp_dim: int = 1024
    face_mlp_dim: int = 2048
    layer_scale_init: float = 1e-4
    max_text_length: int = 512

    def shared_parts(self) -> FuserConfig:
        """The settings of the bi-attention and text layers, in the SDXL fuser's terms."""
        return FuserConfig(
            layers=self.layers,
            text_heads=self.text_heads,
            text_mlp_dim=self.text_mlp_dim,
            fusion_dim=self.fusion_dim,
            fusion_heads=self.fusion_heads,
            layer_scale_init=self.layer_scale_init,
        )


def sinusoid_table(length: int, width: int) -> torch.Tensor:
    """The fixed text position table, computed in float32: (1, length, width).

    Even channels hold ``sin(p * w_i)``, odd channels ``cos(p * w_i)``, ``w_i = 10000 ** (-2i / width)``.
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table[None]


class PatchwiseFaceLayer(nn.Module):
    """The released face layer at one face per call: each patch attends only to itself.

    ``x = norm1(x + out_proj(value_proj(x)))``, then ``x = norm2(x + linear2(relu(linear1(x))))``.
    """

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.value_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.linear1 = nn.Linear(width, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, N, D) face tokens -> (B, N, D)."""
        v = self.norm1(v + self.out_proj(self.value_proj(v)))
        return self.norm2(v + self.linear2(F.relu(self.linear1(v))))


class FaceT5FuserLayer(nn.Module):
    """Bi-attention, then the text layer, then (except in the last layer) the face layer."""

    def __init__(self, width: int, config: FaceT5FuserConfig, last: bool) -> None:
        super().__init__()
        self.bi_attn = BiAttention(width, config.shared_parts(), update_image=not last)
        self.text_layer = TextEnhancerLayer(width, config.shared_parts())
        self.face_layer = None if last else PatchwiseFaceLayer(width, config.face_mlp_dim)

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, t_pos: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, N, D) face tokens, (B, L, D) text tokens, (1, L, D) positions -> (face or None, text)."""
        v, t = self.bi_attn(v, t)
        t = self.text_layer(t, t_pos)
        if self.face_layer is not None:
            v = self.face_layer(v)
        return v, t


class FaceT5Fuser(nn.Module):
    """Fuse T5 text tokens with projected face patch tokens; returns the fused text tokens.

    Holds the position table as a buffer, saved with the weights: the released checkpoint stores it (rounded
    to bf16), and the released model adds the stored copy.
    """

    def __init__(self, width: int, config: FaceT5FuserConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("text_pos_embed", sinusoid_table(config.max_text_length, width))
        self.layers = nn.ModuleList(
            FaceT5FuserLayer(width, config, last=i == config.layers - 1) for i in range(config.layers)
        )

    def forward(self, face_tokens: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        """Fuse.

        Args:
            face_tokens: (B, N, D) projected face patch tokens.
            text_tokens: (B, L, D) T5 last hidden state, L <= max_text_length.

        Returns:
            (B, L, D) fused text tokens.
        """
        t_pos = self.text_pos_embed[:, : text_tokens.shape[1]].to(text_tokens.dtype)
        v, t = face_tokens, text_tokens
        for layer in self.layers:
            v, t = layer(v, t, t_pos)
        return t
