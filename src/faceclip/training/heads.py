"""Stage-1 projection heads on the fused text tokens Z of one encoder branch.

As in the released code, each head flattens the whole sequence and applies one linear layer:
``face: (B, 77*D) -> (B, 512)`` (aligned with the face-recognition identity vector) and
``text: (B, 77*D) -> (B, d_clip)`` (aligned with the CLIP text and image embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


@dataclass
class AlignmentHeadsOutput:
    """face: (B, face_dim); text: (B, text_dim). L2-normalised when the heads were built with normalize=True."""

    face: torch.Tensor
    text: torch.Tensor


class AlignmentHeads(ModelMixin, ConfigMixin):
    """The face and text projection heads of one branch (trained in stage 1, unused at inference).

    Args:
        width: D, the fused token width (768 for the L branch, 1280 for bigG).
        text_dim: width of the CLIP embeddings the text head is aligned with.
        seq_len: number of fused tokens (77).
        face_dim: width of the identity vector (512).
        normalize: L2-normalise the outputs.
    """

    @register_to_config
    def __init__(
        self, width: int, text_dim: int, seq_len: int = 77, face_dim: int = 512, normalize: bool = True
    ):
        super().__init__()
        self.face = nn.Linear(seq_len * width, face_dim)
        self.text = nn.Linear(seq_len * width, text_dim)

    def forward(self, fused: torch.Tensor) -> AlignmentHeadsOutput:
        """fused: (B, seq_len, width) -> :class:`AlignmentHeadsOutput`."""
        flat = fused.flatten(1)  # (B, seq_len * width)
        face, text = self.face(flat), self.text(flat)
        if self.config.normalize:
            face, text = F.normalize(face, dim=-1), F.normalize(text, dim=-1)
        return AlignmentHeadsOutput(face=face, text=text)
