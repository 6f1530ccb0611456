"""Released key layout -> ours: key map, dead keys, errors, file formats, shared face ViT, CLI."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from faceclip.cli import main
from faceclip.convert import CheckpointKeyError, convert_released_state_dict, released_key_map
from faceclip.convert.faceclip_encoder import is_dead_key, with_share_face_encoder
from faceclip.models import FaceCLIPEncoder, encoder_config

from .conftest import read_manifest, to_released_layout

PROMPTS = ["a woman on a beach", "an id card photo"]


def test_every_released_key_is_mapped_or_documented_dead():
    config = encoder_config("faceclip-sdxl")
    manifest = [k for k, _, _ in read_manifest()]
    assert len(manifest) == 1686
    key_map = released_key_map(config)
    dead = [k for k in manifest if is_dead_key(k, config)]
    assert set(key_map) | set(dead) == set(manifest)
    assert not set(key_map) & set(dead)
    # Per branch: 4 enc_output*, 16 keys of the last deformable layer, 5 last-layer bi-attention image-side
    # keys, mask_token.
    assert len(dead) == 2 * (4 + 16 + 5 + 1)
    with torch.device("meta"):
        ours = FaceCLIPEncoder.from_config(config).state_dict()
    assert {t for targets in key_map.values() for t, _ in targets} == set(ours)
    # With identical face ViTs the second copy is dropped too.
    shared = {**config, "share_face_encoder": True}
    dead_shared = {k for k in manifest if is_dead_key(k, shared)}
    assert dead_shared == set(dead) | {k for k in manifest if k.startswith("face_clip_g.face_encoder.")}


def _meta_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in FaceCLIPEncoder.from_config(config).state_dict().items()}


def test_released_shapes_fit_the_sdxl_config():
    config = encoder_config("faceclip-sdxl")
    state_dict = {
        k: torch.empty(shape, dtype=getattr(torch, dt), device="meta") for k, shape, dt in read_manifest()
    }
    config = with_share_face_encoder(state_dict, config)
    assert not config["share_face_encoder"]  # meta tensors never compare equal
    converted = convert_released_state_dict(state_dict, config, _meta_shapes(config))
    assert converted["branch_g.text_tower.layers.31.self_attn.q_proj.weight"].shape == (1280, 1280)
    assert converted["branch_l.face_encoder.feature_proj.weight"].shape == (768, 110592)


def test_converter_checks_shapes_against_the_given_ones(tiny_encoder, tiny_config):
    released = to_released_layout(tiny_encoder, tiny_config)
    config = with_share_face_encoder(released, tiny_config)
    shapes = _meta_shapes(config)
    assert set(convert_released_state_dict(released, config, shapes)) == set(shapes)
    wrong = {**shapes, "branch_l.face_token_proj.bias": (7,)}
    with pytest.raises(
        CheckpointKeyError, match=r"face_clip_l\.proj1\.bias.*branch_l\.face_token_proj\.bias"
    ):
        convert_released_state_dict(released, config, wrong)


def test_sharing_asked_for_different_face_vits_is_refused(tiny_encoder, tiny_config):
    released = to_released_layout(tiny_encoder, tiny_config)
    config = {**tiny_config, "share_face_encoder": True}
    with pytest.raises(CheckpointKeyError, match="face ViT weights differ"):
        convert_released_state_dict(released, config, _meta_shapes(config))


def test_released_round_trip_with_prefix(tiny_encoder, tiny_config, faces):
    released = {f"model.{k}": v for k, v in to_released_layout(tiny_encoder, tiny_config).items()}
    loaded = FaceCLIPEncoder.from_official(released, config="faceclip-tiny")
    assert not loaded.config.share_face_encoder
    a = tiny_encoder(face_images=faces[:2], prompts=PROMPTS)
    b = loaded(face_images=faces[:2], prompts=PROMPTS)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)
    assert not any(p.requires_grad for p in loaded.branch_g.text_tower.parameters())


def test_missing_unexpected_and_misshaped_keys_are_named(tiny_encoder, tiny_config):
    released = to_released_layout(tiny_encoder, tiny_config)
    extra = {**released, "face_clip_l.fuser.encoder.layers.0.level_embed": torch.zeros(1)}
    with pytest.raises(
        CheckpointKeyError, match=r"Unexpected keys \(1\): face_clip_l.fuser.encoder.layers.0.level_embed"
    ):
        FaceCLIPEncoder.from_official(extra, config="faceclip-tiny")
    missing = {k: v for k, v in released.items() if k != "face_clip_g.proj1.bias"}
    with pytest.raises(CheckpointKeyError, match=r"Missing keys \(1\): face_clip_g.proj1.bias"):
        FaceCLIPEncoder.from_official(missing, config="faceclip-tiny")
    bad = {**released, "face_clip_l.proj1.bias": torch.zeros(7)}
    with pytest.raises(CheckpointKeyError, match=r"face_clip_l.proj1.bias: shape \(7,\)"):
        FaceCLIPEncoder.from_official(bad, config="faceclip-tiny")


def test_identical_face_vits_are_shared(tiny_encoder, tiny_config, faces, tmp_path):
    released = to_released_layout(tiny_encoder, tiny_config)
    for k in [k for k in released if k.startswith("face_clip_g.face_encoder.")]:
        released[k] = released[k.replace("face_clip_g.", "face_clip_l.", 1)].clone()
    separate = FaceCLIPEncoder.from_official(
        {k: v for k, v in released.items() if not k.startswith("face_clip_g.face_encoder.")}
        | {k: v + 0 for k, v in released.items() if k.startswith("face_clip_g.face_encoder.")},
        config="faceclip-tiny",
    )
    shared = FaceCLIPEncoder.from_official(released, config="faceclip-tiny")
    assert shared.config.share_face_encoder and shared.branch_g.face_encoder is shared.branch_l.face_encoder
    assert not any(k.startswith("branch_g.face_encoder.") for k in shared.state_dict())
    # Perturb one g copy: the weights now differ, nothing is shared.
    released["face_clip_g.face_encoder.norm.bias"] = released["face_clip_g.face_encoder.norm.bias"] + 1e-3
    assert not FaceCLIPEncoder.from_official(released, config="faceclip-tiny").config.share_face_encoder

    calls = []
    shared.branch_l.face_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    a = shared(face_images=faces[:2], prompts=PROMPTS)
    assert calls == [2]
    b = separate(face_images=faces[:2], prompts=PROMPTS)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)

    shared.save_pretrained(tmp_path)
    reloaded = FaceCLIPEncoder.from_pretrained(tmp_path)
    assert reloaded.config.share_face_encoder
    assert torch.equal(reloaded(face_images=faces[:2], prompts=PROMPTS).prompt_embeds, a.prompt_embeds)
    moved = reloaded.to(torch.float16)
    assert moved.branch_g.face_encoder.pos_embed.dtype == torch.float16


def test_cli_convert_pt_and_safetensors(tiny_encoder, tiny_config, faces, tmp_path, capsys):
    released = to_released_layout(tiny_encoder, tiny_config)
    pt = tmp_path / "face_clip_encoder.pt"
    torch.save(released, pt)
    st = tmp_path / "face_clip_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in released.items()}, st)
    ref = tiny_encoder(face_images=faces[:2], prompts=PROMPTS).prompt_embeds
    for i, source in enumerate((pt, st)):
        out = tmp_path / f"converted{i}"
        assert (
            main(["convert", "--released", str(source), "--out", str(out), "--config", "faceclip-tiny"]) == 0
        )
        loaded = FaceCLIPEncoder.from_pretrained(out)
        assert torch.equal(loaded(face_images=faces[:2], prompts=PROMPTS).prompt_embeds, ref)
    # The converted folder and its files get the usual permissions (others can read a shared model).
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o666 & ~umask}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    # The output folder is never overwritten; bad sources fail with a message, not a traceback.
    assert (
        main(
            [
                "convert",
                "--released",
                str(pt),
                "--out",
                str(tmp_path / "converted0"),
                "--config",
                "faceclip-tiny",
            ]
        )
        == 2
    )
    assert main(["convert", "--released", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert (
        main(["convert", "--released", str(pt), "--out", str(tmp_path / "y")]) == 2
    )  # tiny weights, sdxl config: a wrong --config is bad input
    assert "Missing keys" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_legacy_torch_save_format_is_read(tiny_encoder, tiny_config, faces, tmp_path):
    """Files written by torch's pre-zip serialisation cannot be memory-mapped; they are read without mmap."""
    path = tmp_path / "legacy.pt"
    torch.save(to_released_layout(tiny_encoder, tiny_config), path, _use_new_zipfile_serialization=False)
    loaded = FaceCLIPEncoder.from_official(path, config="faceclip-tiny")
    a = tiny_encoder(face_images=faces[:2], prompts=PROMPTS)
    assert torch.equal(a.prompt_embeds, loaded(face_images=faces[:2], prompts=PROMPTS).prompt_embeds)


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"a": torch.zeros(1), "b": PicklableThing()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        FaceCLIPEncoder.from_official(path, config="faceclip-tiny")


class PicklableThing:
    pass


def test_cli_convert_keeps_the_older_option_name_hidden(tiny_encoder, tiny_config, tmp_path, capsys):
    pt = tmp_path / "face_clip_encoder.pt"
    torch.save(to_released_layout(tiny_encoder, tiny_config), pt)
    out = tmp_path / "converted"
    assert main(["convert", "--official", str(pt), "--out", str(out), "--config", "faceclip-tiny"]) == 0
    assert (out / "config.json").is_file()
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    assert "--released PATH" in text and "--official" not in text
