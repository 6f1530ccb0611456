import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from faceclip.hub import WeightsNotFoundError
from faceclip.models import create_encoder
from faceclip.training.text_init import init_text_towers_from_sdxl


def _fake_sdxl(folder, encoder):
    models = {}
    for name, cls, sub in (
        ("l", CLIPTextModel, "text_encoder"),
        ("g", CLIPTextModelWithProjection, "text_encoder_2"),
    ):
        tower = getattr(encoder, f"branch_{name}").text_tower.config
        config = CLIPTextConfig(vocab_size=tower.vocab_size, hidden_size=tower.width, intermediate_size=tower.mlp_dim,
                                num_hidden_layers=tower.layers, num_attention_heads=tower.heads,
                                max_position_embeddings=tower.context_length, hidden_act=tower.hidden_act,
                                projection_dim=tower.projection_dim)  # fmt: skip
        torch.manual_seed(len(name))
        models[name] = cls(config).eval()
        models[name].save_pretrained(folder / sub)
    return models


def test_text_towers_take_sdxl_text_encoder_weights(tmp_path):
    encoder = create_encoder("faceclip-tiny", seed=0)
    models = _fake_sdxl(tmp_path, encoder)
    init_text_towers_from_sdxl(encoder, tmp_path)
    ids = encoder.tokenize(["a person in a red hat", "snow"])
    with torch.no_grad():
        for name, model in models.items():
            tower = getattr(encoder, f"branch_{name}").text_tower
            expected = model(input_ids=ids).last_hidden_state
            assert torch.allclose(tower(ids), expected, atol=1e-5)
        g = models["g"](input_ids=ids).text_embeds
        assert torch.allclose(encoder.branch_g.encode_text_features(ids), g, atol=1e-5)


def test_missing_sdxl_weights_fail_clearly(tmp_path):
    encoder = create_encoder("faceclip-tiny", seed=0)
    with pytest.raises(WeightsNotFoundError, match=r"text_encoder/model\.safetensors"):
        init_text_towers_from_sdxl(encoder, tmp_path)
