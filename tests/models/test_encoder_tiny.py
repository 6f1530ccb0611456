"""Behaviour of the joint encoder on the tiny config (fast, random weights)."""

from __future__ import annotations

import logging

import pytest
import torch

from faceclip.models import FaceCLIPEncoder, FaceCLIPEncoderOutput, create_encoder, list_configs

PROMPTS = ["a woman on a beach", "an id card photo of a man", "a portrait in the rain"]


def test_configs_and_output_shapes(tiny_encoder, faces):
    assert {"faceclip-sdxl", "faceclip-tiny"} <= set(list_configs())
    assert not tiny_encoder.training
    out = tiny_encoder(face_images=faces, prompts=PROMPTS, has_face=torch.tensor([True, True, False]))
    assert isinstance(out, FaceCLIPEncoderOutput)
    assert out.prompt_embeds.shape == (3, 77, tiny_encoder.prompt_embeds_dim)
    assert out.pooled_prompt_embeds.shape == (3, tiny_encoder.pooled_dim)
    assert tiny_encoder.prompt_embeds_dim == 32 + 48 and tiny_encoder.pooled_dim == 48
    assert out.prompt_embeds.dtype == torch.float32
    assert torch.isfinite(out.prompt_embeds).all() and torch.isfinite(out.pooled_prompt_embeds).all()
    # Face rows get the prefix, the others not.
    assert out.input_ids[0, 4] == 1014 and out.input_ids[2, 4] != 1014


def test_return_dict_false_gives_the_diffusers_style_tuple(tiny_encoder, faces):
    out = tiny_encoder(face_images=faces, prompts=PROMPTS)
    embeds, pooled, ids = tiny_encoder(face_images=faces, prompts=PROMPTS, return_dict=False)
    assert torch.equal(embeds, out.prompt_embeds) and torch.equal(pooled, out.pooled_prompt_embeds)
    assert torch.equal(ids, out.input_ids)


def test_sdxl_config_sizes():
    with torch.device("meta"):
        enc = create_encoder("faceclip-sdxl")
    assert enc.prompt_embeds_dim == 2048 and enc.pooled_dim == 1280
    n_l = sum(p.numel() for p in enc.branch_l.parameters())
    n_g = sum(p.numel() for p in enc.branch_g.parameters())
    # Released branch totals minus the dropped dead parameters (mask_token, enc_output*, last-layer image side).
    dead_l = 768 + 592_128 + 26_439_744 // 6 + (2 * 1024 * 768 + 1024 + 768) + 768
    dead_g = 768 + 1_642_240 + 51_921_984 // 6 + (2 * 1024 * 1280 + 1024 + 1280) + 1280
    assert n_l == 461_136_450 - dead_l
    assert n_g == 1_112_210_498 - dead_g


def test_save_load_round_trip(tiny_encoder, faces, tmp_path):
    tiny_encoder.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (
        tmp_path / "diffusion_pytorch_model.safetensors"
    ).is_file()
    loaded = FaceCLIPEncoder.from_pretrained(tmp_path)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.branch_l.face_encoder.parameters())
    assert not any(p.requires_grad for p in loaded.branch_g.text_tower.parameters())
    a = tiny_encoder(face_images=faces, prompts=PROMPTS)
    b = loaded(face_images=faces, prompts=PROMPTS)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)
    assert torch.equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)


def test_from_pretrained_missing_folder_is_clear(tmp_path):
    from faceclip.hub import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="no-such-folder"):
        FaceCLIPEncoder.from_pretrained(tmp_path / "no-such-folder")


def test_batch_equals_single_rows(tiny_encoder, faces):
    has_face = torch.tensor([True, False, True])
    with torch.no_grad():
        batch = tiny_encoder(face_images=faces, prompts=PROMPTS, has_face=has_face)
        for i in range(3):
            single = tiny_encoder(
                face_images=faces[i : i + 1], prompts=PROMPTS[i], has_face=has_face[i : i + 1]
            )
            torch.testing.assert_close(single.prompt_embeds[0], batch.prompt_embeds[i], atol=1e-5, rtol=0)
            torch.testing.assert_close(
                single.pooled_prompt_embeds[0], batch.pooled_prompt_embeds[i], atol=1e-5, rtol=0
            )


def test_id_token_replaced_only_at_prefix_position(tiny_encoder, faces):
    branch = tiny_encoder.branch_l
    ids = tiny_encoder.tokenize(["an id card photo", "an id card photo"], has_face=[True, False])
    later_id = (ids[0] == 1014).nonzero().flatten().tolist()
    assert later_id[0] == 4 and len(later_id) == 2  # the prefix's id and the prompt's id
    identity = branch.encode_face(faces[:2]).identity
    with torch.no_grad():
        text_only = branch.encode_text(ids)
        with_face = branch.encode_text(ids, identity, torch.tensor([True, False]))
        tower = branch.text_tower
        face_token = branch.face_token_proj(identity / identity.norm(dim=-1, keepdim=True))
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[0, 4] = True
        only_pos4 = tower(ids, mask, face_token[:1])
        mask[0, later_id[1]] = True
        both = tower(ids, mask, face_token[[0, 0]])
    # Causal tower: positions before 4 are untouched, position 4 onwards change on the face row.
    torch.testing.assert_close(with_face[0, :4], text_only[0, :4], atol=1e-6, rtol=0)
    assert (with_face[0, 4:] - text_only[0, 4:]).abs().amax() > 1e-3
    torch.testing.assert_close(with_face, only_pos4, atol=1e-6, rtol=0)
    assert (with_face[0] - both[0]).abs().amax() > 1e-3
    # The row without a face keeps its "id" token (it has no prefix).
    torch.testing.assert_close(with_face[1], text_only[1], atol=1e-6, rtol=0)


def test_pooled_of_no_face_rows_ignores_the_face(tiny_encoder, faces):
    for branch in (tiny_encoder.branch_l, tiny_encoder.branch_g):
        for layer in branch.fuser.layers:  # open the layer-scale gates (1e-4 at init) so the face shows
            layer.bi_attn.gamma_l.data.fill_(1.0)
    a = tiny_encoder(face_images=faces, prompts=PROMPTS, has_face=torch.tensor([False] * 3))
    b = tiny_encoder(face_images=faces.flip(0), prompts=PROMPTS, has_face=torch.tensor([False] * 3))
    torch.testing.assert_close(a.pooled_prompt_embeds, b.pooled_prompt_embeds, atol=1e-6, rtol=0)
    # ... but the face patches still reach the prompt embeddings through the fuser.
    assert (a.prompt_embeds - b.prompt_embeds).abs().amax() > 1e-2


def test_negative_path_runs_black_faces(tiny_encoder):
    out = tiny_encoder(face_images=None, prompts=["ugly, blurry"] * 2)
    black = torch.zeros(2, 3, tiny_encoder.face_image_size, tiny_encoder.face_image_size)
    ref = tiny_encoder(face_images=black, prompts=["ugly, blurry"] * 2, has_face=torch.tensor([False, False]))
    torch.testing.assert_close(out.prompt_embeds, ref.prompt_embeds, atol=1e-6, rtol=0)
    assert out.input_ids[0, 4] != 1014


def test_gradients_reach_exactly_the_trainable_parts(tiny_encoder, faces):
    enc = tiny_encoder.train()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert all(".face_encoder." in n or ".text_tower." in n for n in frozen)
    assert all(".face_encoder." not in n and ".text_tower." not in n for n in trainable)
    assert {n.split(".")[1] for n in trainable} == {
        "face_token_proj",
        "face_patch_proj",
        "face_pos_proj",
        "text_embed_proj",
        "text_pos_proj",
        "fuser",
        "logit_scale",
        "logit_bias",
    }
    out = enc(face_images=faces, prompts=PROMPTS)
    loss = out.prompt_embeds.square().mean() + out.pooled_prompt_embeds.square().mean()
    for branch in (enc.branch_l, enc.branch_g):
        # A stage-1 style contrastive logit uses logit_scale / logit_bias and the frozen text projection.
        ids = enc.tokenize(PROMPTS, [True] * 3)
        face = branch.encode_face(faces)
        text = torch.nn.functional.normalize(branch.encode_text_features(ids, face.identity), dim=-1)
        loss = loss + (branch.logit_scale.exp() * (text @ text.T) + branch.logit_bias).mean()
    loss.backward()
    for name, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_each_distinct_face_runs_once(tiny_encoder, faces):
    calls = []
    tiny_encoder.branch_l.face_encoder.register_forward_hook(
        lambda m, args, out: calls.append(args[0].shape[0])
    )
    repeated = faces[[0, 1, 0, 1, 1]]
    with torch.no_grad():
        out = tiny_encoder(face_images=repeated, prompts=[f"prompt {i}" for i in range(5)])
        ref = tiny_encoder(face_images=faces[[0, 1]], prompts=["prompt 0", "prompt 1"])
    assert calls == [2, 2]
    torch.testing.assert_close(out.prompt_embeds[:2], ref.prompt_embeds, atol=1e-5, rtol=0)
    calls.clear()
    tiny_encoder(face_images=None, prompts=["neg"] * 4)
    assert calls == [1]


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 0.2), (torch.float16, 0.02)])
def test_half_precision_without_autocast(tiny_encoder, faces, dtype, atol):
    ref = tiny_encoder(face_images=faces, prompts=PROMPTS)
    half = tiny_encoder.to(dtype)
    out = half(face_images=faces, prompts=PROMPTS)  # fp32 faces are cast inside
    assert out.prompt_embeds.dtype == dtype and out.pooled_prompt_embeds.dtype == dtype
    torch.testing.assert_close(out.prompt_embeds.float(), ref.prompt_embeds, atol=atol, rtol=0)
    torch.testing.assert_close(out.pooled_prompt_embeds.float(), ref.pooled_prompt_embeds, atol=atol, rtol=0)


def _weight_dtypes(model: torch.nn.Module) -> dict[str, set[torch.dtype]]:
    dtypes: dict[str, set[torch.dtype]] = {"fuser": set(), "rest": set()}
    for name, param in model.named_parameters():
        dtypes["fuser" if ".fuser." in name else "rest"].add(param.dtype)
    return dtypes


@pytest.mark.parametrize("load", ["from_pretrained", "cast"])
def test_half_precision_keeps_the_fusers_in_fp32(tiny_encoder, faces, tmp_path, load):
    """As in the released model, the fusers run in fp32 while the rest runs in bf16; outputs come back in bf16."""
    prompts = PROMPTS
    with torch.no_grad():
        ref = tiny_encoder(face_images=faces, prompts=prompts)
        everything_bf16 = create_encoder("faceclip-tiny", seed=0).to(torch.bfloat16)(
            face_images=faces, prompts=prompts
        )
        if load == "from_pretrained":
            tiny_encoder.save_pretrained(tmp_path)
            model = FaceCLIPEncoder.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
        else:
            model = create_encoder("faceclip-tiny", seed=0).cast(torch.bfloat16)
        assert _weight_dtypes(model) == {"fuser": {torch.float32}, "rest": {torch.bfloat16}}
        assert model.dtype == torch.bfloat16
        calls = []
        model.branch_l.fuser.register_forward_hook(
            lambda m, args, out: calls.append((args[0].dtype, out.dtype))
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):  # an outer autocast does not reach the fuser
            out = model(face_images=faces, prompts=prompts)
    assert calls == [(torch.float32, torch.float32)]
    assert out.prompt_embeds.dtype == out.pooled_prompt_embeds.dtype == torch.bfloat16
    error = (out.prompt_embeds.float() - ref.prompt_embeds).abs().max()
    assert error < (everything_bf16.prompt_embeds.float() - ref.prompt_embeds).abs().max()


def test_over_long_prompt_truncated_with_one_warning(tiny_encoder, caplog):
    long = "a photo of a person " * 30
    with caplog.at_level(logging.WARNING):
        out = tiny_encoder(face_images=None, prompts=[long, long])
    assert out.input_ids[:, 76].eq(49407).all()
    assert len([r for r in caplog.records if "too long" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            dict(face_images=torch.rand(3, 28, 28), prompts=["a"]),
            ValueError,
            r"face_images: expected shape \(B, 3, H, W\)",
        ),
        (
            dict(face_images=torch.rand(1, 1, 28, 28), prompts=["a"]),
            ValueError,
            "face_images.*got \\(1, 1, 28, 28\\)",
        ),
        (
            dict(face_images=torch.zeros(1, 3, 28, 28, dtype=torch.uint8), prompts=["a"]),
            TypeError,
            "face_images.*uint8.*/ 255",
        ),
        (
            dict(face_images=[torch.rand(3, 28, 28)], prompts=["a"]),
            TypeError,
            "face_images: expected a .* tensor",
        ),
        (
            dict(face_images=torch.rand(2, 3, 28, 28), prompts=["a"]),
            ValueError,
            "face_images: 2 faces for 1 prompts",
        ),
        (
            dict(face_images=torch.rand(1, 3, 28, 28), prompts=["a"], has_face=torch.tensor([True, False])),
            ValueError,
            r"has_face: .*shape \(1,\)",
        ),
        (
            dict(face_images=torch.rand(1, 3, 28, 28), prompts=["a"], has_face=torch.tensor([1])),
            ValueError,
            "has_face: expected a bool",
        ),
        (
            dict(face_images=None, prompts=["a"], has_face=torch.tensor([True])),
            ValueError,
            "has_face: .*face_images is None",
        ),
        (dict(face_images=None, prompts=[]), ValueError, "prompts: the batch is empty"),
        (dict(face_images=None, prompts=[1, 2]), TypeError, "prompts: expected a str or a list of str"),
    ],
)
def test_bad_inputs_name_the_argument(tiny_encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_encoder(**kwargs)


def test_forward_does_not_read_pixel_values(tiny_encoder):
    """Value checks (finite, in [0, 1]) belong to the pipeline's boundary; forward checks shapes and dtypes."""
    for pixels in (torch.rand(1, 3, 28, 28) * 255, torch.full((1, 3, 28, 28), float("nan"))):
        out = tiny_encoder(face_images=pixels, prompts=["a"])
        assert out.prompt_embeds.shape == (1, 77, tiny_encoder.prompt_embeds_dim)


def test_branch_input_ids_without_prefix_rejected(tiny_encoder):
    with_prefix = tiny_encoder.tokenize(["a photo"], has_face=[True])
    tiny_encoder.branch_l.check_input_ids(with_prefix, torch.tensor([True]))
    plain = tiny_encoder.tokenize(["a photo"], has_face=[False])
    tiny_encoder.branch_l.check_input_ids(plain, torch.tensor([False]))
    with pytest.raises(ValueError, match="input_ids: row 0 has a face"):
        tiny_encoder.branch_l.check_input_ids(plain, torch.tensor([True]))


def test_create_encoder_overrides_and_unknown_names():
    enc = create_encoder("faceclip-tiny", seed=0, share_face_encoder=True)
    assert enc.branch_g.face_encoder is enc.branch_l.face_encoder
    assert not any(k.startswith("branch_g.face_encoder.") for k in enc.state_dict())
    with pytest.raises(TypeError, match="unknown config entries"):
        create_encoder("faceclip-tiny", widht=3)
    with pytest.raises(ValueError, match="unknown encoder config 'faceclip-xl'"):
        create_encoder("faceclip-xl")
