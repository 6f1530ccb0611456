"""CLIP text tower (Radford et al., 2021) built from ``transformers`` CLIP encoder layers.

FaceCLIP writes a face embedding into the token embedding of the ``id`` word *before* the positional
embedding is added, so the tower takes token ids plus optional replacement embeddings, and returns the last
hidden state after the final LayerNorm (not the penultimate layer used by stock SDXL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer


@dataclass(frozen=True)
class TextTowerConfig:
    """Sizes of a CLIP text tower. ``hidden_act`` is ``"quick_gelu"`` (ViT-L/14) or ``"gelu"`` (bigG, exact)."""

    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    hidden_act: str = "quick_gelu"
    vocab_size: int = 49408
    context_length: int = 77
    projection_dim: int = 768
    layer_norm_eps: float = 1e-5

    def to_transformers(self) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.width,
            intermediate_size=self.mlp_dim,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            max_position_embeddings=self.context_length,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            projection_dim=self.projection_dim,
            attn_implementation="sdpa",
        )


class CLIPTextTower(nn.Module):
    """Causal CLIP text transformer with token-embedding replacement."""

    def __init__(self, config: TextTowerConfig) -> None:
        super().__init__()
        self.config = config
        hf_config = config.to_transformers()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.layers = nn.ModuleList(CLIPEncoderLayer(hf_config) for _ in range(config.layers))
        self.final_layer_norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.empty(config.width, config.projection_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=config.width**-0.5)

    def forward(
        self,
        input_ids: torch.Tensor,
        replace_mask: torch.Tensor | None = None,
        replace_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the tower.

        Args:
            input_ids: (B, L) token ids, L <= context_length.
            replace_mask: (B, L) bool; token embeddings at True positions are replaced.
            replace_embeds: (M, width) replacement embeddings, M = replace_mask.sum(), in row-major order.

        Returns:
            (B, L, width) last hidden state after the final LayerNorm.
        """
        x = self.token_embedding(input_ids)  # (B, L, width)
        if replace_mask is not None and replace_embeds is not None:
            x = x.masked_scatter(replace_mask[..., None], replace_embeds.to(x.dtype))
        length = input_ids.shape[1]
        x = x + self.position_embedding[:length]
        causal = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        causal = causal[None, None]  # (1, 1, L, L) additive mask
        for layer in self.layers:
            x = layer(x, causal)
        return self.final_layer_norm(x)

    @staticmethod
    def pool(hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden state at the end-of-text token (the largest id of each row): (B, L, D) -> (B, D)."""
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), input_ids.argmax(dim=-1)]
