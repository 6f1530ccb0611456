"""One FaceCLIP branch: face ViT + CLIP text tower + projections + face-text fuser.

The face's identity vector is L2-normalised, projected to the text width and written over the token
embedding of the prompt prefix's ``id`` word; the text tower's output is then fused with the face patch
tokens. FaceCLIP (Liu et al., 2025, arXiv 2504.14202) runs two branches, one per SDXL text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from faceclip.models.face_vit import FaceFeatures, FaceViT, FaceViTConfig
from faceclip.models.fusion import FaceTextFuser, FuserConfig
from faceclip.models.text_tower import CLIPTextTower, TextTowerConfig


@dataclass(frozen=True)
class BranchConfig:
    """Sizes of one branch, built from the nested ``{"text": ..., "face": ..., "fuser": ...}`` dict."""

    text: TextTowerConfig
    face: FaceViTConfig
    fuser: FuserConfig

    @classmethod
    def from_dict(cls, config: dict) -> BranchConfig:
        unknown = set(config) - {"text", "face", "fuser"}
        if unknown:
            raise ValueError(
                f"branch config: unknown sections {sorted(unknown)}; expected text, face, fuser."
            )
        return cls(
            text=TextTowerConfig(**config.get("text", {})),
            face=FaceViTConfig(**config.get("face", {})),
            fuser=FuserConfig(**config.get("fuser", {})),
        )

    @property
    def width(self) -> int:
        return self.text.width


@dataclass
class BranchOutput:
    """Outputs of one branch for a batch of B prompts.

    Attributes:
        fused: (B, L, D) fused text tokens (the fuser's output; FaceCLIP's prompt embedding for this branch).
        pooled: (B, D) text tower output at the end-of-text token (after the final LayerNorm, not projected).
        text_hidden: (B, L, D) text tower output (after the final LayerNorm), face token inserted.
        face: the face features used for each row.
    """

    fused: torch.Tensor
    pooled: torch.Tensor
    text_hidden: torch.Tensor
    face: FaceFeatures


class FaceCLIPBranch(nn.Module):
    """A FaceCLIP branch.

    The face ViT and the text tower are frozen (``requires_grad=False``); the five projections, the fuser and
    ``logit_scale``/``logit_bias`` are trainable.

    Args:
        config: the branch sizes.
        id_position: index of the ``id`` token in the tokenized prompt prefix.
        id_token_id: token id of ``id``.
        own_face_encoder: False to build no face ViT; one must then be attached with ``tie_face_encoder``.
    """

    def __init__(
        self, config: BranchConfig, id_position: int, id_token_id: int, own_face_encoder: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self.id_position = id_position
        self.id_token_id = id_token_id
        width, face_width = config.width, config.face.width
        self.text_tower = CLIPTextTower(config.text)
        if own_face_encoder:
            self.face_encoder = FaceViT(config.face)
        self.face_token_proj = nn.Linear(config.face.identity_dim, width)
        self.face_patch_proj = nn.Linear(face_width, width)
        self.face_pos_proj = nn.Linear(face_width, width)
        self.text_embed_proj = nn.Linear(width, width)
        self.text_pos_proj = nn.Linear(width, width)
        self.fuser = FaceTextFuser(width, config.fuser)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # log(1 / 0.07)
        self.logit_bias = nn.Parameter(torch.tensor(0.0))
        self.freeze_backbones()

    def freeze_backbones(self) -> None:
        """Freeze the face ViT and the text tower (they are never trained in FaceCLIP)."""
        self.text_tower.requires_grad_(False)
        if self.owns_face_encoder:
            self.face_encoder.requires_grad_(False)

    def tie_face_encoder(self, face_encoder: FaceViT) -> None:
        """Use another branch's face ViT (not registered here, so its weights are stored once)."""
        if "face_encoder" in self._modules:
            raise RuntimeError("tie_face_encoder: this branch already owns a face encoder.")
        object.__setattr__(self, "_tied_face_encoder", face_encoder)

    def __getattr__(self, name: str):
        if name == "face_encoder" and "_tied_face_encoder" in self.__dict__:
            return self.__dict__["_tied_face_encoder"]
        return super().__getattr__(name)

    @property
    def owns_face_encoder(self) -> bool:
        return "face_encoder" in self._modules

    def encode_face(self, faces: torch.Tensor) -> FaceFeatures:
        """(B, 3, H, W) faces in [0, 1] -> FaceFeatures(identity (B, 512), patch_tokens (B, N, face width))."""
        return self.face_encoder(faces)

    def check_input_ids(self, input_ids: torch.Tensor, has_face: torch.Tensor) -> None:
        """Raise ValueError when a face row of ``input_ids`` (B, L) lacks the ``id`` token at ``id_position``.

        Not run by :meth:`encode_text` (reading the ids back would wait for the device on every call): ids made by
        ``FaceCLIPEncoder.tokenize(prompts, has_face)`` always pass; call it where ids come from elsewhere.
        """
        ids_at = input_ids[:, self.id_position].cpu()
        bad = has_face.cpu() & (ids_at != self.id_token_id)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ValueError(
                f"input_ids: row {row} has a face but token {int(ids_at[row])} at position {self.id_position}, "
                f"not the id token {self.id_token_id}; tokenize face rows with the prompt prefix "
                "(FaceCLIPEncoder.tokenize(prompts, has_face))."
            )

    def encode_text(
        self,
        input_ids: torch.Tensor,
        identity: torch.Tensor | None = None,
        has_face: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the text tower, writing the projected identity over the ``id`` token of face rows.

        Args:
            input_ids: (B, L) token ids; face rows must hold ``id`` at ``id_position`` (not checked here, see
                :meth:`check_input_ids`).
            identity: (B, identity_dim) identity vectors (un-normalised), or None for text only.
            has_face: (B,) bool, the rows whose ``id`` token is replaced; None = all rows when identity is given.

        Returns:
            (B, L, D) text tower output after the final LayerNorm.
        """
        if identity is None:
            return self.text_tower(input_ids)
        if has_face is None:
            has_face = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        has_face = has_face.to(input_ids.device)
        replace_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        replace_mask[:, self.id_position] = has_face
        face_tokens = self.face_token_proj(identity / identity.norm(dim=-1, keepdim=True))  # (B, D)
        return self.text_tower(input_ids, replace_mask, face_tokens[has_face])

    def encode_text_features(
        self,
        input_ids: torch.Tensor,
        identity: torch.Tensor | None = None,
        has_face: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CLIP text embedding: final-LayerNorm state at the end-of-text token ``@ text_projection``.

        Returns:
            (B, projection_dim), not normalised.
        """
        hidden = self.encode_text(input_ids, identity, has_face)
        return self.text_tower.pool(hidden, input_ids) @ self.text_tower.text_projection

    def forward(
        self,
        input_ids: torch.Tensor,
        has_face: torch.Tensor,
        faces: torch.Tensor | None = None,
        face_features: FaceFeatures | None = None,
    ) -> BranchOutput:
        """Run the branch.

        Args:
            input_ids: (B, L) token ids (prefix included on face rows).
            has_face: (B,) bool, rows whose ``id`` token takes the face identity.
            faces: (B, 3, H, W) faces in [0, 1]; black faces for rows without one. Ignored if
                ``face_features`` is given.
            face_features: precomputed ``encode_face`` output for the B rows.

        Returns:
            BranchOutput with fused (B, L, D) and pooled (B, D).
        """
        if face_features is None:
            if faces is None:
                raise ValueError("FaceCLIPBranch: pass faces (B, 3, H, W) or face_features.")
            face_features = self.encode_face(faces)
        text_hidden = self.encode_text(input_ids, face_features.identity, has_face)
        batch = input_ids.shape[0]
        pos_embed = self.face_encoder.pos_embed.to(text_hidden.dtype)
        face_tokens = self.face_patch_proj(face_features.patch_tokens.to(text_hidden.dtype))  # (B, N, D)
        face_pos = self.face_pos_proj(pos_embed).expand(batch, -1, -1)  # (B, N, D)
        text_tokens = self.text_embed_proj(text_hidden)  # (B, L, D)
        text_pos = self.text_pos_proj(self.text_tower.position_embedding[: input_ids.shape[1]])
        text_pos = text_pos.expand(batch, -1, -1)  # (B, L, D)
        grid = (self.config.face.grid_size, self.config.face.grid_size)
        fused = self._fuse(face_tokens, face_pos, text_tokens, text_pos, grid).to(text_hidden.dtype)
        pooled = self.text_tower.pool(text_hidden, input_ids)
        return BranchOutput(fused=fused, pooled=pooled, text_hidden=text_hidden, face=face_features)

    def _fuse(self, face_tokens, face_pos, text_tokens, text_pos, grid: tuple[int, int]) -> torch.Tensor:
        """Run the fuser in the dtype of its own weights, outside any autocast region -> (B, L, D).

        The released model runs its fuser in fp32 whatever the rest runs in; ``FaceCLIPEncoder`` keeps the fuser's
        weights in fp32 when loaded or cast with a ``torch_dtype``, so half-precision runs do the same.
        """
        dtype = next(self.fuser.parameters()).dtype
        inputs = (t.to(dtype) for t in (face_tokens, face_pos, text_tokens, text_pos))
        with torch.autocast(device_type=text_tokens.device.type, enabled=False):
            return self.fuser(*inputs, grid)
