"""Helpers for the FaceT5 tests: the released key manifest, its seeded weights, and tiny models in that layout."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import torch

from faceclip.convert.facet5_encoder import DEAD_KEYS, released_key_map
from faceclip.models.facet5_encoder import FaceT5Encoder

DATA = Path(__file__).parents[1] / "data" / "facet5"
RELEASED_KEY_COUNT = 958

# LayerNorm / RMSNorm / BatchNorm weights, BatchNorm running variances and bi-attention layer scales: 1 + 0.02 z.
UNIT_SCALE = re.compile(
    r"(\.(layer_norm1|layer_norm2|final_layer_norm|layer_norm|norm|norm1|norm2|layer_norm_v|layer_norm_l"
    r"|enc_output_norm)\.weight|\.feature\.[13]\.weight|\.gamma_v|\.gamma_l|\.running_var)$"
)
DEPTH_PATTERNS = (
    r"^encoder_2\.t5_encoder\.block\.(\d+)\.",
    r"^encoder_2\.fuser\.encoder\.(?:layers|text_layers|fusion_layers)\.(\d+)\.",
    r"^encoder_2\.face_encoder\.blocks\.(\d+)\.",
)


def read_manifest() -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of the released ``face_t5_encoder.pt``, in its original order (958 rows)."""
    rows = []
    text = gzip.decompress((DATA / "facet5_encoder_state_dict.tsv.gz").read_bytes()).decode()
    for line in text.splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        rows.append((key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x")), dtype))
    return rows


def reduced_manifest(depths: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...], str]]:
    """The manifest without the T5 blocks, fuser layers and ViT blocks at or beyond ``depths`` (t5, fuser, vit)."""
    kept = []
    for row in read_manifest():
        matches = [re.match(pattern, row[0]) for pattern in DEPTH_PATTERNS]
        if not any(m and int(m.group(1)) >= depth for m, depth in zip(matches, depths)):
            kept.append(row)
    return kept


def text_position_table(length: int = 512, width: int = 4096) -> torch.Tensor:
    """The released text position buffer as its constructor computes it, float32: (1, length, width)."""
    table = torch.zeros(length, width)
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.unsqueeze(0)


def seeded_released_state_dict(depths=(2, 2, 2), seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """The golden procedure's seeded weights: sorted keys, one float32 ``randn`` per random key."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    state_dict = {}
    for key, shape, dtype in sorted(reduced_manifest(depths)):
        if dtype == "int64":
            state_dict[key] = torch.zeros(shape, dtype=torch.int64)
        elif key == "encoder_2.positional_embedding":
            state_dict[key] = text_position_table()
        else:
            z = torch.randn(shape, generator=generator, dtype=torch.float32)
            state_dict[key] = 1.0 + std * z if UNIT_SCALE.search(key) else std * z
    return state_dict


def dead_released_keys(encoder: FaceT5Encoder) -> dict[str, tuple[int, ...]]:
    """Released keys on the dead list for this encoder's sizes, with their shapes (as the released model has)."""
    config = encoder.config
    d, face_width = config.t5_config["d_model"], config.face_config["width"]
    fuser = config.fuser_config
    last, n = fuser["layers"] - 1, encoder.face_encoder.config.num_patches
    face = f"encoder_2.fuser.encoder.layers.{last}"
    fusion = f"encoder_2.fuser.encoder.fusion_layers.{last}"
    shapes = {
        "encoder_2.face_pos_proj.weight": (d, face_width),
        "encoder_2.face_pos_proj.bias": (d,),
        "encoder_2.face_encoder.mask_token": (1, 1, face_width),
        "encoder_2.face_encoder.feature.0.weight": (face_width, n * face_width),
        "encoder_2.face_encoder.feature.1.weight": (face_width,),
        "encoder_2.face_encoder.feature.1.running_var": (face_width,),
        "encoder_2.face_encoder.feature.2.weight": (16, face_width),
        "encoder_2.fuser.enc_output.weight": (d, d),
        "encoder_2.fuser.enc_output.bias": (d,),
        "encoder_2.fuser.enc_output_norm.weight": (d,),
        "encoder_2.fuser.enc_output_norm.bias": (d,),
        f"{face}.self_attn.in_proj_weight": (3 * d, d),
        f"{face}.self_attn.out_proj.weight": (d, d),
        f"{face}.linear1.weight": (fuser["face_mlp_dim"], d),
        f"{face}.norm2.bias": (d,),
        f"{fusion}.gamma_v": (d,),
        f"{fusion}.attn.values_l_proj.weight": (fuser["fusion_dim"], d),
        f"{fusion}.attn.values_l_proj.bias": (fuser["fusion_dim"],),
        f"{fusion}.attn.out_v_proj.weight": (d, fuser["fusion_dim"]),
        f"{fusion}.attn.out_v_proj.bias": (d,),
    }
    assert len(DEAD_KEYS) == 14  # every pattern above has at least one key here
    return shapes


def to_released_layout(encoder: FaceT5Encoder, seed: int = 0) -> dict[str, torch.Tensor]:
    """The encoder's weights in the released key layout; dead keys and the face layers' q/k rows random."""
    generator = torch.Generator().manual_seed(seed)
    ours = encoder.state_dict()
    released = {}
    for key, (target, rows) in released_key_map(dict(encoder.config)).items():
        tensor = ours[target].clone()
        if rows is not None:  # the value rows of a packed q/k/v projection: q and k rows are random
            noise = torch.randn((2 * tensor.shape[0], *tensor.shape[1:]), generator=generator)
            tensor = torch.cat([noise, tensor])
        released[key] = tensor
    for key, shape in dead_released_keys(encoder).items():
        released[key] = torch.randn(shape, generator=generator)
    return released
