"""``faceclip convert --comfyui``: the FaceCLIP-SDXL UNet as one file in ComfyUI's own (LDM) key layout."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from faceclip.cli import main
from faceclip.convert.comfyui_unet import to_comfyui_layout
from faceclip.convert.sdxl_unet import UNetConversionError, expected_unet_shapes
from faceclip.pipelines.sdxl.architectures import architecture_config

SDXL_LDM_SHAPES = {
    "input_blocks.0.0.weight": (320, 4, 3, 3),
    "time_embed.0.weight": (1280, 320),
    "time_embed.2.weight": (1280, 1280),
    "label_emb.0.0.weight": (1280, 2816),
    "label_emb.0.2.weight": (1280, 1280),
    "input_blocks.1.0.in_layers.0.weight": (320,),
    "input_blocks.1.0.emb_layers.1.weight": (320, 1280),
    "input_blocks.1.0.out_layers.3.weight": (320, 320, 3, 3),
    "input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "input_blocks.4.1.proj_in.weight": (640, 640),
    "input_blocks.6.0.op.weight": (640, 640, 3, 3),
    "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
    "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),
    "middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
    "output_blocks.0.0.skip_connection.weight": (1280, 2560, 1, 1),
    "output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
    "output_blocks.5.2.conv.weight": (640, 640, 3, 3),
    "output_blocks.8.0.in_layers.0.weight": (640,),
    "out.0.weight": (320,),
    "out.2.weight": (4, 320, 3, 3),
}
"""Keys and shapes of SDXL base's UNet in the original layout (what ComfyUI's SDXL detection reads)."""


def meta_state_dict(config: dict) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in expected_unet_shapes(config).items()}


def test_sdxl_unet_gets_the_original_layout():
    config = architecture_config("sdxl_unet")
    ldm = to_comfyui_layout(meta_state_dict(config), config)
    assert len(ldm) == 1680
    assert {key: tuple(ldm[key].shape) for key in SDXL_LDM_SHAPES} == SDXL_LDM_SHAPES
    blocks = {key.split(".")[0] + "." + key.split(".")[1] for key in ldm if "_block" in key.split(".")[0]}
    assert blocks == {f"input_blocks.{i}" for i in range(9)} | {f"output_blocks.{i}" for i in range(9)} | {
        f"middle_block.{i}" for i in range(3)
    }
    assert not [key for key in ldm if key.startswith(("down_blocks", "up_blocks", "mid_block", "conv_in"))]


def tiny_unet_files(tmp_path):
    """The tiny UNet saved as a released-style ``unet.pt`` and its config as ``base/unet/config.json``."""
    from faceclip.pipelines.sdxl.tiny import build_tiny_components

    unet = build_tiny_components()["unet"]
    (tmp_path / "base" / "unet").mkdir(parents=True)
    (tmp_path / "base" / "unet" / "config.json").write_text(json.dumps(dict(unet.config)))
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    return unet


def run(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_writes_the_tiny_unet_in_the_original_layout(tmp_path, capsys):
    unet = tiny_unet_files(tmp_path)
    out = tmp_path / "faceclip_unet.safetensors"
    code, err = run(
        capsys,
        "convert",
        "--released",
        str(tmp_path / "unet.pt"),
        "--comfyui",
        "--base-model",
        str(tmp_path / "base"),
        "--out",
        str(out),
    )
    assert code == 0 and "ComfyUI/models/diffusion_models/" in err and "CC-BY-NC-4.0" in err
    source = unet.state_dict()
    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["license"] == "CC-BY-NC-4.0"
        assert torch.equal(f.get_tensor("input_blocks.0.0.weight"), source["conv_in.weight"])
        assert torch.equal(f.get_tensor("label_emb.0.2.weight"), source["add_embedding.linear_2.weight"])
        assert torch.equal(
            f.get_tensor("output_blocks.0.1.proj_out.weight"),
            source["up_blocks.0.attentions.0.proj_out.weight"],
        )
        assert torch.equal(
            f.get_tensor("middle_block.2.out_layers.3.bias"), source["mid_block.resnets.1.conv2.bias"]
        )
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in keys}
    expected = to_comfyui_layout(meta_state_dict(dict(unet.config)), dict(unet.config))
    assert shapes == {key: tuple(value.shape) for key, value in expected.items()}
    # tiny: 2 levels, 1 layer per block -> input_blocks 0-3, output_blocks 0-3, upsampler after the attention
    assert "input_blocks.2.0.op.weight" in keys and "output_blocks.1.2.conv.weight" in keys
    assert {key.split(".")[1] for key in keys if key.startswith("output_blocks")} == {"0", "1", "2", "3"}


def test_cli_refuses_an_out_that_is_not_a_safetensors_file(tmp_path, capsys):
    tiny_unet_files(tmp_path)
    code, err = run(
        capsys,
        "convert",
        "--released",
        str(tmp_path / "unet.pt"),
        "--comfyui",
        "--base-model",
        str(tmp_path / "base"),
        "--out",
        str(tmp_path / "unet_dir"),
    )
    assert code == 2
    assert err.strip().endswith(
        f"--out {tmp_path / 'unet_dir'}: with --comfyui, name a .safetensors file "
        "(e.g. faceclip_sdxl_unet.safetensors)."
    )
    assert not (tmp_path / "unet_dir").exists()


def test_cli_refuses_weights_of_another_config_and_writes_nothing(tmp_path, capsys):
    tiny_unet_files(tmp_path)
    out = tmp_path / "unet.safetensors"
    code, err = run(
        capsys, "convert", "--released", str(tmp_path / "unet.pt"), "--comfyui", "--out", str(out)
    )
    assert code == 2 and "The UNet weights do not match the SDXL UNet config (1680 keys expected)" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "unet.pt"]


def test_cli_refuses_a_damaged_file(tmp_path, capsys):
    bad = tmp_path / "unet.pt"
    bad.write_bytes(b"\x00" * 10)
    code, err = run(
        capsys, "convert", "--released", str(bad), "--comfyui", "--out", str(tmp_path / "o.safetensors")
    )
    assert code == 2 and f"{bad}" in err and "hf download ByteDance/FaceCLIP model/unet.pt" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_refuses_the_flux_family_for_the_unet_file(tmp_path, capsys):
    tiny_unet_files(tmp_path)
    code, err = run(
        capsys,
        "convert",
        "--released",
        str(tmp_path / "unet.pt"),
        "--comfyui",
        "--family",
        "facet5-flux",
        "--out",
        str(tmp_path / "o.safetensors"),
    )
    assert code == 2
    assert err.strip().endswith(
        f"--released {tmp_path / 'unet.pt'} is a faceclip-sdxl file, not facet5-flux."
    )
    assert not (tmp_path / "o.safetensors").exists()


def test_per_block_layer_counts_are_refused():
    config = {**architecture_config("sdxl_unet"), "layers_per_block": [2, 2, 2]}
    with pytest.raises(UNetConversionError, match=r"layers_per_block \[2, 2, 2\]: only one number"):
        to_comfyui_layout({}, config)


def test_missing_keys_are_named():
    config = architecture_config("sdxl_unet")
    state = meta_state_dict(config)
    state.pop("conv_in.weight")
    with pytest.raises(UNetConversionError, match=r"1 missing: conv_in\.weight"):
        to_comfyui_layout(state, config)
