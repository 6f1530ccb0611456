"""``faceclip convert --comfyui`` for FaceT5-FLUX: the transformer as one file in the original FLUX layout."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from faceclip.cli import main
from faceclip.convert.comfyui_flux import convert_flux_for_comfyui, to_original_layout
from faceclip.convert.faceclip_encoder import CheckpointKeyError

# The original (Black Forest Labs) FLUX names of one double block, one single block and the outer layers: what
# ComfyUI's FLUX detection reads (comfy/model_detection.py detect_unet_config looks for
# double_blocks.0.img_attn.norm.key_norm.scale and img_in.weight; comfy/utils.py flux_to_diffusers gives the
# diffusers name of each, and the rows of q/k/v (and proj_mlp) inside qkv / linear1). Shapes: the tiny
# transformer (hidden 16, head dim 8, MLP 64, 16 latent channels, text 32, pooled 24).
DOUBLE_BLOCK = {
    "img_attn.qkv.weight": (48, 16), "img_attn.qkv.bias": (48,),
    "txt_attn.qkv.weight": (48, 16), "txt_attn.qkv.bias": (48,),
    "img_attn.proj.weight": (16, 16), "img_attn.proj.bias": (16,),
    "txt_attn.proj.weight": (16, 16), "txt_attn.proj.bias": (16,),
    "img_attn.norm.query_norm.scale": (8,), "img_attn.norm.key_norm.scale": (8,),
    "txt_attn.norm.query_norm.scale": (8,), "txt_attn.norm.key_norm.scale": (8,),
    "img_mod.lin.weight": (96, 16), "img_mod.lin.bias": (96,),
    "txt_mod.lin.weight": (96, 16), "txt_mod.lin.bias": (96,),
    "img_mlp.0.weight": (64, 16), "img_mlp.0.bias": (64,), "img_mlp.2.weight": (16, 64), "img_mlp.2.bias": (16,),
    "txt_mlp.0.weight": (64, 16), "txt_mlp.0.bias": (64,), "txt_mlp.2.weight": (16, 64), "txt_mlp.2.bias": (16,),
}  # fmt: skip
SINGLE_BLOCK = {
    "linear1.weight": (112, 16), "linear1.bias": (112,), "linear2.weight": (16, 80), "linear2.bias": (16,),
    "modulation.lin.weight": (48, 16), "modulation.lin.bias": (48,),
    "norm.query_norm.scale": (8,), "norm.key_norm.scale": (8,),
}  # fmt: skip
OUTER = {
    "img_in.weight": (16, 16), "img_in.bias": (16,), "txt_in.weight": (16, 32), "txt_in.bias": (16,),
    "time_in.in_layer.weight": (16, 256), "time_in.in_layer.bias": (16,),
    "time_in.out_layer.weight": (16, 16), "time_in.out_layer.bias": (16,),
    "vector_in.in_layer.weight": (16, 24), "vector_in.in_layer.bias": (16,),
    "vector_in.out_layer.weight": (16, 16), "vector_in.out_layer.bias": (16,),
    "guidance_in.in_layer.weight": (16, 256), "guidance_in.in_layer.bias": (16,),
    "guidance_in.out_layer.weight": (16, 16), "guidance_in.out_layer.bias": (16,),
    "final_layer.linear.weight": (16, 16), "final_layer.linear.bias": (16,),
    "final_layer.adaLN_modulation.1.weight": (32, 16), "final_layer.adaLN_modulation.1.bias": (32,),
}  # fmt: skip
TINY_ORIGINAL_SHAPES = {
    **OUTER,
    **{f"double_blocks.0.{key}": shape for key, shape in DOUBLE_BLOCK.items()},
    **{f"single_blocks.0.{key}": shape for key, shape in SINGLE_BLOCK.items()},
}


def back_to_diffusers(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of the mapping, written out from flux_to_diffusers's table (the tiny config: 1 + 1 blocks)."""
    d, s = "transformer_blocks.0.", "single_transformer_blocks.0."
    out = {}
    for end in ("weight", "bias"):
        for names, key in (
            (("attn.to_q", "attn.to_k", "attn.to_v"), f"double_blocks.0.img_attn.qkv.{end}"),
            (
                ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                f"double_blocks.0.txt_attn.qkv.{end}",
            ),
        ):
            out.update(
                {f"{d}{name}.{end}": part for name, part in zip(names, original[key].split(16), strict=True)}
            )
        q, k, v, mlp = original[f"single_blocks.0.linear1.{end}"].split([16, 16, 16, 64])
        out.update({f"{s}attn.to_q.{end}": q, f"{s}attn.to_k.{end}": k, f"{s}attn.to_v.{end}": v})
        out[f"{s}proj_mlp.{end}"] = mlp
        shift, scale = original[f"final_layer.adaLN_modulation.1.{end}"].chunk(2)
        out[f"norm_out.linear.{end}"] = torch.cat([scale, shift])
        renames = {
            f"{d}attn.to_out.0": "double_blocks.0.img_attn.proj", f"{d}attn.to_add_out": "double_blocks.0.txt_attn.proj",
            f"{d}norm1.linear": "double_blocks.0.img_mod.lin", f"{d}norm1_context.linear": "double_blocks.0.txt_mod.lin",
            f"{d}ff.net.0.proj": "double_blocks.0.img_mlp.0", f"{d}ff.net.2": "double_blocks.0.img_mlp.2",
            f"{d}ff_context.net.0.proj": "double_blocks.0.txt_mlp.0", f"{d}ff_context.net.2": "double_blocks.0.txt_mlp.2",
            f"{s}norm.linear": "single_blocks.0.modulation.lin", f"{s}proj_out": "single_blocks.0.linear2",
            "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
            "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
            "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
            "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
            "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
            "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
            "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        }  # fmt: skip
        out.update({f"{ours}.{end}": original[f"{theirs}.{end}"] for ours, theirs in renames.items()})
    norms = {
        f"{d}attn.norm_q": "double_blocks.0.img_attn.norm.query_norm", f"{d}attn.norm_k": "double_blocks.0.img_attn.norm.key_norm",
        f"{d}attn.norm_added_q": "double_blocks.0.txt_attn.norm.query_norm",
        f"{d}attn.norm_added_k": "double_blocks.0.txt_attn.norm.key_norm",
        f"{s}attn.norm_q": "single_blocks.0.norm.query_norm", f"{s}attn.norm_k": "single_blocks.0.norm.key_norm",
    }  # fmt: skip
    out.update({f"{ours}.weight": original[f"{theirs}.scale"] for ours, theirs in norms.items()})
    return out


@pytest.fixture(scope="module")
def tiny_transformer():
    from faceclip.pipelines.flux.tiny import build_tiny_components

    return build_tiny_components(seed=5)["transformer"]


def released_files(tmp_path, transformer):
    """The tiny transformer as a released-style ``dit.pt`` and its config as ``base/transformer/config.json``."""
    (tmp_path / "base" / "transformer").mkdir(parents=True)
    (tmp_path / "base" / "transformer" / "config.json").write_text(json.dumps(dict(transformer.config)))
    torch.save(transformer.state_dict(), tmp_path / "dit.pt")
    return tmp_path / "dit.pt"


def run(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def test_every_key_and_shape_of_the_original_layout_and_the_values_round_trip(tiny_transformer):
    source = tiny_transformer.state_dict()
    original = to_original_layout(source, dict(tiny_transformer.config))
    assert {key: tuple(value.shape) for key, value in original.items()} == TINY_ORIGINAL_SHAPES
    back = back_to_diffusers(original)
    assert set(back) == set(source)
    assert all(torch.equal(back[key], source[key]) for key in source)


def test_the_flux_dev_config_uses_every_diffusers_key_once_and_has_the_keys_comfyui_detects():
    from faceclip.convert.comfyui_flux import original_key_sources
    from faceclip.convert.flux_transformer import expected_transformer_layout
    from faceclip.pipelines.flux.architectures import architecture_config

    config = architecture_config("flux_transformer")
    sources = original_key_sources(config)
    used = [name for names, _transform in sources.values() for name in names]
    assert len(sources) == 780 and sorted(used) == sorted(expected_transformer_layout(config))
    assert {
        "double_blocks.0.img_attn.norm.key_norm.scale",
        "img_in.weight",
        "guidance_in.in_layer.weight",
    } <= set(sources)
    assert {key.split(".")[1] for key in sources if key.startswith("double_blocks.")} == {
        str(i) for i in range(19)
    }
    assert {key.split(".")[1] for key in sources if key.startswith("single_blocks.")} == {
        str(i) for i in range(38)
    }


def test_cli_writes_dit_pt_as_one_comfyui_file(tiny_transformer, tmp_path, capsys):
    dit = released_files(tmp_path, tiny_transformer)
    out = tmp_path / "facet5_flux.safetensors"
    code, err = run(capsys, "convert", "--released", str(dit), "--comfyui", "--base-model",
                    str(tmp_path / "base"), "--out", str(out))  # fmt: skip
    assert code == 0 and "ComfyUI/models/diffusion_models/" in err and "FLUX.1-dev" in err
    with safe_open(str(out), "pt") as f:
        written = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert {key: tuple(value.shape) for key, value in written.items()} == TINY_ORIGINAL_SHAPES
    source = tiny_transformer.state_dict()
    back = back_to_diffusers(written)
    assert all(torch.equal(back[key], source[key]) for key in source)


def test_cli_reads_a_converted_transformer_folder_with_its_own_config(tiny_transformer, tmp_path, capsys):
    from faceclip.convert.flux_transformer import convert_released_transformer

    dit = released_files(tmp_path, tiny_transformer)
    folder = convert_released_transformer(dit, dict(tiny_transformer.config), tmp_path / "transformer",
                                          max_shard_bytes=4096)  # fmt: skip
    assert len(list(folder.glob("*.safetensors"))) > 1
    from_dit, from_folder = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    run(capsys, "convert", "--released", str(dit), "--comfyui", "--base-model", str(tmp_path / "base"),
        "--out", str(from_dit))  # fmt: skip
    code, err = run(capsys, "convert", "--released", str(folder), "--comfyui", "--out", str(from_folder))
    assert code == 0, err
    assert from_folder.read_bytes() == from_dit.read_bytes()


def test_cli_refuses_a_folder_without_weights_and_the_sdxl_family_for_a_folder(tmp_path, capsys):
    folder = tmp_path / "transformer"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    out = tmp_path / "o.safetensors"
    code, err = run(capsys, "convert", "--released", str(folder), "--comfyui", "--out", str(out))
    assert code == 2 and f"{folder} holds no diffusion_pytorch_model*.safetensors" in err
    code, err = run(capsys, "convert", "--released", str(folder), "--comfyui", "--family", "faceclip-sdxl",
                    "--out", str(out))  # fmt: skip
    assert code == 2 and err.strip().endswith(
        f"--released {folder} is a facet5-flux folder, not faceclip-sdxl."
    )
    assert not out.exists()


def test_streaming_remaps_the_file_and_casts(tiny_transformer, tmp_path):
    dit = released_files(tmp_path, tiny_transformer)
    out = convert_flux_for_comfyui(dit, dict(tiny_transformer.config), tmp_path / "o.safetensors",
                                   torch_dtype=torch.bfloat16, remap_bytes=1)  # fmt: skip
    source = tiny_transformer.state_dict()
    with safe_open(str(out), "pt") as f:
        qkv = f.get_tensor("double_blocks.0.img_attn.qkv.weight")
    assert qkv.dtype == torch.bfloat16
    expected = torch.cat([source[f"transformer_blocks.0.attn.to_{x}.weight"] for x in "qkv"]).to(
        torch.bfloat16
    )
    assert torch.equal(qkv, expected)


def test_missing_keys_are_named(tiny_transformer):
    source = dict(tiny_transformer.state_dict())
    source.pop("transformer_blocks.0.attn.to_k.weight")
    with pytest.raises(CheckpointKeyError, match=r"1 missing: transformer_blocks\.0\.attn\.to_k\.weight"):
        to_original_layout(source, dict(tiny_transformer.config))


def test_cli_refuses_weights_of_another_config_and_writes_nothing(tiny_transformer, tmp_path, capsys):
    dit = released_files(tmp_path, tiny_transformer)
    out = tmp_path / "o.safetensors"
    code, err = run(capsys, "convert", "--released", str(dit), "--comfyui", "--out", str(out))
    assert code == 2 and f"{dit} does not match the FLUX.1-dev transformer architecture" in err
    assert "Traceback" not in err and not out.exists()


def test_cli_refuses_an_out_that_is_not_a_safetensors_file(tiny_transformer, tmp_path, capsys):
    dit = released_files(tmp_path, tiny_transformer)
    code, err = run(
        capsys, "convert", "--released", str(dit), "--comfyui", "--out", str(tmp_path / "flux_dir")
    )
    assert code == 2
    assert err.strip().endswith(
        f"--out {tmp_path / 'flux_dir'}: with --comfyui, name a .safetensors file "
        "(e.g. facet5_flux_transformer.safetensors)."
    )
    assert not (tmp_path / "flux_dir").exists()


def test_cli_refuses_a_damaged_file(tmp_path, capsys):
    bad = tmp_path / "dit.pt"
    bad.write_bytes(b"\x00" * 10)
    out = tmp_path / "o.safetensors"
    code, err = run(capsys, "convert", "--released", str(bad), "--comfyui", "--out", str(out))
    assert code == 2 and f"{bad}" in err and "hf download ByteDance/FaceCLIP model/dit.pt" in err
    assert "Traceback" not in err and not out.exists()


def test_cli_refuses_the_sdxl_family_for_dit_pt(tmp_path, capsys):
    dit = tmp_path / "dit.pt"
    dit.write_bytes(b"\x00" * 10)
    code, err = run(capsys, "convert", "--released", str(dit), "--comfyui", "--family", "faceclip-sdxl",
                    "--out", str(tmp_path / "o.safetensors"))  # fmt: skip
    assert code == 2 and err.strip().endswith(f"--released {dit} is a facet5-flux file, not faceclip-sdxl.")
