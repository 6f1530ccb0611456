"""The pipeline as diffusers treats pipelines: saving and loading, components, from_pipe, LoRA files, mixins."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline, build_tiny_components
from faceclip.pipelines.sdxl import pipeline_faceclip_sdxl


def generate(pipe, **overrides) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    face = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    settings = {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"} | overrides
    return pipe(
        face_image=face, prompt="a person", generator=torch.Generator().manual_seed(0), **settings
    ).images


@pytest.fixture
def saved(tmp_path, pipe) -> Path:
    pipe.save_pretrained(tmp_path / "saved")
    return tmp_path / "saved"


def weight_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in {".bin", ".safetensors"}
    )


def test_fp16_variant_round_trip_with_diffusers_loading_arguments(tmp_path, pipe):
    pipe.save_pretrained(tmp_path / "fp16", variant="fp16")
    assert weight_files(tmp_path / "fp16") == [
        f"{name}/diffusion_pytorch_model.fp16.safetensors" for name in ("faceclip_encoder", "unet", "vae")
    ]
    loaded = FaceCLIPStableDiffusionXLPipeline.from_pretrained(
        tmp_path / "fp16",
        variant="fp16",
        use_safetensors=True,
        local_files_only=True,
        low_cpu_mem_usage=True,
        device_map="cpu",
        dtype=torch.float16,
    )
    assert loaded.unet.dtype == loaded.vae.dtype == torch.float16
    for name in ("unet", "vae", "faceclip_encoder"):
        original, restored = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == restored.keys()
        for key, value in original.items():
            torch.testing.assert_close(restored[key], value.to(restored[key].dtype), rtol=0, atol=0)
    fuser = loaded.faceclip_encoder.branch_l.fuser  # kept in fp32, as the released model runs it
    assert {p.dtype for p in fuser.parameters()} == {torch.float32}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_dtype_casts_every_component(saved, dtype):
    loaded = FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved, torch_dtype=dtype)
    assert loaded.unet.dtype == loaded.vae.dtype == loaded.faceclip_encoder.dtype == dtype


def test_safetensors_round_trip_generates_the_same_images(saved, pipe):
    assert weight_files(saved) and all(name.endswith(".safetensors") for name in weight_files(saved))
    loaded = FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved, use_safetensors=True)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    np.testing.assert_allclose(generate(loaded), generate(pipe), atol=1e-6)


def test_variant_that_was_not_saved_is_a_clear_error(saved):
    with pytest.raises(ValueError, match="variant=fp16"):
        FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved, variant="fp16")


def test_diffusers_pipeline_loads_a_saved_folder(saved, pipe, monkeypatch, tmp_path):
    import diffusers.utils.dynamic_modules_utils as dynamic_modules

    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["faceclip_pipeline", "FaceCLIPStableDiffusionXLPipeline"]
    assert index["faceclip_encoder"] == ["faceclip_encoder", "FaceCLIPEncoder"]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(saved)  # diffusers runs code from a folder only when told to
    loaded = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
    assert type(loaded) is FaceCLIPStableDiffusionXLPipeline
    assert type(loaded.faceclip_encoder) is type(pipe.faceclip_encoder)
    np.testing.assert_allclose(generate(loaded), generate(pipe), atol=1e-6)


def test_our_loader_never_runs_the_folders_code(saved, monkeypatch):
    import diffusers.pipelines.pipeline_loading_utils as loading_utils

    def refuse(*args, **kwargs):
        raise AssertionError("code from the folder was imported")

    monkeypatch.setattr(loading_utils, "get_class_from_dynamic_module", refuse)
    assert type(FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved)) is FaceCLIPStableDiffusionXLPipeline


def test_folders_saved_before_the_import_files_still_load(saved, pipe):
    index = json.loads((saved / "model_index.json").read_text())
    index |= {
        "_class_name": "FaceCLIPStableDiffusionXLPipeline",
        "faceclip_encoder": ["faceclip.models.encoder", "FaceCLIPEncoder"],
    }
    (saved / "model_index.json").write_text(json.dumps(index))
    (saved / "faceclip_pipeline.py").unlink()
    (saved / "faceclip_encoder" / "faceclip_encoder.py").unlink()
    # Loaded weights can sit at other memory alignments, which changes CPU kernels' rounding (~1e-6).
    np.testing.assert_allclose(
        generate(FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved)), generate(pipe), atol=1e-5
    )


def test_components_make_a_new_pipeline(pipe):
    assert set(pipe.components) == {"vae", "unet", "scheduler", "faceclip_encoder"}
    again = FaceCLIPStableDiffusionXLPipeline(**pipe.components)
    assert all(again.components[name] is component for name, component in pipe.components.items())
    np.testing.assert_allclose(generate(again), generate(pipe), atol=0)


def test_from_pipe_takes_a_stock_sdxl_pipeline():
    tiny = build_tiny_components(seed=0)
    stock = StableDiffusionXLPipeline(
        vae=tiny["vae"],
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=tiny["unet"],
        scheduler=tiny["scheduler"],
        add_watermarker=False,
    )
    pipe = FaceCLIPStableDiffusionXLPipeline.from_pipe(stock, faceclip_encoder=tiny["faceclip_encoder"])
    assert type(pipe) is FaceCLIPStableDiffusionXLPipeline
    assert pipe.unet is stock.unet and pipe.vae is stock.vae
    assert pipe.faceclip_encoder is tiny["faceclip_encoder"]
    np.testing.assert_allclose(generate(pipe), generate(FaceCLIPStableDiffusionXLPipeline(**tiny)), atol=0)


def target_layer(unet) -> torch.nn.Module:
    """The UNet projection the test LoRA adapts (a LoRA wrapper around it once loaded)."""
    return unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q


def kohya_lora(
    unet, rank: int = 2, alpha: float = 1.0
) -> tuple[dict[str, torch.Tensor], str, torch.nn.Linear]:
    """A kohya / A1111-style SDXL LoRA for one UNet projection, plus text-encoder weights; (state dict, name, layer)."""
    layer = target_layer(unet)
    g = torch.Generator().manual_seed(3)
    unet_key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    text_key = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    state = {
        f"{unet_key}.lora_down.weight": torch.randn(rank, layer.in_features, generator=g),
        f"{unet_key}.lora_up.weight": torch.randn(layer.out_features, rank, generator=g),
        f"{unet_key}.alpha": torch.tensor(alpha),
        f"{text_key}.lora_down.weight": torch.randn(rank, 32, generator=g),
        f"{text_key}.lora_up.weight": torch.randn(32, rank, generator=g),
        f"{text_key}.alpha": torch.tensor(alpha),
    }
    return state, unet_key, layer


def test_kohya_lora_loads_into_the_unet_and_skips_text_encoder_weights(pipe, tmp_path, caplog):
    from safetensors.torch import save_file

    state, unet_key, layer = kohya_lora(pipe.unet, rank=2, alpha=1.0)
    save_file(state, tmp_path / "kohya.safetensors")
    x = torch.randn(1, 5, layer.in_features, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        base = layer(x)
    with caplog.at_level(logging.WARNING, logger=pipeline_faceclip_sdxl.__name__):
        name = pipe.load_lora_weights(tmp_path / "kohya.safetensors", adapter_name="style")
    assert name == "style" and "skipped 2 text-encoder LoRA weights" in caplog.text
    down, up = state[f"{unet_key}.lora_down.weight"], state[f"{unet_key}.lora_up.weight"]
    expected = base + x @ down.T @ up.T * (1.0 / 2)  # kohya's scale: alpha / rank
    with torch.no_grad():
        torch.testing.assert_close(target_layer(pipe.unet)(x), expected, rtol=1e-5, atol=1e-5)
    pipe.set_adapters("style", adapter_weights=0.0)
    with torch.no_grad():
        torch.testing.assert_close(target_layer(pipe.unet)(x), base, rtol=1e-5, atol=1e-5)


def test_kohya_lora_state_dict_and_cross_attention_scale(pipe):
    reference = generate(pipe, guidance_scale=1.0)
    state, _, _ = kohya_lora(pipe.unet, rank=2, alpha=2.0)
    assert pipe.load_lora_weights(state) == "default_0"
    with_lora = generate(pipe, guidance_scale=1.0)
    assert np.abs(with_lora - reference).max() > 1e-4
    scaled_off = generate(pipe, guidance_scale=1.0, cross_attention_kwargs={"scale": 0.0})
    np.testing.assert_allclose(scaled_off, reference, atol=1e-5)


def test_freeu_and_fused_qkv_from_stable_diffusion_mixin(pipe):
    reference = generate(pipe)
    pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.4, b2=1.6)
    assert np.abs(generate(pipe) - reference).max() > 1e-4
    pipe.disable_freeu()
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-6)
    pipe.fuse_qkv_projections()
    attention = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert getattr(attention, "fused_projections", False)
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-4)
    pipe.unfuse_qkv_projections()
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-6)


def test_the_pipeline_module_does_not_import_the_loaders():
    tree = ast.parse(Path(pipeline_faceclip_sdxl.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "faceclip.pipelines.sdxl.loading" not in imported
    assert not any(
        name.startswith(("faceclip.registry", "faceclip.pipelines.sdxl.registration")) for name in imported
    )


def test_fuse_unfuse_and_unload_a_lora(pipe):
    reference = generate(pipe)
    state, _, _ = kohya_lora(pipe.unet, rank=2, alpha=2.0)
    pipe.load_lora_weights(state)
    with_lora = generate(pipe)
    pipe.fuse_lora()
    np.testing.assert_allclose(generate(pipe), with_lora, atol=1e-5)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    assert not getattr(pipe.unet, "peft_config", None)
    np.testing.assert_allclose(generate(pipe), reference, atol=1e-5)


def test_missing_weights_file_says_what_the_folder_needs(saved):
    from faceclip.hub import WeightsNotFoundError

    (saved / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(
        WeightsNotFoundError, match=r"(?s)saved/unet.*vae/, unet/, scheduler/ and faceclip_encoder/"
    ):
        FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved)
    with pytest.raises(WeightsNotFoundError, match=r"no model_index\.json"):
        FaceCLIPStableDiffusionXLPipeline.from_pretrained(saved / "unet")
