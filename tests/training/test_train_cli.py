"""End-to-end runs of the real `faceclip train` command on tiny components and synthetic data."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faceclip.cli import main

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"


def _run(capsys, *args: str) -> dict:
    assert main(["train", *args, "--set", "run.progress_bar=false", *EXTRA.pop("set", [])]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


EXTRA: dict = {}


@pytest.mark.slow
def test_stage1_learns_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "run"
    m = _run(
        capsys,
        "stage1",
        "--config",
        str(CONFIGS / "stage1_tiny.yaml"),
        "--data",
        "synthetic",
        "--out",
        str(out),
    )
    assert m["steps"] == 30 and m["loss_last_mean"] < 0.6 * m["loss_first_mean"]
    for branch in ("l", "g"):
        assert m[f"eval_end/{branch}/face_to_text"] > 3 * m["eval_end/chance/face_to_text"]
        assert m[f"eval_end/{branch}/text_to_text"] > 3 * m["eval_end/chance/text_to_text"]
        assert m[f"eval_end/{branch}/text_to_image"] > 5 * m["eval_end/chance/text_to_image"]
    assert (out / "final" / "encoder" / "config.json").is_file() and (out / "final" / "config.yaml").is_file()
    assert (out / "checkpoints" / "step-000030" / "config.yaml").is_file()


@pytest.mark.slow
def test_stage2_loss_falls_on_tiny_unet(tmp_path, capsys):
    m = _run(
        capsys,
        "stage2",
        "--config",
        str(CONFIGS / "stage2_tiny.yaml"),
        "--max-steps",
        "12",
        "--out",
        str(tmp_path),
    )
    assert m["eval_end/loss"] < 0.8 * m["eval_start/loss"]
    assert (tmp_path / "final" / "unet" / "config.json").is_file()


SMALL = ["data.batch_size=4", "run.eval_samples=0", "run.checkpoint_every=3", "model.branches=[l]"]


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path, capsys):
    config = str(CONFIGS / "stage1_tiny.yaml")
    EXTRA["set"] = SMALL
    _run(capsys, "stage1", "--config", config, "--max-steps", "6", "--out", str(tmp_path / "straight"))
    EXTRA["set"] = [*SMALL, "run.max_steps=3"]
    _run(capsys, "stage1", "--config", config, "--out", str(tmp_path / "split"))
    EXTRA["set"] = SMALL
    m = _run(
        capsys,
        "stage1",
        "--config",
        config,
        "--max-steps",
        "6",
        "--out",
        str(tmp_path / "split"),
        "--resume",
    )
    assert m["steps"] == 6
    a = load_file(tmp_path / "straight" / "checkpoints" / "step-000006" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "step-000006" / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    first = load_file(tmp_path / "split" / "checkpoints" / "step-000003" / "model.safetensors")
    assert max((a[k] - first[k]).abs().max().item() for k in a) > 1e-4  # the last 3 steps did change weights


def test_user_errors_exit_cleanly(tmp_path, capsys):
    assert main(["train", "stage1", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "stage1", "--out", str(tmp_path), "--set", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, free_port, run_launcher):
    """2 CPU processes (gloo) with 2 x 4 samples equal 1 process with 8 samples (the same global batch).

    accelerate 1.x's ``launch --cpu`` starts a single process unless MPI is used, so the CPU processes are
    started through the torchrun path (``--multi_gpu``) with ``ACCELERATE_USE_CPU=1``.
    """
    common = [
        "--max-steps",
        "3",
        "--set",
        "run.eval_samples=0",
        "run.progress_bar=false",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    results = {}
    for stage, config, extra in (
        ("stage1", "stage1_tiny.yaml", ["model.branches=[l]"]),
        ("stage2", "stage2_tiny.yaml", []),
    ):
        for procs, batch in ((1, 8), (2, 4)):
            out = tmp_path / f"{stage}-{procs}"
            launcher = ["--multi_gpu", "--main_process_port", free_port] if procs > 1 else ["--cpu"]
            cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(procs),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "faceclip", "train", stage, "--config", str(CONFIGS / config), "--out", str(out),
                   *common, *extra, f"data.batch_size={batch}"]  # fmt: skip
            done = run_launcher(cmd, env=env, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            lines = done.stdout.strip().splitlines()
            assert len(lines) == 1, f"one JSON line from the main process only, got:\n{done.stdout}"
            results[stage, procs] = (json.loads(lines[0]), out)
        (one, out1), (two, out2) = results[stage, 1], results[stage, 2]
        assert one["global_batch"] == two["global_batch"] == 8 and two["world_size"] == 2
        for key in ("loss_first", "loss_last"):
            assert abs(one[key] - two[key]) <= 1e-4 * max(1.0, abs(one[key])), (key, one[key], two[key])
        a = load_file(out1 / "checkpoints" / "step-000003" / "model.safetensors")
        b = load_file(out2 / "checkpoints" / "step-000003" / "model.safetensors")
        # Summation order differs between 1 and 2 processes (float rounding). Adam turns a gradient near zero
        # into a step of up to lr, so single coordinates may differ by up to 2 * lr; on average they agree.
        diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
        lr = 1e-3
        assert diffs.mean().item() <= 2e-5 and diffs.max().item() <= 2 * lr * 3, (
            f"{stage}: 1 vs 2 processes differ by mean {diffs.mean().item():.2e}, max {diffs.max().item():.2e}"
        )


def test_out_of_range_settings_exit_before_anything_is_written(tmp_path, capsys):
    for override, key in (("data.batch_size=0", "data.batch_size"), ("loss.kind=hinge", "loss.kind"),
                          ("optim.scheduler=step", "optim.scheduler")):  # fmt: skip
        assert main(["train", "stage1", "--out", str(tmp_path / "run"), "--set", override]) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()


def test_output_and_data_are_taken_literally(tmp_path, capsys, monkeypatch):
    """`--out "runs/x #1"` and `--data 2024-05-01` are paths, not YAML (a comment, a date)."""
    import faceclip.training.loop
    import faceclip.training.stage1

    seen = {}
    monkeypatch.setattr(
        faceclip.training.stage1, "Stage1Task", lambda config: seen.setdefault("config", config)
    )
    monkeypatch.setattr(faceclip.training.loop, "fit", lambda task, config, **options: {"steps": 0})
    monkeypatch.chdir(tmp_path)
    assert main(["train", "stage1", "--out", "runs/x #1", "--data", "2024-05-01", "--max-steps", "5"]) == 0
    config = seen["config"]
    assert config.run.output_dir == "runs/x #1" and config.data.source == "2024-05-01"
    assert config.run.max_steps == 5


def test_unreadable_data_is_one_message(tmp_path, capsys, monkeypatch):
    import faceclip.training.loop
    import faceclip.training.stage1
    from faceclip.training.data import NoReadableSampleError

    def fit(task, config, **options):
        raise NoReadableSampleError("data.source: no readable sample in 1 shard(s) for this process")

    monkeypatch.setattr(faceclip.training.stage1, "Stage1Task", lambda config: None)
    monkeypatch.setattr(faceclip.training.loop, "fit", fit)
    assert main(["train", "stage1", "--out", str(tmp_path)]) == 2
    assert "no readable sample" in capsys.readouterr().err


def _fake_training(monkeypatch) -> list[dict]:
    """Replace the task and fit with stand-ins that record how fit was called (nothing is trained)."""
    import faceclip.training.loop
    import faceclip.training.stage1

    calls = []

    def fit(task, config, **options):
        calls.append({"out": config.run.output_dir, **options})
        return {"steps": 0}

    monkeypatch.setattr(faceclip.training.stage1, "Stage1Task", lambda config: None)
    monkeypatch.setattr(faceclip.training.loop, "fit", fit)
    return calls


@pytest.mark.parametrize("marker", ["config.yaml", "final/", "latest", "checkpoints/step-000003/"])
def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys, monkeypatch, marker):
    calls = _fake_training(monkeypatch)
    out = tmp_path / "run"
    target = out / marker
    if marker.endswith("/"):
        target.mkdir(parents=True)
    else:
        out.mkdir()
        target.write_text("x")
    assert main(["train", "stage1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceclip train: error: ") and str(out) in err and "Traceback" not in err
    assert "--resume" in err and "--overwrite" in err and "another --out" in err
    assert calls == [] and target.exists()


def test_resume_and_overwrite_reach_fit_and_an_empty_folder_is_fine(tmp_path, capsys, monkeypatch):
    calls = _fake_training(monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    assert main(["train", "stage1", "--out", str(out)]) == 0  # empty: a new run
    (out / "config.yaml").write_text("stage: stage1\n")
    assert main(["train", "stage1", "--out", str(out), "--resume"]) == 0
    assert main(["train", "stage1", "--out", str(out), "--overwrite"]) == 0
    assert [(c["resume"], c["overwrite"]) for c in calls] == [(None, False), (str(out), False), (None, True)]
    assert main(["train", "stage1", "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "only one of them" in capsys.readouterr().err


def test_output_is_a_deprecated_hidden_alias_of_out(tmp_path, capsys, monkeypatch):
    calls = _fake_training(monkeypatch)
    assert main(["train", "stage1", "--output", str(tmp_path / "old")]) == 0
    assert calls[0]["out"] == str(tmp_path / "old")
    assert "--output is deprecated; use --out" in capsys.readouterr().err
    assert main(["train", "stage1"]) == 2
    assert "faceclip train: error: --out DIR is required" in capsys.readouterr().err


def test_every_option_has_help_and_output_is_hidden(capsys):
    import argparse

    from faceclip.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    options = [a for a in train._actions if not isinstance(a, argparse._HelpAction)]
    hidden = [a.option_strings for a in options if a.help == argparse.SUPPRESS]
    assert hidden == [["--output"]]
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--out DIR" in text and "--overwrite" in text and "--output" not in text


@pytest.mark.slow
def test_refuse_resume_and_overwrite_on_a_real_run(tmp_path, capsys):
    """A finished run's folder: refused as is; --resume continues it; --overwrite replaces it."""
    out = tmp_path / "run"
    args = ["stage1", "--config", str(CONFIGS / "stage1_tiny.yaml"), "--out", str(out)]
    EXTRA["set"] = SMALL
    _run(capsys, *args, "--max-steps", "2")
    assert main(["train", *args, "--max-steps", "2", "--set", *SMALL]) == 2
    assert str(out) in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-000002"]
    EXTRA["set"] = SMALL
    assert _run(capsys, *args, "--max-steps", "3", "--resume")["steps"] == 3
    EXTRA["set"] = SMALL
    assert _run(capsys, *args, "--max-steps", "1", "--overwrite")["steps"] == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-000001"]


def test_a_run_stopped_by_a_signal_exits_130(tmp_path, capsys, monkeypatch):
    """SIGTERM saves a checkpoint and stops: that is not a finished run, so the exit status says so."""
    from faceclip.training import loop

    monkeypatch.setattr(loop, "fit", lambda *a, **k: {"steps": 3, "stopped_by_signal": True})
    code = main(["train", "stage1", "--config", str(CONFIGS / "stage1_tiny.yaml"), "--data", "synthetic",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 130 and "continue with --resume" in capsys.readouterr().err
