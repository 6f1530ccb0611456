"""Loading: our saved layout, the released layout (converted once, then cached), and missing-weights errors."""

from __future__ import annotations

import logging

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from faceclip.convert import released_key_map
from faceclip.hub import WeightsNotFoundError
from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline, build_tiny_components
from faceclip.pipelines.sdxl import loading
from faceclip.pipelines.sdxl.loading import load_released_components
from faceclip.registry import ModelArgumentError, load_pipeline


def generate(pipe: FaceCLIPStableDiffusionXLPipeline) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    face = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return pipe(
        face_image=face,
        prompt="a person reading",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images


def released_encoder_state_dict(encoder) -> dict[str, torch.Tensor]:
    """Our encoder's weights under the released key names (packed q/k/v, ``face_clip_l.*``)."""
    ours = encoder.state_dict()
    return {
        key: torch.cat([ours[name] for name, _ in targets])
        if len(targets) > 1
        else ours[targets[0][0]].clone()
        for key, targets in released_key_map(dict(encoder.config)).items()
    }


@pytest.fixture
def tiny():
    return build_tiny_components(seed=0)


@pytest.fixture
def released(tmp_path, tiny):
    """A folder in the released layout and an SDXL-base-like folder, holding the tiny components."""
    model, sdxl = tmp_path / "FaceCLIP", tmp_path / "sdxl"
    (model / "model").mkdir(parents=True)
    torch.save(
        released_encoder_state_dict(tiny["faceclip_encoder"]), model / "model" / "face_clip_encoder.pt"
    )
    torch.save(tiny["unet"].state_dict(), model / "model" / "unet.pt")
    tiny["unet"].save_config(sdxl / "unet")
    tiny["vae"].save_pretrained(sdxl / "vae")
    tiny["scheduler"].save_pretrained(sdxl / "scheduler")
    return model, sdxl


def test_save_pretrained_round_trip(tmp_path, tiny):
    pipe = FaceCLIPStableDiffusionXLPipeline(**tiny)
    pipe.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "faceclip_encoder",
        "faceclip_pipeline.py",  # lets diffusers.DiffusionPipeline.from_pretrained find our class
        "model_index.json",
        "scheduler",
        "unet",
        "vae",
    ]
    assert not list((tmp_path / "saved").rglob("*.bin"))  # safetensors only
    loaded = load_pipeline(tmp_path / "saved")
    assert type(loaded.scheduler) is type(pipe.scheduler)
    np.testing.assert_allclose(generate(loaded), generate(pipe), atol=1e-5)
    bf16 = FaceCLIPStableDiffusionXLPipeline.from_pretrained(tmp_path / "saved", torch_dtype=torch.bfloat16)
    assert bf16.unet.dtype == bf16.faceclip_encoder.dtype == bf16.vae.dtype == torch.bfloat16


def test_released_layout_is_converted_once_then_loaded_from_the_cache(
    tmp_path, tiny, released, monkeypatch, caplog
):
    model, sdxl = released
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="faceclip.pipelines.sdxl.loading"):
        components = load_released_components(model, sdxl, cache_dir=cache, encoder_config="faceclip-tiny")
    assert "CC-BY-NC-4.0" in caplog.text
    expected = generate(FaceCLIPStableDiffusionXLPipeline(**tiny))
    np.testing.assert_allclose(generate(FaceCLIPStableDiffusionXLPipeline(**components)), expected, atol=1e-5)
    converted = loading.converted_dir(model, cache)
    assert (converted / "conversion.json").is_file()
    assert list((converted / "unet").glob("*.safetensors")) and list(
        (converted / "faceclip_encoder").glob("*.safetensors")
    )
    assert not list(cache.glob("converted/*.tmp-*"))

    # Next start: the converted files are used; the pickles are not even needed any more.
    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(loading, "_convert", no_conversion)
    for pickle in (model / "model").iterdir():
        pickle.unlink()
    again = load_released_components(model, sdxl, cache_dir=cache, encoder_config="faceclip-tiny")
    np.testing.assert_allclose(generate(FaceCLIPStableDiffusionXLPipeline(**again)), expected, atol=1e-5)


def test_changed_released_file_is_converted_again(tmp_path, tiny, released):
    model, sdxl = released
    cache = tmp_path / "cache"
    first = load_released_components(model, sdxl, cache_dir=cache, encoder_config="faceclip-tiny")
    changed = {k: v + 0.01 for k, v in tiny["unet"].state_dict().items()}
    torch.save(changed, model / "model" / "unet.pt")
    second = load_released_components(model, sdxl, cache_dir=cache, encoder_config="faceclip-tiny")
    torch.testing.assert_close(second["unet"].conv_in.weight, first["unet"].conv_in.weight + 0.01)


def test_missing_files_are_listed_in_one_error(tmp_path):
    (tmp_path / "FaceCLIP").mkdir()
    (tmp_path / "sdxl").mkdir()
    with pytest.raises(WeightsNotFoundError) as error:
        load_pipeline(tmp_path / "FaceCLIP", base_model=tmp_path / "sdxl", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "6 required file(s) not found" in message
    for name in ("model/face_clip_encoder.pt", "model/unet.pt", "unet/config.json", "vae/config.json"):
        assert name in message
    assert (
        "vae/diffusion_pytorch_model.safetensors or vae/diffusion_pytorch_model.fp16.safetensors" in message
    )
    assert f"put model/face_clip_encoder.pt model/unet.pt inside {tmp_path / 'FaceCLIP'}" in message
    assert "--model DIR" in message


def test_offline_and_not_cached_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as error:
        load_pipeline("ByteDance/FaceCLIP", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "hf download ByteDance/FaceCLIP model/face_clip_encoder.pt model/unet.pt" in message
    assert "hf download stabilityai/stable-diffusion-xl-base-1.0 unet/config.json" in message
    assert "HF_HUB_OFFLINE is set" in message


def test_our_layout_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match=r"model_index\.json"):
        load_pipeline("someone/faceclip-sdxl-finetune")


def test_tiny_random_in_bf16():
    pipe = load_pipeline("tiny-random", torch_dtype=torch.bfloat16)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.faceclip_encoder.dtype} == {torch.bfloat16}


def test_a_file_passed_as_the_model_is_a_clear_error(tmp_path):
    index = tmp_path / "model_index.json"
    index.write_text("{}")
    with pytest.raises(ModelArgumentError, match="this is a file; pass the folder that holds the model"):
        load_pipeline(index)
