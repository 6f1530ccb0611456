"""CLIP-T and CLIP-I: how well an image follows its prompt, and how much it stays the same scene.

- CLIP-T = 100 x cos(CLIP image embedding, CLIP text embedding), the convention of the PuLID paper (not clipped
  at zero). The field uses OpenAI's CLIP ViT-L/14, our default.
- CLIP-I = cos(CLIP image embedding, CLIP image embedding of the same seed generated without the identity):
  close to 1 when adding the identity leaves the rest of the picture alone.

The model is loaded with transformers' :class:`~transformers.CLIPModel` from a hub id or a local folder; the
caller moves it to a device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from faceclip.hub import WeightsNotFoundError, resolve_file

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
"""The CLIP used for CLIP-T by the field (ViT-L/14, 224 px)."""

CLIP_T_SCALE = 100.0

CLIP_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
              "merges.txt", "special_tokens_map.json", "preprocessor_config.json")  # fmt: skip
"""What :meth:`CLIPScorer.from_pretrained` reads from a hub repo: config, weights, tokenizer, image processor."""


class CLIPScorer:
    """Computes CLIP-T and CLIP-I with one CLIP model.

    Args:
        model: a transformers ``CLIPModel`` (on any device and dtype; inputs follow it).
        tokenizer: its tokenizer.
        image_processor: its image processor.
        name: how the model is named in reports (a hub id or a folder).
    """

    def __init__(self, model, tokenizer, image_processor, name: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_CLIP_MODEL, **kwargs) -> CLIPScorer:
        """Load a CLIP model, tokenizer and image processor from a hub id or a local folder.

        Args:
            source: hub id (through the Hugging Face cache; ``HF_HUB_OFFLINE=1`` keeps to the cache) or a folder
                written by ``save_pretrained``.
            **kwargs: passed to ``CLIPModel.from_pretrained``; ``dtype`` defaults to float32, so scores do not
                depend on how a checkpoint happens to be stored.

        Raises:
            WeightsNotFoundError: the model is not on disk and cannot be downloaded.
        """
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        what = "the CLIP model used for CLIP-T and CLIP-I"
        hint = "Pass another CLIP with --clip-model ID_OR_DIR, or skip the CLIP metrics with --no-clip."
        # Fails early, with the package's usual message, when the folder or the cached repo is missing.
        kwargs.setdefault("dtype", torch.float32)
        resolve_file(source, "config.json", what=what, hint=hint, also_needed=CLIP_FILES)
        folder = Path(source).expanduser() if Path(source).expanduser().is_dir() else str(source)
        try:
            model = CLIPModel.from_pretrained(folder, **kwargs)  # HF_HUB_OFFLINE is honoured by transformers
            tokenizer = AutoTokenizer.from_pretrained(folder)
            image_processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        except OSError as err:
            local = Path(source).expanduser().is_dir()
            fetch = "" if local else f"; fetch them with\n    {clip_download_command(source)}"
            raise WeightsNotFoundError(
                f"Could not load {what} from '{source}' ({folder}): {err}\n"
                f"The folder must hold config.json, the weights (model.safetensors), the tokenizer and the "
                f"image processor files, as written by CLIPModel/CLIPProcessor.save_pretrained{fetch}.\n{hint}"
            ) from err
        return cls(model, tokenizer, image_processor, name=str(source))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised CLIP image embeddings, float32 on the CPU: (N, P)."""
        pixels = self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device, self.model.dtype)  # (N, 3, S, S)
        features = self.model.get_image_features(pixel_values=pixel_values).pooler_output  # (N, P)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings, float32 on the CPU: (N, P). Long prompts are cut at 77 tokens."""
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        features = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output  # (N, P)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def clip_t(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """CLIP-T of each image with its prompt: 100 x cosine, one value per pair."""
        _check_images(images, "images")
        if (
            isinstance(prompts, str)
            or not isinstance(prompts, Sequence)
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise TypeError(f"prompts: expected a list of str (one per image), got {type(prompts).__name__}.")
        if len(images) != len(prompts):
            raise ValueError(
                f"clip_t: got {len(images)} images but {len(prompts)} prompts; pass one prompt per image."
            )
        if not images:
            return []
        return (CLIP_T_SCALE * pairwise_cosine(self.embed_images(images), self.embed_texts(prompts))).tolist()

    def clip_i(self, images: Sequence[Image.Image], baselines: Sequence[Image.Image]) -> list[float]:
        """CLIP-I of each image with its baseline (same seed, no identity): cosine in [-1, 1], one value per pair."""
        _check_images(images, "images")
        _check_images(baselines, "baselines")
        if len(images) != len(baselines):
            raise ValueError(
                f"clip_i: got {len(images)} images but {len(baselines)} baselines; pass one baseline per image."
            )
        if not images:
            return []
        return pairwise_cosine(self.embed_images(images), self.embed_images(baselines)).tolist()


def _check_images(images: object, name: str) -> None:
    """Refuse anything but a list of non-empty PIL images (arrays and paths included: load them first)."""
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise TypeError(f"{name}: expected a list of PIL images, got {type(images).__name__}.")
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"{name}[{index}]: expected a PIL image, got {type(image).__name__}; load files with "
                "faceclip.face.load_image."
            )
        if 0 in image.size:
            raise ValueError(f"{name}[{index}]: the image is empty ({image.width}x{image.height} pixels).")


def clip_download_command(source: str | os.PathLike = DEFAULT_CLIP_MODEL) -> str:
    """The ``hf download`` command that fetches every file :meth:`CLIPScorer.from_pretrained` reads."""
    return f"hf download {source} {' '.join(CLIP_FILES)}"


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows: (N, P), (N, P) -> (N,)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
