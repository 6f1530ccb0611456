import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from faceclip.evaluation.clip_score import CLIPScorer, pairwise_cosine
from faceclip.hub import WeightsNotFoundError


def _images(n, size=(40, 52)):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_t_matches_a_hand_computation_with_the_raw_model(tiny_clip):
    scorer = tiny_clip
    images, prompts = _images(3), ["a photo of a cat", "a person on the moon", "photo"]
    scores = scorer.clip_t(images, prompts)

    # By hand: preprocess, project, normalise, dot, x100.
    pixels = torch.tensor(np.stack(scorer.image_processor(images=images)["pixel_values"]))
    tokens = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    model = scorer.model
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    expected = 100 * (image * text).sum(-1)
    assert scores == pytest.approx(expected.tolist(), abs=1e-4)
    assert all(-100 <= s <= 100 for s in scores)


def test_clip_t_depends_on_the_prompt_and_is_batch_independent(tiny_clip):
    scorer = tiny_clip
    image = _images(1)
    one = scorer.clip_t(image * 2, ["a photo of a cat", "a red car"])
    assert one[0] != pytest.approx(one[1])
    assert scorer.clip_t(image, ["a red car"])[0] == pytest.approx(one[1], abs=1e-4)


def test_clip_i_is_one_for_the_same_image_and_lower_for_another(tiny_clip):
    scorer = tiny_clip
    a, b = _images(2)
    same, other = scorer.clip_i([a, a], [a.copy(), b])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert other < same


def test_long_prompts_are_truncated_not_rejected(tiny_clip):
    scorer = tiny_clip
    (score,) = scorer.clip_t(_images(1), ["a very long prompt " * 40])
    assert np.isfinite(score)


def test_mismatched_lengths_name_the_fix(tiny_clip):
    scorer = tiny_clip
    with pytest.raises(ValueError, match="one prompt per image"):
        scorer.clip_t(_images(2), ["x"])
    assert scorer.clip_t([], []) == []


def test_pairwise_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    assert pairwise_cosine(a, b).tolist() == pytest.approx([0.0, 1.0])


def test_missing_local_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"CLIP model.*(\n.*)*--clip-model"):
        CLIPScorer.from_pretrained(tmp_path / "no-such-clip")


def test_uncached_hub_id_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", True
    )  # read by huggingface_hub at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        CLIPScorer.from_pretrained("openai/clip-vit-large-patch14")


def test_folder_without_weights_gives_a_clear_error(tiny_clip_dir, tmp_path):
    (tmp_path / "config.json").write_text((tiny_clip_dir / "config.json").read_text())
    with pytest.raises(WeightsNotFoundError, match=r"model\.safetensors"):
        CLIPScorer.from_pretrained(tmp_path)


def test_loads_in_float32_whatever_the_stored_dtype(tmp_path):
    from transformers import CLIPProcessor

    from .conftest import build_tiny_clip

    model, tokenizer, image_processor = build_tiny_clip()
    model.half().save_pretrained(tmp_path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path)
    assert CLIPScorer.from_pretrained(tmp_path).model.dtype == torch.float32
