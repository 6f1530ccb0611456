"""The released UNet layout (``model/unet.pt``) against SDXL's UNet config: keys and shapes, without weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from faceclip.convert.sdxl_unet import (
    UNetConversionError,
    convert_released_unet,
    convert_released_unet_state_dict,
    expected_unet_shapes,
)
from faceclip.pipelines.sdxl.architectures import architecture_config

SDXL_UNET_PARAMETERS = 2_567_463_684  # published size of the SDXL base UNet


@pytest.fixture(scope="module")
def sdxl_config() -> dict:
    return architecture_config("sdxl_unet")


@pytest.fixture(scope="module")
def released_layout(sdxl_config) -> dict[str, torch.Tensor]:
    """What ``torch.load("model/unet.pt")`` holds: a full SDXL UNet state dict (meta tensors: no memory)."""
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(sdxl_config).state_dict()


def test_packaged_sdxl_config_is_the_sdxl_base_architecture(sdxl_config):
    shapes = expected_unet_shapes(sdxl_config)
    parameters = sum(shape.numel() for key, shape in shapes.items())
    assert parameters == SDXL_UNET_PARAMETERS
    assert shapes["conv_in.weight"] == (320, 4, 3, 3)
    assert shapes["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert shapes["add_embedding.linear_1.weight"] == (1280, 2816)  # 6 x 256 time ids + 1280 pooled


def test_released_layout_converts_key_for_key(released_layout, sdxl_config):
    converted = convert_released_unet_state_dict(released_layout, sdxl_config)
    assert list(converted) == list(released_layout)
    assert all(converted[k].shape == released_layout[k].shape for k in converted)
    with torch.device("meta"):
        UNet2DConditionModel.from_config(sdxl_config).load_state_dict(converted, strict=True, assign=True)


@pytest.mark.parametrize("prefix", ["module.", "unet.", "module.unet.", "_orig_mod."])
def test_wrapper_prefixes_are_stripped(released_layout, sdxl_config, prefix):
    wrapped = {prefix + key: value for key, value in released_layout.items()}
    assert list(convert_released_unet_state_dict(wrapped, sdxl_config)) == list(released_layout)


def test_all_mismatches_are_reported_at_once(released_layout, sdxl_config):
    broken = dict(released_layout)
    del broken["conv_in.weight"]
    del broken["mid_block.attentions.0.proj_in.bias"]
    broken["lora.weight"] = torch.empty(1, device="meta")
    broken["conv_out.bias"] = torch.empty(3, device="meta")
    with pytest.raises(UNetConversionError) as error:
        convert_released_unet_state_dict(broken, sdxl_config)
    message = str(error.value)
    assert "2 missing: conv_in.weight, mid_block.attentions.0.proj_in.bias" in message
    assert "1 unexpected: lora.weight" in message
    assert "conv_out.bias: (3,) in the file, (4,) expected" in message


def test_a_partial_prefix_is_not_stripped(released_layout, sdxl_config):
    mixed = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(released_layout.items())}
    with pytest.raises(UNetConversionError, match="missing"):
        convert_released_unet_state_dict(mixed, sdxl_config)


def test_convert_file_to_a_diffusers_folder(tmp_path):
    config = architecture_config("tiny_unet") | {
        "cross_attention_dim": 16,
        "projection_class_embeddings_input_dim": 64,
    }
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config)
    state_dict = {"module." + k: v.to(torch.bfloat16) for k, v in unet.state_dict().items()}
    torch.save(state_dict, tmp_path / "unet.pt")
    out = convert_released_unet(tmp_path / "unet.pt", unet.config, tmp_path / "unet")
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    from safetensors.torch import load_file

    stored = load_file(next(out.glob("*.safetensors")))
    assert {value.dtype for value in stored.values()} == {torch.bfloat16}  # the stored dtype is kept
    loaded = UNet2DConditionModel.from_pretrained(out, torch_dtype=torch.bfloat16)
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.to(torch.bfloat16), atol=0, rtol=0)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "unet.pt")
    with pytest.raises(UNetConversionError, match="expected a state dict"):
        convert_released_unet(tmp_path / "unet.pt", architecture_config("sdxl_unet"), tmp_path / "out")
