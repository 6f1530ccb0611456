"""The released ``face_t5_encoder.pt`` layout -> our FaceT5Encoder: key map, dead keys, files, bounded memory."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from safetensors import safe_open

from faceclip import FaceT5Encoder
from faceclip.convert import CheckpointKeyError
from faceclip.convert.facet5_encoder import (
    DEAD_KEYS,
    config_from_released_keys,
    convert_released_state_dict,
    is_dead_key,
    released_key_map,
)
from faceclip.convert.facet5_files import convert_facet5_encoder
from faceclip.models.facet5_encoder import create_facet5_encoder, facet5_config

from .facet5_reference import RELEASED_KEY_COUNT, dead_released_keys, read_manifest, to_released_layout

PROMPTS = ["a woman in a red coat", "an old man reading a newspaper"]


@pytest.fixture
def encoder() -> FaceT5Encoder:
    return create_facet5_encoder("facet5-tiny", seed=0)


def outputs(encoder: FaceT5Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    faces = torch.rand(2, 3, 32, 32, generator=generator)
    t5_ids = torch.randint(0, 128, (2, 16), generator=generator)
    with torch.no_grad():
        out = encoder(face_images=faces, prompts=PROMPTS, t5_input_ids=t5_ids)
    return out.prompt_embeds, out.pooled_prompt_embeds


def test_every_released_key_is_mapped_or_dead():
    """All 958 keys of the released file, with its shapes: the full config is read back from them."""
    manifest = read_manifest()
    assert len(manifest) == RELEASED_KEY_COUNT
    meta = {key: torch.empty(shape, device="meta") for key, shape, _dtype in manifest}
    config = config_from_released_keys(meta, facet5_config("facet5-flux"))
    assert config == facet5_config("facet5-flux")
    mapped = set(released_key_map(config))
    dead = {key for key in meta if is_dead_key(key, config)}
    assert not mapped & dead and mapped | dead == set(meta)
    assert len(mapped) == 922 and len(dead) == 36
    for pattern in DEAD_KEYS:  # no pattern is stale
        pattern = pattern.format(last=5)
        assert any(k == pattern or (pattern.endswith("*") and k.startswith(pattern[:-1])) for k in dead), (
            pattern
        )
    with init_empty_weights(include_buffers=False):
        model = FaceT5Encoder.from_config(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    converted = convert_released_state_dict(meta, config, expected)
    assert set(converted) == set(expected)
    assert (
        sum(t.numel() for t in converted.values())
        == 6_274_222_594 - sum(meta[k].numel() for k in dead) - 5 * 2 * 4096 * 4097
    )


def test_official_round_trip_reads_sizes_from_the_keys(encoder):
    released = to_released_layout(encoder)
    loaded = FaceT5Encoder.from_official(released, config="facet5-tiny")
    sizes = ("clip_config", "t5_config", "face_config", "fuser_config", "max_sequence_length")
    assert {k: loaded.config[k] for k in sizes} == {k: encoder.config[k] for k in sizes}
    for ours, theirs in zip(outputs(loaded), outputs(encoder)):
        assert torch.equal(ours, theirs)
    assert not any(p.requires_grad for p in loaded.text_encoder_2.parameters())


DEAD_PARTS = {
    "face_pos_proj": ["encoder_2.face_pos_proj."],
    "vit_identity_head": ["encoder_2.face_encoder.feature."],
    "vit_mask_token": ["encoder_2.face_encoder.mask_token"],
    "two_stage_head": ["encoder_2.fuser.enc_output"],
    "last_face_layer": ["encoder_2.fuser.encoder.layers.1."],
    "last_bi_attention_face_side": [
        "encoder_2.fuser.encoder.fusion_layers.1.gamma_v",
        "encoder_2.fuser.encoder.fusion_layers.1.attn.values_l_proj.",
        "encoder_2.fuser.encoder.fusion_layers.1.attn.out_v_proj.",
    ],
}


@pytest.mark.parametrize("part", sorted(DEAD_PARTS))
def test_perturbing_a_dead_part_changes_no_output(encoder, part):
    released = to_released_layout(encoder)
    reference = outputs(FaceT5Encoder.from_official(released, config="facet5-tiny"))
    perturbed = {
        k: v + torch.randn_like(v) if k.startswith(tuple(DEAD_PARTS[part])) else v
        for k, v in released.items()
    }
    assert sum(k.startswith(tuple(DEAD_PARTS[part])) for k in released) >= 1
    for ours, theirs in zip(outputs(FaceT5Encoder.from_official(perturbed, config="facet5-tiny")), reference):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("rows", "dead"), [(slice(0, 64), True), (slice(64, 96), False)])
def test_face_layer_query_key_rows_are_dead_and_value_rows_live(encoder, rows, dead):
    """At one face per call a patch attends only to itself: the q/k rows [0:2D] act on nothing, v rows do."""
    released = to_released_layout(encoder)
    reference = outputs(FaceT5Encoder.from_official(released, config="facet5-tiny"))
    for name in ("in_proj_weight", "in_proj_bias"):
        key = f"encoder_2.fuser.encoder.layers.0.self_attn.{name}"
        released[key] = released[key].clone()
        released[key][rows] += 0.5
    embeds, pooled = outputs(FaceT5Encoder.from_official(released, config="facet5-tiny"))
    assert torch.equal(embeds, reference[0]) is dead
    assert torch.equal(pooled, reference[1])


def test_unknown_and_missing_keys_are_named(encoder):
    released = to_released_layout(encoder)
    released["encoder_2.something_new.weight"] = torch.zeros(1)
    del released["encoder_2.face_patch_proj.bias"]
    with pytest.raises(CheckpointKeyError, match=r"something_new(.|\n)*|face_patch_proj\.bias") as info:
        FaceT5Encoder.from_official(released, config="facet5-tiny")
    assert "something_new" in str(info.value) and "face_patch_proj.bias" in str(info.value)


def test_clip_keys_without_the_text_model_level_are_accepted(encoder):
    released = {
        k.replace("encoder_1.text_model.", "encoder_1."): v for k, v in to_released_layout(encoder).items()
    }
    loaded = FaceT5Encoder.from_official(released, config="facet5-tiny")
    assert torch.equal(outputs(loaded)[1], outputs(encoder)[1])


def test_dead_key_list_matches_the_tiny_layout(encoder):
    config = dict(encoder.config)
    assert all(is_dead_key(key, config) for key in dead_released_keys(encoder))
    assert not any(is_dead_key(key, config) for key in released_key_map(config))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_file_conversion_in_shards_loads_back(encoder, tmp_path, dtype):
    path = tmp_path / "face_t5_encoder.pt"
    torch.save(to_released_layout(encoder), path)
    out = convert_facet5_encoder(
        path, tmp_path / "converted", config="facet5-tiny", torch_dtype=dtype, max_shard_bytes=2 << 20
    )
    index = json.loads((out / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    stored = {}
    for shard in set(index["weight_map"].values()):
        with safe_open(out / shard, "pt") as handle:
            stored.update({key: handle.get_slice(key).get_dtype() for key in handle.keys()})  # noqa: SIM118
    assert stored["text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wo.weight"] == "F32"
    assert stored["face_patch_proj.weight"] == ("BF16" if dtype else "F32")
    loaded = FaceT5Encoder.from_pretrained(out, torch_dtype=dtype)
    wo = loaded.text_encoder_2.encoder.block[0].layer[1].DenseReluDense.wo.weight
    assert wo.dtype == torch.float32 and loaded.face_patch_proj.weight.dtype == (dtype or torch.float32)
    if dtype is None:
        for ours, theirs in zip(outputs(loaded), outputs(encoder)):
            assert torch.equal(ours, theirs)
    mapped = FaceT5Encoder.from_official(path, config="facet5-tiny")  # the memory-mapped path
    assert torch.equal(outputs(mapped)[0], outputs(encoder)[0])


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "face_t5_encoder.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="state dict"):
        FaceT5Encoder.from_official(path)


def test_a_missing_file_names_what_is_missing(tmp_path):
    from faceclip.hub import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"face_t5_encoder\.pt"):
        FaceT5Encoder.from_official(tmp_path)
