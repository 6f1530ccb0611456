"""Frozen CLIP image towers that give the stage-1 image targets.

The image term aligns a branch's text-head output with the CLIP image embedding of the training image, so
the tower should be the vision half of the CLIP whose text tower the branch uses. Targets can also be
precomputed by ``faceclip prepare`` and stored in the shards (``"precomputed"``): then no tower is loaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECOMPUTED = "precomputed"
TINY_RANDOM = "tiny-random"


class ImageTargetTower(nn.Module):
    """A frozen ``transformers`` ``CLIPVisionModelWithProjection`` with CLIP's preprocessing.

    Args:
        model: the vision model (its ``config.image_size`` sets the input side).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD)[:, None, None], persistent=False)

    @property
    def projection_dim(self) -> int:
        return self.model.config.projection_dim

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1], any aspect ratio -> (B, projection_dim) image embeddings (not
        normalised), after :func:`clip_preprocess`."""
        pixels = clip_preprocess(images, self.model.config.image_size)
        pixels = ((pixels - self.mean) / self.std).to(self.model.dtype)
        return self.model(pixel_values=pixels).image_embeds


def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP's geometry: resize the short side to ``size`` (antialiased bicubic), centre-crop ``size`` x ``size``.

    The one image preparation of the image-target towers, whatever they are given: training passes the
    ``data.image_size`` centre crop of the photo, ``faceclip prepare`` the whole stored photo; both end as the
    photo's central square, so precomputed targets match the ones computed while training.

    Args:
        images: (B, 3, H, W) in [0, 1].
        size: the tower's input side.

    Returns:
        (B, 3, size, size) float32 in [0, 1] (not normalised).
    """
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))  # the rounding of shards._resize_crop
    images = F.interpolate(images.float(), size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (rh - size) // 2, (rw - size) // 2
    return images[..., top : top + size, left : left + size].clamp(0, 1)


def build_image_tower(source: str, projection_dim: int | None, *, seed: int = 0) -> ImageTargetTower | None:
    """The image-target tower named by ``model.targets.image_l`` / ``image_g``.

    Args:
        source: ``"precomputed"`` (None is returned), ``"tiny-random"`` (a small seeded tower, for smoke runs),
            or a transformers ``CLIPVisionModelWithProjection`` hub id or folder.
        projection_dim: the branch's CLIP embedding width (checked against a loaded model; None: no check).
        seed: seeds the tiny tower.

    Raises:
        faceclip.hub.WeightsNotFoundError: a hub id or folder that cannot be loaded.
        ValueError: the loaded tower's embedding width does not match the branch.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if source == PRECOMPUTED:
        return None
    if source == TINY_RANDOM:
        config = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8, projection_dim=projection_dim or 32,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ImageTargetTower(CLIPVisionModelWithProjection(config))
    from faceclip.hub import WeightsNotFoundError

    try:  # transformers honours HF_HUB_OFFLINE itself
        model = CLIPVisionModelWithProjection.from_pretrained(source)
    except OSError as err:
        raise WeightsNotFoundError(
            f"Could not load the CLIP vision tower for the stage-1 image targets from '{source}': {err}\n"
            "Download it while online (e.g. `hf download openai/clip-vit-large-patch14`), pass a local folder "
            "in model.targets.image_l / image_g, or precompute the targets with `faceclip prepare "
            "--image-target-l/--image-target-g` and set them to 'precomputed'."
        ) from err
    if projection_dim is not None and model.config.projection_dim != projection_dim:
        raise ValueError(
            f"model.targets: '{source}' gives {model.config.projection_dim}-d image embeddings but the branch's "
            f"text embeddings are {projection_dim}-d; use the vision tower of the same CLIP as the text tower."
        )
    return ImageTargetTower(model)
