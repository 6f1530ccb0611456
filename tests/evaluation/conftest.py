"""Shared fixtures: a tiny random CLIP (model, tokenizer, image processor) built offline, and real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FACES = Path(__file__).parents[1] / "data" / "faces"


def _byte_symbols() -> list[str]:
    # The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's table, rebuilt here).
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def build_tiny_clip(seed: int = 0):
    """A tiny random CLIPModel (32 px, width 32) with a byte-level tokenizer and a PIL image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    merges = [("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = bos = len(vocab)
    vocab["<|endoftext|>"] = eos = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
            **common,
        ),
        vision_config=dict(image_size=32, patch_size=8, **common),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), tokenizer, image_processor


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP saved like a hub snapshot (model, tokenizer, image processor)."""
    from transformers import CLIPProcessor

    model, tokenizer, image_processor = build_tiny_clip()
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    """A real face photo (scikit-image's astronaut, Eileen Collins; public domain)."""
    return Image.open(FACES / "astronaut.png").convert("RGB")


@pytest.fixture(scope="session")
def noise_image() -> Image.Image:
    """An image without any face."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir):
    """A :class:`CLIPScorer` loaded from :func:`tiny_clip_dir` (through the real loading path)."""
    from faceclip.evaluation.clip_score import CLIPScorer

    return CLIPScorer.from_pretrained(tiny_clip_dir)


@pytest.fixture(scope="session")
def identity_scorer():
    """ID-Sim with the bundled offline recogniser (YuNet + SFace)."""
    from faceclip.evaluation.identity import IdentityScorer
    from faceclip.face import FaceAnalyzer

    return IdentityScorer(FaceAnalyzer(backend="opencv"))


def lfw_face(index: int, size: int = 200) -> Image.Image:
    """Face ``index`` (0-99 are faces) of scikit-image's LFW subset, upscaled from 25 x 25."""
    from skimage import data

    pixels = (data.lfw_subset()[index] * 255).round().astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
