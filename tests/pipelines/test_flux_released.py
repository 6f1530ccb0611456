"""FaceT5-FLUX from the released layout (tiny files made here): registry, conversion cache, missing files, dit.pt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.models.facet5_reference import to_released_layout

from faceclip.convert.faceclip_encoder import CheckpointKeyError
from faceclip.convert.flux_transformer import convert_released_transformer
from faceclip.hub import WeightsNotFoundError
from faceclip.pipelines.flux import FaceT5FluxPipeline
from faceclip.pipelines.flux.tiny import build_tiny_components
from faceclip.registry import load_pipeline, resolve_model


@pytest.fixture
def tiny(tmp_path) -> dict[str, object]:
    return build_tiny_components(seed=3)


def write_released(folder: Path, components: dict) -> Path:
    """A released-layout folder: model/face_t5_encoder.pt, model/dit.pt, model/tokenizer/."""
    (folder / "model").mkdir(parents=True)
    torch.save(to_released_layout(components["faceclip_encoder"]), folder / "model" / "face_t5_encoder.pt")
    torch.save(components["transformer"].state_dict(), folder / "model" / "dit.pt")
    components["tokenizer_2"].save_pretrained(folder / "model" / "tokenizer")
    return folder


def write_base(folder: Path, components: dict) -> Path:
    """A FLUX.1-dev-shaped base folder: transformer config, VAE, scheduler."""
    (folder / "transformer").mkdir(parents=True)
    components["transformer"].save_config(folder / "transformer")
    components["vae"].save_pretrained(folder / "vae")
    components["scheduler"].save_pretrained(folder / "scheduler")
    return folder


def images(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    face = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(1))
    return pipe(face_image=face, prompt="a person", num_inference_steps=2, height=32, width=32,
                generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip


def test_released_files_load_through_the_registry_and_match_the_components(
    tiny, tmp_path, caplog, monkeypatch
):
    import faceclip.pipelines.flux.loading as loading

    monkeypatch.setattr(loading, "RELEASED_ENCODER_CONFIG", "facet5-tiny")  # the tiny encoder's head counts
    model = write_released(tmp_path / "released", tiny)
    base = write_base(tmp_path / "base", tiny)
    assert resolve_model(model).family.name == "facet5-flux"
    with caplog.at_level("WARNING"):
        pipe = load_pipeline(model, base_model=base, cache_dir=tmp_path / "cache")
    assert "FLUX.1 [dev] Non-Commercial License" in caplog.text and "CC-BY-NC-4.0" in caplog.text
    assert isinstance(pipe, FaceT5FluxPipeline)
    np.testing.assert_allclose(images(pipe), images(FaceT5FluxPipeline(**tiny)), atol=1e-6)
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert [p.name.count("facet5-flux") for p in converted] == [1]
    # Second start: the conversion is reused, the pickles are not needed.
    (model / "model" / "dit.pt").unlink()
    (model / "model" / "face_t5_encoder.pt").unlink()
    again = load_pipeline(model, family="facet5-flux", base_model=base, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(images(again), images(pipe))


def test_missing_files_are_listed_at_once_with_what_to_do(tmp_path):
    model = tmp_path / "released"
    (model / "model").mkdir(parents=True)
    (model / "model" / "face_t5_encoder.pt").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as caught:
        load_pipeline(model, base_model=tmp_path / "no-base", cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "FaceT5-FLUX cannot be loaded: 6 required file(s) not found" in message
    for name in (
        "model/dit.pt",
        "model/tokenizer/tokenizer.json",
        "transformer/config.json",
        "vae/config.json",
    ):
        assert name in message
    assert "--base-model DIR (a copy of black-forest-labs/FLUX.1-dev)" in message


def test_hub_repo_holds_both_families_and_family_picks_one():
    assert resolve_model("ByteDance/FaceCLIP").family.name == "faceclip-sdxl"
    assert resolve_model("ByteDance/FaceCLIP", family="facet5-flux").family.name == "facet5-flux"


def test_a_folder_with_both_families_needs_family(tiny, tmp_path):
    model = write_released(tmp_path / "both", tiny)
    (model / "model" / "face_clip_encoder.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="choose one with --family"):
        resolve_model(model)
    assert resolve_model(model, family="facet5-flux").family.name == "facet5-flux"


def test_dit_conversion_checks_every_key_and_shape(tiny, tmp_path):
    config = dict(tiny["transformer"].config)
    state = tiny["transformer"].state_dict()
    torch.save({f"model.{k}": v for k, v in state.items()}, tmp_path / "prefixed.pt")
    out = convert_released_transformer(
        tmp_path / "prefixed.pt", config, tmp_path / "out", max_shard_bytes=20_000
    )
    index = json.loads((out / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    from diffusers import FluxTransformer2DModel

    loaded = FluxTransformer2DModel.from_pretrained(out)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    broken = dict(state)
    broken.pop("proj_out.weight")
    broken["extra.weight"] = torch.zeros(1)
    broken["x_embedder.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointKeyError) as caught:
        convert_released_transformer(tmp_path / "broken.pt", config, tmp_path / "never")
    assert "1 missing: proj_out.weight" in str(caught.value) and "1 unexpected: extra.weight" in str(
        caught.value
    )
    assert "x_embedder.weight: (3, 3) in the file" in str(caught.value)
    assert not (tmp_path / "never").exists()


def test_dit_conversion_refuses_what_is_not_a_state_dict(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a tensor checkpoint"):
        convert_released_transformer(tmp_path / "text.pt", {}, tmp_path / "out")
