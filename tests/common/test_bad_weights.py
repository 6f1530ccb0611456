"""Corrupt or foreign weight files: one message naming the file and what to do, never a traceback.

Covers ``faceclip convert``, ``faceclip generate --model DIR`` / ``load_pipeline(DIR)`` (the released layout and
our saved one), ``faceclip train --resume`` after a checkpoint file was damaged, and weights holding NaN or
infinity (converted, with one warning). Every fixture is made here in ``tmp_path`` from tiny tensors.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from faceclip.cli import main
from faceclip.convert import released_key_map
from faceclip.hub import WeightsFileError, read_state_dict_file
from faceclip.models import FaceCLIPEncoder, create_encoder
from faceclip.pipelines import build_tiny_components
from faceclip.registry import load_pipeline

FACE = Path(__file__).parents[1] / "data" / "pipelines" / "astronaut_192.jpg"
ENCODER_ADVICE = "hf download ByteDance/FaceCLIP model/face_clip_encoder.pt"
UNET_ADVICE = "hf download ByteDance/FaceCLIP model/unet.pt"


class NotATensor:
    """An arbitrary object: a pickle holding it is refused by ``torch.load(weights_only=True)``."""


def run(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI; returns the exit code and stderr, which never holds a traceback."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def released_encoder_weights() -> dict[str, torch.Tensor]:
    """The tiny encoder's weights under the released key names (packed q/k/v, ``face_clip_l.*``)."""
    encoder = create_encoder("faceclip-tiny", seed=0)
    ours = encoder.state_dict()
    return {
        key: torch.cat([ours[name] for name, _ in targets])
        if len(targets) > 1
        else ours[targets[0][0]].clone()
        for key, targets in released_key_map(dict(encoder.config)).items()
    }


def write_bad_file(path: Path, kind: str) -> Path:
    """Write a bad weights file of ``kind`` at ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "unsafe pickle":
        torch.save({"weight": torch.zeros(2), "extra": NotATensor()}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps(NotATensor()))
    elif kind == "truncated":
        torch.save({"weight": torch.zeros(64)}, path)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "garbage safetensors":
        path.write_bytes(b"\x07\x00garbage" * 8)
    elif kind == "truncated safetensors":
        save_file({"weight": torch.zeros(64)}, path)
        path.write_bytes(path.read_bytes()[:-40])
    else:
        raise AssertionError(kind)
    return path


PT_CASES = {
    "empty": "the file is empty (0 bytes)",
    "text": "not a readable PyTorch checkpoint",
    "unsafe pickle": "the pickle holds Python objects besides tensors",
    "plain pickle": "the pickle holds Python objects besides tensors",
    "truncated": "not a readable PyTorch checkpoint",
}
SAFETENSORS_CASES = {
    "empty": "the file is empty (0 bytes)",
    "garbage safetensors": "not a complete safetensors file",
    "truncated safetensors": "not a complete safetensors file (incomplete metadata",
}


# --------------------------------------------------------------------------------------------- faceclip convert


@pytest.mark.parametrize(
    ("name", "kind"),
    [("face_clip_encoder.pt", kind) for kind in PT_CASES]
    + [("face_clip_encoder.safetensors", kind) for kind in SAFETENSORS_CASES],
)
def test_convert_names_the_bad_file_and_writes_nothing(tmp_path, capsys, name, kind):
    bad = write_bad_file(tmp_path / name, kind)
    out = tmp_path / "converted"
    code, err = run(capsys, "convert", "--released", str(bad), "--out", str(out), "--config", "faceclip-tiny")
    expected = {**PT_CASES, **SAFETENSORS_CASES}[kind]
    assert code == 2
    assert f"faceclip convert: error: {bad}: {expected}" in err
    assert ENCODER_ADVICE in err
    assert err.count("error:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no staging folder


def test_convert_names_the_file_inside_a_released_folder(tmp_path, capsys):
    bad = write_bad_file(tmp_path / "FaceCLIP" / "model" / "face_clip_encoder.pt", "unsafe pickle")
    code, err = run(capsys, "convert", "--released", str(tmp_path / "FaceCLIP"), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{bad}: the pickle holds Python objects besides tensors" in err
    assert not (tmp_path / "o").exists()


def test_the_reader_raises_a_value_error_naming_the_file(tmp_path):
    bad = write_bad_file(tmp_path / "unet.pt", "text")
    with pytest.raises(WeightsFileError, match=r"unet\.pt: not a readable PyTorch checkpoint; .* Do this\."):
        read_state_dict_file(bad, advice="Do this.")
    assert issubclass(WeightsFileError, ValueError)
    with pytest.raises(ValueError, match=r"face_clip_encoder.pt: the file is empty.*" + ENCODER_ADVICE):
        FaceCLIPEncoder.from_official(write_bad_file(tmp_path / "face_clip_encoder.pt", "empty"))
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsFileError, match=r"list\.pt: expected a state dict .*found list"):
        read_state_dict_file(tmp_path / "list.pt", advice="")


# ------------------------------------------------------------------------------------------ NaN / inf weights


def test_nonfinite_weights_convert_with_one_warning(tmp_path, capsys, caplog):
    weights = released_encoder_weights()
    floating = sum(tensor.is_floating_point() for tensor in weights.values())
    nan = {
        key: torch.full_like(t, float("nan")) if t.is_floating_point() else t for key, t in weights.items()
    }
    torch.save(nan, tmp_path / "nan.pt")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        code, _ = run(capsys, "convert", "--released", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "o"),
                        "--config", "faceclip-tiny")  # fmt: skip
    assert code == 0 and (tmp_path / "o" / "config.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{tmp_path / 'nan.pt'}: {floating} of {floating} floating-point tensors")
    caplog.clear()
    weights["face_clip_l.logit_scale"] = torch.tensor(float("inf"))
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "one_inf.safetensors")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        FaceCLIPEncoder.from_official(tmp_path / "one_inf.safetensors", config="faceclip-tiny")
    assert f"one_inf.safetensors: 1 of {floating} floating-point tensors holds NaN or infinite" in caplog.text
    assert "face_clip_l.logit_scale" in caplog.text


def test_finite_weights_give_no_warning(tmp_path, caplog):
    torch.save(released_encoder_weights(), tmp_path / "fine.pt")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        FaceCLIPEncoder.from_official(tmp_path / "fine.pt", config="faceclip-tiny")
    assert "NaN" not in caplog.text


def test_the_unet_converter_counts_nonfinite_tensors(tmp_path, caplog):
    from faceclip.convert.sdxl_unet import convert_released_unet

    unet = build_tiny_components()["unet"]
    weights = unet.state_dict()
    names = list(weights)[:3]
    for name in names:
        weights[name] = torch.full_like(weights[name], float("nan"))
    torch.save(weights, tmp_path / "unet.pt")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        convert_released_unet(tmp_path / "unet.pt", unet.config, tmp_path / "unet")
    assert f"unet.pt: 3 of {len(weights)} floating-point tensors hold NaN or infinite values" in caplog.text
    assert names[0] in caplog.text
    assert (tmp_path / "unet" / "config.json").is_file()


def test_the_check_reads_large_tensors_in_chunks(monkeypatch):
    from faceclip.convert import finite

    monkeypatch.setattr(finite, "CHUNK_ELEMENTS", 7)
    tensor = torch.zeros(10, 10)
    assert finite.is_all_finite(tensor)
    tensor[9, 9] = float("-inf")  # in the last chunk
    assert not finite.is_all_finite(tensor)
    assert finite.is_all_finite(torch.tensor([1, 2]))  # integers are always finite
    assert finite.is_all_finite(torch.empty(3, device="meta"))


# ------------------------------------------------------------- faceclip generate --model DIR / load_pipeline(DIR)


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A folder in the released layout, an SDXL-base-like folder (tiny components) and an empty cache."""
    tiny = build_tiny_components(seed=0)
    model, sdxl = tmp_path / "FaceCLIP", tmp_path / "sdxl"
    (model / "model").mkdir(parents=True)
    torch.save(released_encoder_weights(), model / "model" / "face_clip_encoder.pt")
    torch.save(tiny["unet"].state_dict(), model / "model" / "unet.pt")
    tiny["unet"].save_config(sdxl / "unet")
    tiny["vae"].save_pretrained(sdxl / "vae")
    tiny["scheduler"].save_pretrained(sdxl / "scheduler")
    monkeypatch.setenv("FACECLIP_CACHE", str(tmp_path / "cache"))
    return model, sdxl


def generate(tmp_path, model: Path, *extra: str) -> list[str]:
    return ["generate", "--face", str(FACE), "--prompt", "a", "--model", str(model), "--out",
            str(tmp_path / "out"), "--steps", "1", "--size", "64x64", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("filename", "kind", "advice"),
    [
        ("face_clip_encoder.pt", "text", ENCODER_ADVICE),
        ("face_clip_encoder.pt", "unsafe pickle", ENCODER_ADVICE),
        ("unet.pt", "truncated", UNET_ADVICE),
        ("unet.pt", "unsafe pickle", UNET_ADVICE),
    ],
)
def test_generate_names_the_bad_released_file(tmp_path, capsys, released, filename, kind, advice):
    model, sdxl = released
    bad = write_bad_file(model / "model" / filename, kind)
    code, err = run(capsys, *generate(tmp_path, model, "--base-model", str(sdxl)))
    assert code == 2
    assert f"faceclip generate: error: {bad}: {PT_CASES[kind]}" in err and advice in err
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "cache").rglob("*.safetensors")) == []  # no half conversion in the cache


def test_load_pipeline_raises_a_value_error_naming_the_bad_released_file(tmp_path, released):
    model, sdxl = released
    bad = write_bad_file(model / "model" / "unet.pt", "plain pickle")
    with pytest.raises(
        ValueError, match=re.escape(f"{bad}: the pickle holds Python objects besides tensors")
    ):
        load_pipeline(model, base_model=sdxl)


def test_a_bad_sdxl_config_is_named_before_converting(tmp_path, released):
    model, sdxl = released
    (sdxl / "scheduler" / "scheduler_config.json").write_text("[]")
    with pytest.raises(
        ValueError, match=r"scheduler_config\.json: not a readable JSON config; download it again"
    ):
        load_pipeline(model, base_model=sdxl)
    assert not (tmp_path / "cache").exists()  # refused before converting


def test_a_damaged_conversion_record_converts_again(tmp_path, released, caplog):
    model, sdxl = released
    from faceclip.pipelines.released_files import CONVERSION_RECORD, converted_dir
    from faceclip.pipelines.sdxl.loading import load_released_components

    load_released_components(model, sdxl, encoder_config="faceclip-tiny")
    record = converted_dir(model, tmp_path / "cache") / CONVERSION_RECORD
    record.write_bytes(b"\xff not json")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        load_released_components(model, sdxl, encoder_config="faceclip-tiny")
    assert f"{record} is damaged; converting again" in caplog.text
    assert json.loads(record.read_text())["source"] == str(model)


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    """A tiny pipeline saved in our layout (copied, then damaged, by each test)."""
    from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline

    folder = tmp_path_factory.mktemp("saved") / "pipeline"
    FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=0)).save_pretrained(folder)
    return folder


def _drop_unet_entry(folder: Path) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    del index["unet"]
    (folder / "model_index.json").write_text(json.dumps(index))


INDEX_DAMAGE = {
    "not JSON": (lambda f: (f / "model_index.json").write_text("{not json"), "not a readable pipeline index"),
    "not UTF-8": (
        lambda f: (f / "model_index.json").write_bytes(b"\xff\xfe{}"),
        "not a readable pipeline index",
    ),
    "a JSON list": (lambda f: (f / "model_index.json").write_text("[1, 2]"), "holds a JSON list"),
    "no unet entry": (_drop_unet_entry, "missing entries: unet"),
    "no unet folder": (lambda f: shutil.rmtree(f / "unet"), "whose folders are missing (unet/)"),
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_a_damaged_saved_pipeline_is_one_message(tmp_path, capsys, saved_pipeline, damage):
    folder = tmp_path / "pipeline"
    shutil.copytree(saved_pipeline, folder)
    spoil, message = INDEX_DAMAGE[damage]
    spoil(folder)
    code, err = run(capsys, *generate(tmp_path, folder))
    assert code == 2 and err.count("error:") == 1
    assert message in err and "save_pretrained" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(
        ValueError if damage != "no unet folder" else FileNotFoundError, match=re.escape(message)
    ):
        load_pipeline(folder)


@pytest.mark.parametrize("damage", ["not JSON", "not UTF-8", "a JSON list"])
def test_the_pipeline_class_checks_the_index_itself(tmp_path, saved_pipeline, damage):
    from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline

    folder = tmp_path / "pipeline"
    shutil.copytree(saved_pipeline, folder)
    INDEX_DAMAGE[damage][0](folder)
    expected = {
        "not JSON": "not valid JSON",
        "not UTF-8": "not UTF-8 text",
        "a JSON list": "holds a JSON list",
    }
    with pytest.raises(ValueError, match=f"model_index.json: {expected[damage]}.*save_pretrained"):
        FaceCLIPStableDiffusionXLPipeline.from_pretrained(folder)


# ----------------------------------------------------------------------------------- faceclip train --resume


def _save_checkpoint(out: Path, step: int) -> Path:
    from faceclip.training.checkpoint import TrainingState, capture_rng, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return save_checkpoint(out, model=dict(model.named_parameters()), optimizer=optimizer.state_dict(),
                           state=TrainingState(step=step), rng=[capture_rng()], config_yaml="")  # fmt: skip


def _truncate(file: Path) -> None:
    """Cut the last 8 bytes off ``file``, as an interrupted copy or a full disk would."""
    file.write_bytes(file.read_bytes()[:-8])


CHECKPOINT_DAMAGE = {
    "model.safetensors cut short": (
        "model.safetensors", _truncate, "not a complete safetensors file (incomplete metadata"),
    "optimizer.safetensors cut short": (
        "optimizer.safetensors", _truncate, "not a complete safetensors file (incomplete metadata"),
    "optimizer.safetensors empty": ("optimizer.safetensors", lambda f: f.write_bytes(b""), "the file is empty"),
    "training_state.json not JSON": (
        "training_state.json", lambda f: f.write_text('{"step": 4,'), "not valid JSON"),
    "training_state.json not UTF-8": (
        "training_state.json", lambda f: f.write_bytes(b'{"step": "\xff"}'), "not UTF-8 text"),
    "training_state.json a list": ("training_state.json", lambda f: f.write_text("[4]"), "holds a JSON list"),
    "training_state.json lacks fields": (
        "training_state.json", lambda f: f.write_text('{"step": "4"}'),
        "missing fields: samples_seen, lr_scheduler; fields of the wrong type: step"),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_names_the_file_and_the_earlier_one(tmp_path, damage):
    from faceclip.training.checkpoint import CheckpointDamagedError, load_checkpoint

    earlier = _save_checkpoint(tmp_path, 2)
    latest = _save_checkpoint(tmp_path, 4)
    name, spoil, problem = CHECKPOINT_DAMAGE[damage]
    spoil(latest / name)
    with pytest.raises(CheckpointDamagedError) as caught:
        load_checkpoint(tmp_path)
    assert str(caught.value).startswith(f"{latest / name}: {problem}")
    assert str(caught.value).endswith(
        f"The checkpoint step-000004 is damaged; resume from the one before it with --resume {earlier}, "
        "or start over with --overwrite."
    )
    assert isinstance(caught.value, ValueError)
    assert load_checkpoint(earlier).state.step == 2  # the earlier one it points to is whole


def test_a_damaged_first_checkpoint_says_to_start_over(tmp_path):
    from faceclip.training.checkpoint import CheckpointDamagedError, load_checkpoint

    only = _save_checkpoint(tmp_path, 2)
    _truncate(only / "model.safetensors")
    with pytest.raises(CheckpointDamagedError, match="no earlier checkpoint to resume from: start over with"):
        load_checkpoint(only)


def test_train_resume_from_a_damaged_checkpoint_is_one_message(tmp_path, capsys):
    configs = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"
    out = tmp_path / "run"
    earlier = _save_checkpoint(out, 2)
    latest = _save_checkpoint(out, 4)
    _truncate(latest / "model.safetensors")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, err = run(capsys, "train", "stage1", "--config", str(configs / "stage1_tiny.yaml"), "--data",
                    "synthetic", "--out", str(out), "--resume", "--set", "run.progress_bar=false")  # fmt: skip
    assert code == 2 and err.count("error:") == 1
    assert f"faceclip train: error: {latest / 'model.safetensors'}: not a complete safetensors file" in err
    assert f"--resume {earlier}" in err and "--overwrite" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written before the refusal


def test_the_streaming_facet5_converter_checks_each_tensor_once(tmp_path, caplog, monkeypatch):
    from faceclip.convert import finite
    from faceclip.convert.facet5_encoder import released_key_map as facet5_key_map
    from faceclip.convert.facet5_files import convert_facet5_encoder
    from faceclip.models.facet5_encoder import create_facet5_encoder

    encoder = create_facet5_encoder("facet5-tiny", seed=0)
    ours = encoder.state_dict()
    released = {}
    for key, (target, rows) in facet5_key_map(dict(encoder.config)).items():
        tensor = ours[target].clone()
        released[key] = (
            tensor
            if rows is None
            else torch.cat([torch.zeros(2 * tensor.shape[0], *tensor.shape[1:]), tensor])
        )
    names = sorted(released)[:2]
    for name in names:
        released[name][0] = float("inf")
    torch.save(released, tmp_path / "face_t5_encoder.pt")
    checked = []
    monkeypatch.setattr(
        finite, "is_all_finite", lambda t, check=finite.is_all_finite: checked.append(t) or check(t)
    )
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        convert_facet5_encoder(tmp_path / "face_t5_encoder.pt", tmp_path / "out", config="facet5-tiny",
                               max_shard_bytes=2 << 20)  # fmt: skip
    assert len(checked) == len(released)  # every used tensor once, as it was written, over several shards
    assert (
        f"face_t5_encoder.pt: 2 of {len(released)} floating-point tensors hold NaN or infinite" in caplog.text
    )
    assert names[0] in caplog.text and (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "diffusion_pytorch_model.safetensors.index.json").is_file()  # several shards


def test_the_flux_transformer_converter_names_bad_and_nonfinite_files(tmp_path, capsys, caplog):
    from faceclip.convert.flux_transformer import convert_released_transformer
    from faceclip.pipelines.flux.tiny import build_tiny_components as build_tiny_flux

    transformer = build_tiny_flux()["transformer"]
    config, weights = dict(transformer.config), transformer.state_dict()
    bad = write_bad_file(tmp_path / "dit.pt", "unsafe pickle")
    with pytest.raises(
        WeightsFileError, match=r"dit\.pt: the pickle holds .*\(hf download ByteDance/FaceCLIP model/dit\.pt"
    ):
        convert_released_transformer(bad, config, tmp_path / "never")
    weights["proj_out.weight"] = torch.full_like(weights["proj_out.weight"], float("nan"))
    torch.save(weights, tmp_path / "nan.pt")
    with caplog.at_level(logging.WARNING, logger="faceclip"):
        convert_released_transformer(tmp_path / "nan.pt", config, tmp_path / "out", max_shard_bytes=20_000)
    floating = sum(tensor.is_floating_point() for tensor in weights.values())
    assert (
        f"nan.pt: 1 of {floating} floating-point tensors holds NaN or infinite values (proj_out.weight)"
        in caplog.text
    )
    assert not (tmp_path / "never").exists() and (tmp_path / "out" / "config.json").is_file()
