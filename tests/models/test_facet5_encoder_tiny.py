"""FaceT5 encoder on the tiny config: shapes, save/load, batch independence, gradients, dtypes, input errors."""

from __future__ import annotations

import pytest
import torch

from faceclip import FaceT5Encoder
from faceclip.models.facet5_encoder import create_facet5_encoder, facet5_config, list_facet5_configs

PROMPTS = ["a woman in a red coat", "an old man reading a newspaper, film photo"]


@pytest.fixture
def encoder() -> FaceT5Encoder:
    return create_facet5_encoder("facet5-tiny", seed=0)


def inputs(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    faces = torch.rand(batch, 3, 40, 36, generator=generator)
    t5_ids = torch.randint(0, 128, (batch, 16), generator=generator)
    return faces, t5_ids


def run(encoder, faces, prompts, t5_ids):
    with torch.no_grad():
        return encoder(face_images=faces, prompts=prompts, t5_input_ids=t5_ids)


def test_packaged_configs():
    assert {"facet5-flux", "facet5-tiny"} <= set(list_facet5_configs())
    full = facet5_config("facet5-flux")
    assert full["t5_config"]["d_model"] == 4096 and full["max_sequence_length"] == 512
    with pytest.raises(ValueError, match="facet5-tiny"):
        facet5_config("faceclip-tiny")


def test_output_shapes_and_tokens(encoder):
    faces, t5_ids = inputs()
    out = run(encoder, faces, PROMPTS, t5_ids)
    assert out.prompt_embeds.shape == (2, 16, 32)
    assert out.pooled_prompt_embeds.shape == (2, 24)
    assert torch.equal(out.t5_input_ids, t5_ids)
    assert out.clip_input_ids.shape == (2, 77) and (out.clip_input_ids[:, 0] == 49406).all()
    assert (out.clip_input_ids[:, -1] == 49407).all()  # padded with end-of-text
    assert torch.isfinite(out.prompt_embeds).all()


def test_the_face_changes_prompt_embeds_but_not_pooled(encoder):
    faces, t5_ids = inputs()
    a = run(encoder, faces, PROMPTS, t5_ids)
    b = run(encoder, None, PROMPTS, t5_ids)
    assert not torch.allclose(a.prompt_embeds, b.prompt_embeds)
    assert torch.equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)
    zeros = run(encoder, torch.zeros(2, 3, 28, 28), PROMPTS, t5_ids)
    assert torch.equal(b.prompt_embeds, zeros.prompt_embeds)  # None is the zero face


def test_each_row_depends_only_on_its_own_inputs(encoder):
    faces, t5_ids = inputs()
    batch = run(encoder, faces, PROMPTS, t5_ids)
    for row in range(2):
        single = run(encoder, faces[row : row + 1], PROMPTS[row : row + 1], t5_ids[row : row + 1])
        torch.testing.assert_close(batch.prompt_embeds[row], single.prompt_embeds[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(
            batch.pooled_prompt_embeds[row], single.pooled_prompt_embeds[0], atol=1e-6, rtol=0
        )
    other_faces, other_ids = inputs(seed=5)
    faces[1], t5_ids[1] = other_faces[1], other_ids[1]
    changed = run(encoder, faces, [PROMPTS[0], "something else"], t5_ids)
    torch.testing.assert_close(changed.prompt_embeds[0], batch.prompt_embeds[0], atol=1e-6, rtol=0)
    assert not torch.allclose(changed.prompt_embeds[1], batch.prompt_embeds[1])


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    loaded = FaceT5Encoder.from_pretrained(tmp_path)
    sizes = ("clip_config", "t5_config", "face_config", "fuser_config", "max_sequence_length")
    assert {k: loaded.config[k] for k in sizes} == {k: encoder.config[k] for k in sizes}
    assert loaded.text_encoder_2.encoder.embed_tokens.weight is loaded.text_encoder_2.shared.weight
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    faces, t5_ids = inputs()
    assert torch.equal(
        run(loaded, faces, PROMPTS, t5_ids).prompt_embeds, run(encoder, faces, PROMPTS, t5_ids).prompt_embeds
    )


def test_missing_folder_is_a_clear_error(tmp_path):
    from faceclip.hub import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="from_official"):
        FaceT5Encoder.from_pretrained(tmp_path / "nothing")


def test_gradients_reach_exactly_the_trainable_parts(encoder):
    encoder.train()
    faces, t5_ids = inputs()
    out = encoder(face_images=faces, prompts=PROMPTS, t5_input_ids=t5_ids)
    (out.prompt_embeds.square().mean() + out.pooled_prompt_embeds.sum()).backward()
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("face_patch_proj.", "fuser.")) for name in trainable)
    assert {n for n, _ in encoder.fuser.named_parameters(prefix="fuser")} | {
        "face_patch_proj.weight", "face_patch_proj.bias"
    } == trainable  # fmt: skip
    for name, param in encoder.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(encoder, dtype):
    faces, t5_ids = inputs()
    reference = run(encoder, faces, PROMPTS, t5_ids)
    encoder.cast(dtype)
    assert encoder.text_encoder_2.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert encoder.fuser.text_pos_embed.dtype == dtype and encoder.face_patch_proj.weight.dtype == dtype
    out = run(encoder, faces, PROMPTS, t5_ids)
    assert out.prompt_embeds.dtype == dtype and out.pooled_prompt_embeds.dtype == dtype
    torch.testing.assert_close(out.prompt_embeds.float(), reference.prompt_embeds, atol=0.1, rtol=0.05)
    torch.testing.assert_close(
        out.pooled_prompt_embeds.float(), reference.pooled_prompt_embeds, atol=0.1, rtol=0.05
    )


def test_from_pretrained_in_bf16_keeps_wo_in_fp32(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    loaded = FaceT5Encoder.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.text_encoder_2.encoder.block[1].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert loaded.text_encoder_2.shared.weight.dtype == torch.bfloat16


def tiny_t5_tokenizer():
    """A word-level T5-style tokenizer built in code (pad 0, eos 1, unk 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for p in PROMPTS for w in p.replace(",", "").split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def test_t5_tokenizer_is_used_when_no_ids_are_given(encoder):
    faces, _ = inputs()
    with pytest.raises(ValueError, match="t5_input_ids"):
        encoder(face_images=faces, prompts=PROMPTS)
    encoder.t5_tokenizer = tiny_t5_tokenizer()
    out = run(encoder, faces, PROMPTS, None)
    assert out.t5_input_ids.shape == (2, 16)
    assert out.t5_input_ids[0, 6] == 1 and (out.t5_input_ids[0, 7:] == 0).all()  # 6 words, eos, pads
    same = run(encoder, faces, PROMPTS, out.t5_input_ids)
    assert torch.equal(out.prompt_embeds, same.prompt_embeds)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"t5_input_ids": torch.zeros(2, 8, dtype=torch.long)}, ValueError, "pad every row to 16"),
        ({"t5_input_ids": torch.full((2, 16), 500)}, ValueError, "ids must lie"),
        ({"t5_input_ids": torch.zeros(2, 16)}, TypeError, "int64"),
        ({"face_images": torch.rand(3, 3, 28, 28)}, ValueError, "one aligned face per prompt"),
        ({"face_images": torch.zeros(2, 3, 28, 28, dtype=torch.uint8)}, TypeError, "float"),
        ({"prompts": []}, ValueError, "prompts: the batch is empty"),
    ],
)
def test_bad_inputs_name_the_argument(encoder, kwargs, error, match):
    call = {
        "face_images": None,
        "prompts": PROMPTS,
        "t5_input_ids": torch.zeros(2, 16, dtype=torch.long),
        **kwargs,
    }
    with pytest.raises(error, match=match):
        encoder(**call)
