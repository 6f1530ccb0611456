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
        "--output",
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
        "--output",
        str(tmp_path),
    )
    assert m["eval_end/loss"] < 0.8 * m["eval_start/loss"]
    assert (tmp_path / "final" / "unet" / "config.json").is_file()


SMALL = ["data.batch_size=4", "run.eval_samples=0", "run.checkpoint_every=3", "model.branches=[l]"]


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path, capsys):
    config = str(CONFIGS / "stage1_tiny.yaml")
    EXTRA["set"] = SMALL
    _run(capsys, "stage1", "--config", config, "--max-steps", "6", "--output", str(tmp_path / "straight"))
    EXTRA["set"] = [*SMALL, "run.max_steps=3"]
    _run(capsys, "stage1", "--config", config, "--output", str(tmp_path / "split"))
    EXTRA["set"] = SMALL
    m = _run(
        capsys,
        "stage1",
        "--config",
        config,
        "--max-steps",
        "6",
        "--output",
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
    assert (
        main(["train", "stage1", "--config", str(tmp_path / "missing.yaml"), "--output", str(tmp_path)]) == 2
    )
    assert "--config" in capsys.readouterr().err
    assert main(["train", "stage1", "--output", str(tmp_path), "--set", "optim.lrr=1"]) == 2
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
                   "-m", "faceclip", "train", stage, "--config", str(CONFIGS / config), "--output", str(out),
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
        assert main(["train", "stage1", "--output", str(tmp_path / "run"), "--set", override]) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()


def test_output_and_data_are_taken_literally(tmp_path, capsys, monkeypatch):
    """`--output "runs/x #1"` and `--data 2024-05-01` are paths, not YAML (a comment, a date)."""
    import faceclip.training.loop
    import faceclip.training.stage1

    seen = {}
    monkeypatch.setattr(
        faceclip.training.stage1, "Stage1Task", lambda config: seen.setdefault("config", config)
    )
    monkeypatch.setattr(faceclip.training.loop, "fit", lambda task, config, resume: {"steps": 0})
    monkeypatch.chdir(tmp_path)
    assert main(["train", "stage1", "--output", "runs/x #1", "--data", "2024-05-01", "--max-steps", "5"]) == 0
    config = seen["config"]
    assert config.run.output_dir == "runs/x #1" and config.data.source == "2024-05-01"
    assert config.run.max_steps == 5


def test_unreadable_data_is_one_message(tmp_path, capsys, monkeypatch):
    import faceclip.training.loop
    import faceclip.training.stage1
    from faceclip.training.data import NoReadableSampleError

    def fit(task, config, resume):
        raise NoReadableSampleError("data.source: no readable sample in 1 shard(s) for this process")

    monkeypatch.setattr(faceclip.training.stage1, "Stage1Task", lambda config: None)
    monkeypatch.setattr(faceclip.training.loop, "fit", fit)
    assert main(["train", "stage1", "--output", str(tmp_path)]) == 2
    assert "no readable sample" in capsys.readouterr().err
