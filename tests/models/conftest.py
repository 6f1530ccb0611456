"""Fixtures for the encoder tests: tiny encoders and the seeded released-layout state dict."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
import torch

from faceclip.convert import released_key_map
from faceclip.models import FaceCLIPEncoder, create_encoder, encoder_config

DATA = Path(__file__).parents[1] / "data" / "models"

# LayerNorm / BatchNorm weights, BatchNorm running variances and bi-attention layer scales start at 1 + 0.02 z.
UNIT_SCALE = re.compile(
    r"(\.(ln_1|ln_2|ln_final|norm|norm1|norm2|layer_norm_v|layer_norm_l|enc_output_norm)\.weight"
    r"|\.feature\.[13]\.weight|\.gamma_v|\.gamma_l|\.running_var)$"
)


def read_manifest() -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of the released encoder's state dict, in its original order."""
    rows = []
    for line in (
        gzip.decompress((DATA / "faceclip_encoder_state_dict.tsv.gz").read_bytes()).decode().splitlines()[1:]
    ):
        key, shape, dtype = line.split("\t")
        rows.append((key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x")), dtype))
    return rows


def seeded_released_state_dict(seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """The golden procedure's seeded weights: keys in sorted order, one ``randn`` call per float key."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    state_dict = {}
    for key, shape, dtype in sorted(read_manifest()):
        if dtype != "float32":
            state_dict[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        z = torch.randn(shape, generator=generator, dtype=torch.float32)
        state_dict[key] = 1.0 + std * z if UNIT_SCALE.search(key) else std * z
    return state_dict


def to_released_layout(encoder: FaceCLIPEncoder, config: dict) -> dict[str, torch.Tensor]:
    """Our weights written back in the released key layout (dead keys filled with noise)."""
    ours = encoder.state_dict()
    released = {}
    for key, targets in released_key_map(config).items():
        released[key] = torch.cat([ours[t] for t, _ in targets]) if len(targets) > 1 else ours[targets[0][0]]
    for branch in ("face_clip_l", "face_clip_g"):
        d = 32 if branch == "face_clip_l" else 48
        last = config["branch_l_config"]["fuser"]["layers"] - 1
        released[f"{branch}.face_encoder.mask_token"] = torch.randn(1, 1, 32)
        released[f"{branch}.fuser.enc_output.weight"] = torch.randn(d, d)
        released[f"{branch}.fuser.enc_output.bias"] = torch.randn(d)
        released[f"{branch}.fuser.enc_output_norm.weight"] = torch.randn(d)
        released[f"{branch}.fuser.enc_output_norm.bias"] = torch.randn(d)
        released[f"{branch}.fuser.encoder.layers.{last}.norm1.weight"] = torch.randn(d)
        released[f"{branch}.fuser.encoder.fusion_layers.{last}.gamma_v"] = torch.randn(d)
        released[f"{branch}.fuser.encoder.fusion_layers.{last}.attn.out_v_proj.weight"] = torch.randn(d, 32)
    return released


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> dict:
    return encoder_config("faceclip-tiny")


@pytest.fixture
def tiny_encoder() -> FaceCLIPEncoder:
    return create_encoder("faceclip-tiny", seed=0)


@pytest.fixture
def faces() -> torch.Tensor:
    return torch.rand(3, 3, 40, 36, generator=torch.Generator().manual_seed(1))
