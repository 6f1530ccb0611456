"""Convert released FaceCLIP encoder weights (``face_clip_encoder.pt``) to our :class:`FaceCLIPEncoder` layout.

Every released key is accounted for: used keys are mapped explicitly (:func:`released_key_map`), the dead
ones listed in :data:`DEAD_KEYS` are dropped, and any other missing or unexpected key is an error naming it.

Dropped keys (per branch ``face_clip_l`` / ``face_clip_g``; perturbing any of them leaves every output of the
released encoder bit-identical):

- ``fuser.enc_output.{weight,bias}``, ``fuser.enc_output_norm.{weight,bias}``: Grounding DINO two-stage head,
  never called.
- ``fuser.encoder.layers.<last>.*``: the last deformable image layer; its output is discarded.
- ``fuser.encoder.fusion_layers.<last>.{attn.values_l_proj.*, attn.out_v_proj.*, gamma_v}``: the image-side
  update of the last bi-attention, discarded likewise.
- ``face_encoder.mask_token``: only used by random patch masking in training mode.
- ``face_clip_g.face_encoder.*`` when it is identical to ``face_clip_l.face_encoder.*`` (the released weights):
  the two face ViTs are merged into one shared copy (``share_face_encoder=True``).

Kept although the encoder's outputs do not use them: ``text_projection``, ``logit_scale`` and
``logit_bias`` (stage-1 training uses them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from faceclip.models.branch import BranchConfig

logger = logging.getLogger(__name__)

RELEASED_FILENAME = "model/face_clip_encoder.pt"
BRANCHES = {"face_clip_l": "branch_l", "face_clip_g": "branch_g"}

DEAD_KEYS = (
    "fuser.enc_output.weight",
    "fuser.enc_output.bias",
    "fuser.enc_output_norm.weight",
    "fuser.enc_output_norm.bias",
    "fuser.encoder.layers.{last}.*",
    "fuser.encoder.fusion_layers.{last}.attn.values_l_proj.weight",
    "fuser.encoder.fusion_layers.{last}.attn.values_l_proj.bias",
    "fuser.encoder.fusion_layers.{last}.attn.out_v_proj.weight",
    "fuser.encoder.fusion_layers.{last}.attn.out_v_proj.bias",
    "fuser.encoder.fusion_layers.{last}.gamma_v",
    "face_encoder.mask_token",
)
"""Released keys (relative to a branch) dropped by the converter; ``{last}`` is the last fuser layer."""


class CheckpointKeyError(KeyError):
    """A checkpoint's keys or shapes do not match the expected layout (the message names them)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# A target is (our key, chunk index): chunk None = the whole tensor, else one of 3 row blocks (q, k, v).
Target = tuple[str, int | None]

_LINEAR = ("weight", "bias")
_LAYER_NORM = ("weight", "bias")
_BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _same(released: str, ours: str, names: tuple[str, ...]) -> dict[str, list[Target]]:
    return {f"{released}.{n}": [(f"{ours}.{n}", None)] for n in names}


def _text_tower_map(released: str, ours: str, layers: int) -> dict[str, list[Target]]:
    m = {
        f"{released}token_embedding.weight": [(f"{ours}text_tower.token_embedding.weight", None)],
        f"{released}positional_embedding": [(f"{ours}text_tower.position_embedding", None)],
        f"{released}text_projection": [(f"{ours}text_tower.text_projection", None)],
        **_same(f"{released}ln_final", f"{ours}text_tower.final_layer_norm", _LAYER_NORM),
    }
    for i in range(layers):
        o, n = f"{released}transformer.resblocks.{i}", f"{ours}text_tower.layers.{i}"
        for kind in ("weight", "bias"):
            m[f"{o}.attn.in_proj_{kind}"] = [
                (f"{n}.self_attn.{p}_proj.{kind}", j) for j, p in enumerate("qkv")
            ]
        m.update(_same(f"{o}.attn.out_proj", f"{n}.self_attn.out_proj", _LINEAR))
        m.update(_same(f"{o}.ln_1", f"{n}.layer_norm1", _LAYER_NORM))
        m.update(_same(f"{o}.ln_2", f"{n}.layer_norm2", _LAYER_NORM))
        m.update(_same(f"{o}.mlp.c_fc", f"{n}.mlp.fc1", _LINEAR))
        m.update(_same(f"{o}.mlp.c_proj", f"{n}.mlp.fc2", _LINEAR))
    return m


def _face_vit_map(released: str, ours: str, depth: int) -> dict[str, list[Target]]:
    m = {
        f"{released}pos_embed": [(f"{ours}pos_embed", None)],
        **_same(f"{released}patch_embed.proj", f"{ours}patch_embed", _LINEAR),
        **_same(f"{released}norm", f"{ours}norm", _LAYER_NORM),
        f"{released}feature.0.weight": [(f"{ours}feature_proj.weight", None)],
        **_same(f"{released}feature.1", f"{ours}feature_norm", _BATCH_NORM),
        f"{released}feature.2.weight": [(f"{ours}identity_proj.weight", None)],
        **_same(f"{released}feature.3", f"{ours}identity_norm", _BATCH_NORM),
    }
    for i in range(depth):
        o, n = f"{released}blocks.{i}", f"{ours}blocks.{i}"
        m[f"{o}.attn.qkv.weight"] = [(f"{n}.attn.qkv.weight", None)]
        for sub in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"):
            m.update(_same(f"{o}.{sub}", f"{n}.{sub}", _LINEAR))
    return m


def _fuser_map(released: str, ours: str, layers: int) -> dict[str, list[Target]]:
    m: dict[str, list[Target]] = {}
    for i in range(layers):
        last = i == layers - 1
        o, n = f"{released}encoder", f"{ours}layers.{i}"
        fusion = f"{o}.fusion_layers.{i}"
        m[f"{fusion}.gamma_l"] = [(f"{n}.bi_attn.gamma_l", None)]
        projections = ["v_proj", "l_proj", "values_v_proj", "out_l_proj"]
        if not last:
            m[f"{fusion}.gamma_v"] = [(f"{n}.bi_attn.gamma_v", None)]
            projections += ["values_l_proj", "out_v_proj"]
        for p in projections:
            m.update(_same(f"{fusion}.attn.{p}", f"{n}.bi_attn.{p}", _LINEAR))
        for p in ("layer_norm_v", "layer_norm_l"):
            m.update(_same(f"{fusion}.{p}", f"{n}.bi_attn.{p}", _LAYER_NORM))
        text = f"{o}.text_layers.{i}"
        m[f"{text}.self_attn.in_proj_weight"] = [(f"{n}.text_layer.self_attn.in_proj_weight", None)]
        m[f"{text}.self_attn.in_proj_bias"] = [(f"{n}.text_layer.self_attn.in_proj_bias", None)]
        for p in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            m.update(_same(f"{text}.{p}", f"{n}.text_layer.{p}", _LINEAR))
        if not last:
            image = f"{o}.layers.{i}"
            for p in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
                m.update(_same(f"{image}.self_attn.{p}", f"{n}.image_layer.self_attn.{p}", _LINEAR))
            for p in ("norm1", "linear1", "linear2", "norm2"):
                m.update(_same(f"{image}.{p}", f"{n}.image_layer.{p}", _LINEAR))
    return m


def released_key_map(config: Mapping) -> dict[str, list[Target]]:
    """Released key -> our key(s), for an encoder config dict (see ``faceclip.models.encoder_config``).

    ``attn.in_proj_{weight,bias}`` of the CLIP text towers map to three targets, the q, k and v row blocks.
    With ``share_face_encoder`` the second branch's face ViT keys are not mapped (see :func:`convert_released_state_dict`).
    """
    key_map: dict[str, list[Target]] = {}
    for released, ours in BRANCHES.items():
        cfg = BranchConfig.from_dict(config[f"{ours}_config"])
        o, n = f"{released}.", f"{ours}."
        key_map.update(_text_tower_map(o, n, cfg.text.layers))
        if ours == "branch_l" or not config.get("share_face_encoder", False):
            key_map.update(_face_vit_map(f"{o}face_encoder.", f"{n}face_encoder.", cfg.face.depth))
        for p in ("face_patch_proj", "face_pos_proj", "text_embed_proj", "text_pos_proj"):
            key_map.update(_same(f"{o}{p}", f"{n}{p}", _LINEAR))
        key_map.update(_same(f"{o}proj1", f"{n}face_token_proj", _LINEAR))
        key_map[f"{o}logit_scale"] = [(f"{n}logit_scale", None)]
        key_map[f"{o}logit_bias"] = [(f"{n}logit_bias", None)]
        key_map.update(_fuser_map(f"{o}fuser.", f"{n}fuser.", cfg.fuser.layers))
    return key_map


def is_dead_key(key: str, config: Mapping) -> bool:
    """Whether a released key is one of :data:`DEAD_KEYS` (or a merged duplicate face ViT key)."""
    branch, _, rest = key.partition(".")
    if branch not in BRANCHES:
        return False
    if (
        branch == "face_clip_g"
        and config.get("share_face_encoder", False)
        and rest.startswith("face_encoder.")
    ):
        return True
    last = BranchConfig.from_dict(config[f"{BRANCHES[branch]}_config"]).fuser.layers - 1
    for pattern in DEAD_KEYS:
        pattern = pattern.format(last=last)
        if rest == pattern or (pattern.endswith("*") and rest.startswith(pattern[:-1])):
            return True
    return False


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop one leading ``model.`` from every key that has it."""
    return {k.removeprefix("model."): v for k, v in state_dict.items()}


def face_encoders_identical(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when both branches hold bit-identical face ViT weights."""
    keys_l = sorted(k for k in state_dict if k.startswith("face_clip_l.face_encoder."))
    keys_g = sorted(k for k in state_dict if k.startswith("face_clip_g.face_encoder."))
    if not keys_l or [k.replace("face_clip_l.", "", 1) for k in keys_l] != [
        k.replace("face_clip_g.", "", 1) for k in keys_g
    ]:
        return False
    if any(state_dict[k].is_meta for k in keys_l + keys_g):
        return False  # shapes only: nothing to compare
    return all(
        state_dict[a].shape == state_dict[b].shape and torch.equal(state_dict[a], state_dict[b])
        for a, b in zip(keys_l, keys_g)
    )


def with_share_face_encoder(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict:
    """``config`` with ``share_face_encoder`` set: True when both branches of the released ``state_dict`` hold
    bit-identical face ViT weights (the released file does), so one shared copy is kept."""
    shared = face_encoders_identical(strip_prefix(state_dict))
    if shared:
        logger.info("Both branches hold identical face ViT weights: keeping one shared copy.")
    return {**config, "share_face_encoder": shared}


def convert_released_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping,
    expected_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, torch.Tensor]:
    """Map a released state dict to our layout.

    Args:
        state_dict: released keys (``face_clip_l.*``, ``face_clip_g.*``), optionally prefixed ``model.``.
        config: our encoder config dict, ``share_face_encoder`` included (see :func:`with_share_face_encoder`).
        expected_shapes: our key -> shape, for this config (e.g. the ``state_dict()`` of an encoder built
            from it on the meta device).

    Returns:
        Our state dict. Tensors are not copied, except the q/k/v blocks of the text towers' packed attention
        projections.

    Raises:
        CheckpointKeyError: released keys missing, or keys that are neither mapped nor in :data:`DEAD_KEYS`
            (all named), or a shape that does not fit the config.
    """
    state_dict = strip_prefix(state_dict)
    _check_layout(state_dict, config)
    converted: dict[str, torch.Tensor] = {}
    for key, targets in released_key_map(config).items():
        tensor = state_dict[key]
        parts = tensor.chunk(3, dim=0) if len(targets) > 1 else (tensor,)
        for (ours, chunk), part in zip(targets, parts):
            part = part.clone() if chunk is not None else part
            if ours not in expected_shapes or part.shape != tuple(expected_shapes[ours]):
                found = tuple(expected_shapes[ours]) if ours in expected_shapes else "no such key"
                raise CheckpointKeyError(
                    f"{key}: shape {tuple(tensor.shape)} does not fit {ours} ({found}) "
                    "of this config; pick the config that matches the checkpoint."
                )
            converted[ours] = part
    if set(converted) != set(expected_shapes):
        raise RuntimeError(f"key map incomplete: {sorted(set(expected_shapes) ^ set(converted))[:10]}")
    return converted


def _check_layout(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> None:
    """Raise :class:`CheckpointKeyError` naming the missing and unexpected keys of a (prefix-free) state dict."""
    key_map = released_key_map(config)
    missing = [k for k in key_map if k not in state_dict]
    unexpected = [k for k in state_dict if k not in key_map and not is_dead_key(k, config)]
    if missing or unexpected:
        lines = ["The state dict does not have the released FaceCLIP encoder layout for this config."]
        if missing:
            lines.append(
                f"Missing keys ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
            )
        if unexpected:
            lines.append(
                f"Unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}"
            )
        lines.append(
            "Pass the released model/face_clip_encoder.pt, or our own layout to FaceCLIPEncoder.from_pretrained."
        )
        raise CheckpointKeyError("\n".join(lines))
    has_second_face_vit = any(k.startswith("face_clip_g.face_encoder.") for k in state_dict)
    if (
        config.get("share_face_encoder", False)
        and has_second_face_vit
        and not face_encoders_identical(state_dict)
    ):
        raise CheckpointKeyError(
            "share_face_encoder=True, but the two branches' face ViT weights differ (or are not loaded); "
            "set share_face_encoder=False, or let with_share_face_encoder decide it."
        )


def load_released_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read released weights: a ``.pt`` (``torch.load(weights_only=True)``, never executing code) or
    ``.safetensors`` file, or a folder / hub repo holding ``model/face_clip_encoder.pt``.

    Each tensor is checked as it is read; tensors holding NaN or infinity are counted in one warning.

    Raises:
        faceclip.hub.WeightsNotFoundError: the file cannot be found.
        faceclip.hub.WeightsFileError: the file is empty, cut short, not a checkpoint, or holds more than
            tensors (a ``ValueError``).
    """
    from faceclip.convert.finite import NonFiniteTensors
    from faceclip.hub import read_state_dict_file, resolve_file
    from faceclip.pipelines.sdxl.family import LICENSE_NOTICE as NONCOMMERCIAL_NOTICE
    from faceclip.pipelines.sdxl.family import RELEASED_REPO

    path = Path(source).expanduser()
    if not path.is_file():
        path = resolve_file(
            source, RELEASED_FILENAME, what="the released FaceCLIP encoder weights", hint=NONCOMMERCIAL_NOTICE
        )
    logger.info("Loading %s. %s", path, NONCOMMERCIAL_NOTICE)
    state_dict = read_state_dict_file(
        path,
        advice=f"Pass the released {RELEASED_FILENAME} (hf download {RELEASED_REPO} {RELEASED_FILENAME}).",
    )
    nonfinite = NonFiniteTensors(path)
    for key, tensor in state_dict.items():
        nonfinite.check(key, tensor)
    nonfinite.warn()
    return state_dict
