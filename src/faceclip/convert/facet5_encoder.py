"""Convert the released FaceT5 encoder (``model/face_t5_encoder.pt``) to our :class:`FaceT5Encoder` layout.

Every one of the released file's 958 keys is accounted for: used keys are mapped explicitly
(:func:`released_key_map`), dead ones are listed in :data:`DEAD_KEYS`, and any other key is an error naming it.
Nothing is transposed; the released ``encoder_1.text_model.*`` prefix maps to the top of a transformers-5
``CLIPTextModel``.

Dead keys (perturbing any of them leaves every output of the released encoder unchanged):

- ``encoder_2.face_pos_proj.{weight,bias}``: the released face layer receives the face positions in an
  ignored mask argument, so this projection is computed and dropped.
- ``encoder_2.face_encoder.feature.*`` (the ViT's identity head) and ``encoder_2.face_encoder.mask_token``
  (training-time patch masking): only the ViT's patch tokens are read.
- ``encoder_2.fuser.enc_output.*``, ``encoder_2.fuser.enc_output_norm.*``: a two-stage detection head, never called.
- ``encoder_2.fuser.encoder.layers.{last}.*`` and the face-side update of the last bi-attention
  (``fusion_layers.{last}.{gamma_v, attn.values_l_proj.*, attn.out_v_proj.*}``): the face stream after the last
  text layer is never read.
- The query and key rows ``[0:2D]`` of every face layer's ``self_attn.in_proj_{weight,bias}``: at one face per
  call each patch attends only to itself, so only the value rows ``[2D:3D]`` act (mapped to ``value_proj``).

Converting a file to our safetensors folder, in bounded memory, is :mod:`faceclip.convert.facet5_files`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from faceclip.convert.faceclip_encoder import CheckpointKeyError

logger = logging.getLogger(__name__)

RELEASED_FILENAME = "model/face_t5_encoder.pt"
RELEASED_TOKENIZER_FOLDER = "model/tokenizer"
LICENSE_NOTICE = (
    "FaceT5-FLUX weights (ByteDance/FaceCLIP): CC-BY-NC-4.0, non-commercial use only; the FLUX.1-dev "
    "transformer they fine-tune is under the FLUX.1 [dev] Non-Commercial License."
)

DEAD_KEYS = (
    "encoder_2.face_pos_proj.weight",
    "encoder_2.face_pos_proj.bias",
    "encoder_2.face_encoder.mask_token",
    "encoder_2.face_encoder.feature.*",
    "encoder_2.fuser.enc_output.weight",
    "encoder_2.fuser.enc_output.bias",
    "encoder_2.fuser.enc_output_norm.weight",
    "encoder_2.fuser.enc_output_norm.bias",
    "encoder_2.fuser.encoder.layers.{last}.*",
    "encoder_2.fuser.encoder.fusion_layers.{last}.gamma_v",
    "encoder_2.fuser.encoder.fusion_layers.{last}.attn.values_l_proj.weight",
    "encoder_2.fuser.encoder.fusion_layers.{last}.attn.values_l_proj.bias",
    "encoder_2.fuser.encoder.fusion_layers.{last}.attn.out_v_proj.weight",
    "encoder_2.fuser.encoder.fusion_layers.{last}.attn.out_v_proj.bias",
)
"""Released keys dropped whole; ``{last}`` is the last fuser layer, ``*`` any ending."""

# A target is (our key, rows): rows None = the whole tensor, else the row block (start, stop) as multiples of D.
Target = tuple[str, tuple[int, int] | None]

_CLIP = "encoder_1.text_model."
_T5 = "encoder_2.t5_encoder."
_VIT = "encoder_2.face_encoder."
_FUSER = "encoder_2.fuser.encoder."
_WB = ("weight", "bias")


def _same(released: str, ours: str, names: tuple[str, ...] = _WB) -> dict[str, Target]:
    return {f"{released}.{n}": (f"{ours}.{n}", None) for n in names}


def _clip_map(config: Mapping) -> dict[str, Target]:
    m = {
        f"{_CLIP}embeddings.{n}.weight": (f"text_encoder.embeddings.{n}.weight", None)
        for n in ("token_embedding", "position_embedding")
    }
    m.update(_same(f"{_CLIP}final_layer_norm", "text_encoder.final_layer_norm"))
    for i in range(config["clip_config"]["num_hidden_layers"]):
        for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                    "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):  # fmt: skip
            m.update(_same(f"{_CLIP}encoder.layers.{i}.{sub}", f"text_encoder.encoder.layers.{i}.{sub}"))
    return m


def _t5_map(config: Mapping) -> dict[str, Target]:
    ours = "text_encoder_2.encoder."
    m = {
        f"{_T5}embed_tokens.weight": ("text_encoder_2.shared.weight", None),
        f"{_T5}final_layer_norm.weight": (f"{ours}final_layer_norm.weight", None),
        f"{_T5}block.0.self_attention_layer.self_attention.pe_encoding.relative_attention_bias.weight": (
            f"{ours}block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            None,
        ),
    }
    for i in range(config["t5_config"]["num_layers"]):
        o, n = f"{_T5}block.{i}.", f"{ours}block.{i}.layer."
        for released, mine in (("Wq", "q"), ("Wk", "k"), ("Wv", "v"), ("o", "o")):
            m[f"{o}self_attention_layer.self_attention.{released}.weight"] = (
                f"{n}0.SelfAttention.{mine}.weight",
                None,
            )
        m[f"{o}self_attention_layer.layer_norm.weight"] = (f"{n}0.layer_norm.weight", None)
        m[f"{o}ff_layer.act.wi_0.weight"] = (f"{n}1.DenseReluDense.wi_0.weight", None)
        m[f"{o}ff_layer.act.wi_1.weight"] = (f"{n}1.DenseReluDense.wi_1.weight", None)
        m[f"{o}ff_layer.wo.weight"] = (f"{n}1.DenseReluDense.wo.weight", None)
        m[f"{o}ff_layer.layer_norm.weight"] = (f"{n}1.layer_norm.weight", None)
    return m


def _face_map(config: Mapping) -> dict[str, Target]:
    m = {f"{_VIT}pos_embed": ("face_encoder.pos_embed", None)}
    m.update(_same(f"{_VIT}patch_embed.proj", "face_encoder.patch_embed"))
    m.update(_same(f"{_VIT}norm", "face_encoder.norm"))
    for i in range(config["face_config"]["depth"]):
        o, n = f"{_VIT}blocks.{i}", f"face_encoder.blocks.{i}"
        m[f"{o}.attn.qkv.weight"] = (f"{n}.attn.qkv.weight", None)
        for sub in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"):
            m.update(_same(f"{o}.{sub}", f"{n}.{sub}"))
    m.update(_same("encoder_2.face_patch_proj", "face_patch_proj"))
    return m


def _fuser_map(config: Mapping) -> dict[str, Target]:
    m = {"encoder_2.positional_embedding": ("fuser.text_pos_embed", None)}
    layers = config["fuser_config"]["layers"]
    for i in range(layers):
        last, n = i == layers - 1, f"fuser.layers.{i}"
        fusion = f"{_FUSER}fusion_layers.{i}"
        m[f"{fusion}.gamma_l"] = (f"{n}.bi_attn.gamma_l", None)
        projections = ["v_proj", "l_proj", "values_v_proj", "out_l_proj"]
        if not last:
            m[f"{fusion}.gamma_v"] = (f"{n}.bi_attn.gamma_v", None)
            projections += ["values_l_proj", "out_v_proj"]
        for p in projections:
            m.update(_same(f"{fusion}.attn.{p}", f"{n}.bi_attn.{p}"))
        for p in ("layer_norm_v", "layer_norm_l"):
            m.update(_same(f"{fusion}.{p}", f"{n}.bi_attn.{p}"))
        text = f"{_FUSER}text_layers.{i}"
        m.update(_same(f"{text}.self_attn", f"{n}.text_layer.self_attn", ("in_proj_weight", "in_proj_bias")))
        for p in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            m.update(_same(f"{text}.{p}", f"{n}.text_layer.{p}"))
        if not last:
            face = f"{_FUSER}layers.{i}"
            m[f"{face}.self_attn.in_proj_weight"] = (f"{n}.face_layer.value_proj.weight", (2, 3))
            m[f"{face}.self_attn.in_proj_bias"] = (f"{n}.face_layer.value_proj.bias", (2, 3))
            m.update(_same(f"{face}.self_attn.out_proj", f"{n}.face_layer.out_proj"))
            for p in ("linear1", "linear2", "norm1", "norm2"):
                m.update(_same(f"{face}.{p}", f"{n}.face_layer.{p}"))
    return m


def released_key_map(config: Mapping) -> dict[str, Target]:
    """Released key -> (our key, row block or None), for a :class:`FaceT5Encoder` config dict.

    The face layers' ``in_proj_{weight,bias}`` map their value rows ``[2D:3D]`` to ``value_proj``.
    """
    return {**_clip_map(config), **_t5_map(config), **_face_map(config), **_fuser_map(config)}


def is_dead_key(key: str, config: Mapping) -> bool:
    """Whether a released key is one of :data:`DEAD_KEYS` for this config."""
    last = config["fuser_config"]["layers"] - 1
    for pattern in DEAD_KEYS:
        pattern = pattern.format(last=last)
        if key == pattern or (pattern.endswith("*") and key.startswith(pattern[:-1])):
            return True
    return False


def normalize_released_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released keys with CLIP-L under ``encoder_1.text_model.`` (files saved under transformers 5 lack that level)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("encoder_1.") and not key.startswith(_CLIP):
            key = _CLIP + key.removeprefix("encoder_1.")
        out[key] = value
    return out


def _count(keys: list[str], pattern: str) -> int | None:
    """1 + the largest index captured by ``pattern`` among ``keys`` (None if no key matches)."""
    indices = [int(m.group(1)) for m in map(re.compile(pattern).match, keys) if m]
    return max(indices) + 1 if indices else None


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, dim: int) -> int | None:
    return int(state_dict[key].shape[dim]) if key in state_dict and state_dict[key].ndim > dim else None


def config_from_released_keys(state_dict: Mapping[str, torch.Tensor], base: Mapping) -> dict:
    """``base`` (a FaceT5Encoder config dict) with the depths and widths that the released keys and shapes show.

    Head counts cannot be read from the shapes (except T5's) and come from ``base``. Sizes the keys do not show
    stay as in ``base``; :func:`convert_released_state_dict` then reports the keys that do not fit.
    """
    sd = normalize_released_keys(state_dict)
    keys = list(sd)
    found = {
        "clip_config": {
            "num_hidden_layers": _count(keys, rf"{re.escape(_CLIP)}encoder\.layers\.(\d+)\."),
            "vocab_size": _shape(sd, f"{_CLIP}embeddings.token_embedding.weight", 0),
            "hidden_size": _shape(sd, f"{_CLIP}embeddings.token_embedding.weight", 1),
            "max_position_embeddings": _shape(sd, f"{_CLIP}embeddings.position_embedding.weight", 0),
            "intermediate_size": _shape(sd, f"{_CLIP}encoder.layers.0.mlp.fc1.weight", 0),
        },
        "t5_config": {
            "num_layers": _count(keys, rf"{re.escape(_T5)}block\.(\d+)\."),
            "vocab_size": _shape(sd, f"{_T5}embed_tokens.weight", 0),
            "d_model": _shape(sd, f"{_T5}embed_tokens.weight", 1),
            "d_ff": _shape(sd, f"{_T5}block.0.ff_layer.act.wi_0.weight", 0),
        },
        "face_config": {
            "depth": _count(keys, rf"{re.escape(_VIT)}blocks\.(\d+)\."),
            "width": _shape(sd, f"{_VIT}pos_embed", 2),
            "patch_size": _shape(sd, f"{_VIT}patch_embed.proj.weight", 2),
            "mlp_dim": _shape(sd, f"{_VIT}blocks.0.mlp.fc1.weight", 0),
        },
        "fuser_config": {
            "layers": _count(keys, rf"{re.escape(_FUSER)}text_layers\.(\d+)\."),
            "fusion_dim": _shape(sd, f"{_FUSER}fusion_layers.0.attn.v_proj.weight", 0),
            "text_mlp_dim": _shape(sd, f"{_FUSER}text_layers.0.linear1.weight", 0),
            "face_mlp_dim": _shape(sd, f"{_FUSER}layers.0.linear1.weight", 0),
            "max_text_length": _shape(sd, "encoder_2.positional_embedding", 1),
        },
    }
    bias = f"{_T5}block.0.self_attention_layer.self_attention.pe_encoding.relative_attention_bias.weight"
    buckets, heads = _shape(sd, bias, 0), _shape(sd, bias, 1)
    found["t5_config"].update(relative_attention_num_buckets=buckets, num_heads=heads)
    d_model = found["t5_config"]["d_model"]
    if heads and d_model:
        found["t5_config"]["d_kv"] = d_model // heads
    config = {section: dict(base.get(section) or {}) for section in found}
    for section, sizes in found.items():
        config[section].update({k: v for k, v in sizes.items() if v is not None})
    patches = _shape(sd, f"{_VIT}pos_embed", 1)
    face = config["face_config"]
    if (
        patches
        and "patch_size" in face
        and face.get("image_size", 0) // face["patch_size"] != round(patches**0.5)
    ):
        face["image_size"] = round(patches**0.5) * face["patch_size"]
    length = config["fuser_config"].get("max_text_length", 512)
    return {**base, **config, "max_sequence_length": min(base.get("max_sequence_length", 512), length)}


def convert_released_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping, expected_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Map a released state dict to our layout.

    Args:
        state_dict: released keys (``encoder_1.*``, ``encoder_2.*``); tensors are not copied except the value
            rows of the face layers' packed projections.
        config: our encoder config dict (see :func:`config_from_released_keys`).
        expected_shapes: our key -> shape for this config (the ``state_dict()`` of a model built without memory).

    Raises:
        CheckpointKeyError: missing keys, keys neither mapped nor dead, or shapes that do not fit (all named).
    """
    state_dict = normalize_released_keys(state_dict)
    key_map = released_key_map(config)
    _check_layout(state_dict, config, key_map)
    converted: dict[str, torch.Tensor] = {}
    for key, (ours, rows) in key_map.items():
        tensor = state_dict[key]
        if rows is not None:
            block = tensor.shape[0] // 3
            tensor = tensor[rows[0] * block : rows[1] * block].clone()
        if ours not in expected_shapes or tuple(tensor.shape) != tuple(expected_shapes[ours]):
            found = tuple(expected_shapes[ours]) if ours in expected_shapes else "no such key"
            raise CheckpointKeyError(
                f"{key}: shape {tuple(state_dict[key].shape)} does not fit {ours} ({found}) of this config; "
                "pick the config that matches the checkpoint."
            )
        converted[ours] = tensor
    if set(converted) != set(expected_shapes):
        raise RuntimeError(f"key map incomplete: {sorted(set(expected_shapes) ^ set(converted))[:10]}")
    return converted


def _check_layout(state_dict: Mapping[str, torch.Tensor], config: Mapping, key_map: Mapping) -> None:
    missing = [k for k in key_map if k not in state_dict]
    unexpected = [k for k in state_dict if k not in key_map and not is_dead_key(k, config)]
    if not missing and not unexpected:
        return
    lines = ["The state dict does not have the released FaceT5 encoder layout (face_t5_encoder.pt)."]
    for name, keys in (("Missing", missing), ("Unexpected", unexpected)):
        if keys:
            lines.append(
                f"{name} keys ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
            )
    lines.append(
        "Pass the released model/face_t5_encoder.pt, or our own layout to FaceT5Encoder.from_pretrained."
    )
    raise CheckpointKeyError("\n".join(lines))


def resolve_released_file(source: str | os.PathLike) -> Path:
    """The released file: ``source`` itself, or ``model/face_t5_encoder.pt`` in a folder or hub repo."""
    from faceclip.hub import resolve_file

    path = Path(source).expanduser()
    if path.is_file():
        return path
    return resolve_file(
        source, RELEASED_FILENAME, what="the released FaceT5 encoder weights", hint=LICENSE_NOTICE
    )


def load_released_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Memory-map released weights: ``face_t5_encoder.pt`` (``torch.load(weights_only=True, mmap=True)``, never
    executing code), or a folder / hub repo holding ``model/face_t5_encoder.pt``.

    Raises:
        faceclip.hub.WeightsNotFoundError: the file cannot be found.
        faceclip.hub.WeightsFileError: the file is empty, cut short, not a zip-format state dict of tensors,
            or holds more than tensors (a ``ValueError``).
    """
    from faceclip.hub import read_state_dict_file
    from faceclip.pipelines.flux.family import RELEASED_REPO

    path = resolve_released_file(source)
    logger.warning("Loading %s. %s", path, LICENSE_NOTICE)
    return read_state_dict_file(
        path,
        advice=f"Pass the released {RELEASED_FILENAME} (hf download {RELEASED_REPO} {RELEASED_FILENAME}).",
        allow_legacy=False,
    )


def load_released_t5_tokenizer(source: str | os.PathLike):
    """The T5 tokenizer shipped beside the weights (``model/tokenizer`` of a folder), or None if there is none."""
    folder = Path(source).expanduser()
    folder = folder / RELEASED_TOKENIZER_FOLDER if folder.is_dir() else folder.parent / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
