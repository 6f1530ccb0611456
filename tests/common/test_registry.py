"""The registry: every model argument resolves to one typed source, and the family's defaults live in one place."""

from __future__ import annotations

import json

import pytest

from faceclip.hub import WeightsNotFoundError
from faceclip.model_family import SourceKind
from faceclip.pipelines.sdxl.family import DEFAULTS, RELEASED_ENCODER_FILE
from faceclip.pipelines.sdxl.registration import FACECLIP_SDXL
from faceclip.registry import ModelArgumentError, get_family, list_models, resolve_model


def test_tiny_name_resolves_to_tiny_components():
    source = resolve_model("tiny-random")
    assert (source.family, source.kind) == (FACECLIP_SDXL, SourceKind.TINY)


def test_released_repo_and_other_hub_ids():
    assert resolve_model("ByteDance/FaceCLIP").kind is SourceKind.RELEASED
    assert resolve_model("bytedance/faceclip").kind is SourceKind.RELEASED
    other = resolve_model("someone/faceclip-finetune", revision="v1")
    assert (other.kind, other.location, other.revision) == (
        SourceKind.PRETRAINED,
        "someone/faceclip-finetune",
        "v1",
    )


def test_folder_with_pipeline_index_is_our_layout(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "FaceCLIPStableDiffusionXLPipeline"})
    )
    assert resolve_model(tmp_path).kind is SourceKind.PRETRAINED


def test_folder_with_released_files_is_the_released_layout(tmp_path):
    (tmp_path / RELEASED_ENCODER_FILE).parent.mkdir(parents=True)
    (tmp_path / RELEASED_ENCODER_FILE).write_bytes(b"")
    assert resolve_model(tmp_path).kind is SourceKind.RELEASED


def test_foreign_pipeline_index_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ModelArgumentError, match="none of ours"):
        resolve_model(tmp_path)


def test_unreadable_pipeline_index_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelArgumentError, match="not a readable pipeline index"):
        resolve_model(tmp_path)


def test_missing_local_path_and_file_arguments(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such folder"):
        resolve_model(tmp_path / "missing")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ModelArgumentError, match="this is a file"):
        resolve_model(tmp_path / "weights.pt")


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ModelArgumentError, match="faceclip-sdxl"):
        get_family("nope")
    assert get_family("faceclip-sdxl") is FACECLIP_SDXL
    assert "tiny-random" in list_models()


def test_default_size_follows_the_denoiser_native_size():
    assert DEFAULTS.size_for(1024) == (1152, 864)
    height, width = DEFAULTS.size_for(64)
    assert height % 8 == 0 and width % 8 == 0 and height > width


def test_tiny_pipeline_defaults_come_from_its_unet_config():
    from faceclip.registry import load_pipeline

    pipe = load_pipeline("tiny-random")
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert pipe.default_size == DEFAULTS.size_for(native)
