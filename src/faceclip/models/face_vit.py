"""The face encoder: an ArcFace-style Vision Transformer on aligned face crops.

Architecture of the InsightFace ``arcface_torch`` ViT used by FaceCLIP (Deng et al., ArcFace, CVPR 2019;
ViT backbone): non-overlapping patches, learned positional embedding, pre-LN blocks with ReLU6 MLPs, a final
LayerNorm, and an identity head (flatten -> Linear -> BN -> Linear -> BN) giving the identity vector.
Written from the architecture description; no code copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FaceViTConfig:
    """Sizes of the face ViT. The patch grid is ``image_size // patch_size`` on each side."""

    image_size: int = 112
    patch_size: int = 9
    width: int = 768
    depth: int = 24
    heads: int = 8
    mlp_dim: int = 3072
    identity_dim: int = 512
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 2e-5
    identity_head: bool = True  # False: no identity head (FaceT5 reads only the patch tokens)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclass
class FaceFeatures:
    """Face encoder outputs.

    Attributes:
        identity: (B, identity_dim) identity vector (class token), not normalised; None without an identity head.
        patch_tokens: (B, N, width) patch tokens after the final LayerNorm, N = grid_size**2.
    """

    identity: torch.Tensor | None
    patch_tokens: torch.Tensor

    def index_select(self, index: torch.Tensor) -> FaceFeatures:
        """Rows ``index`` of both tensors (used to expand features of distinct faces to a batch)."""
        return FaceFeatures(self.identity[index], self.patch_tokens[index])


class FaceAttention(nn.Module):
    """Multi-head self-attention with a bias-free fused qkv projection; the attention core runs in fp32."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).float()
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, d).to(x.dtype))


class FaceMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu6(self.fc1(x)))


class FaceBlock(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = FaceAttention(config.width, config.heads)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = FaceMLP(config.width, config.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FaceViT(nn.Module):
    """Face ViT: ``(B, 3, H, W)`` images in [0, 1] -> identity vector and patch tokens.

    Images of any size are resized bilinearly (no antialias) to ``image_size``; there is no mean/std
    normalisation, as in the released model.
    """

    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        self.config = config
        width, n = config.width, config.num_patches
        self.patch_embed = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, width))
        self.blocks = nn.ModuleList(FaceBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        if config.identity_head:
            self.feature_proj = nn.Linear(n * width, width, bias=False)
            self.feature_norm = nn.BatchNorm1d(width, eps=config.batch_norm_eps)
            self.identity_proj = nn.Linear(width, config.identity_dim, bias=False)
            self.identity_norm = nn.BatchNorm1d(config.identity_dim, eps=config.batch_norm_eps)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, images: torch.Tensor) -> FaceFeatures:
        """Encode faces.

        Args:
            images: (B, 3, H, W) float in [0, 1].

        Returns:
            FaceFeatures with identity (B, identity_dim) and patch_tokens (B, N, width).
        """
        size = self.config.image_size
        images = images.to(self.pos_embed.dtype)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, width); trailing pixels unseen
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)  # (B, N, width)
        if not self.config.identity_head:
            return FaceFeatures(identity=None, patch_tokens=tokens)
        identity = self.feature_norm(self.feature_proj(tokens.flatten(1)))
        identity = self.identity_norm(self.identity_proj(identity))  # (B, identity_dim)
        return FaceFeatures(identity=identity, patch_tokens=tokens)
