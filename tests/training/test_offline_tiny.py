"""The tiny training path works offline out of the box: `faceclip prepare` on a few photos, then stage 1 of
the packaged `stage1_tiny.yaml` on the shards, with HF_HUB_OFFLINE=1 and nothing in the Hugging Face cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import faceclip

FACES = Path(__file__).parents[1] / "data" / "faces"
CONFIG = Path(faceclip.__file__).parent / "training" / "configs" / "stage1_tiny.yaml"


def _faceclip(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceclip", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.mark.slow
def test_prepare_then_stage1_tiny_runs_offline(tmp_path):
    photos = tmp_path / "photos"
    for person, names in {"ann": ["lfw_000", "lfw_001"], "bob": ["lfw_002"]}.items():
        (photos / person).mkdir(parents=True)
        for name in names:
            shutil.copy(FACES / f"{name}.png", photos / person / f"{name}.png")
            (photos / person / f"{name}.txt").write_text(f"a photo of {person}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "PYTHONPATH": str(Path(faceclip.__file__).parents[1])}  # fmt: skip
    prepared = _faceclip(
        "prepare", str(photos), "--out", str(tmp_path / "shards"), "--identity-from-folder", env=env
    )
    assert prepared.returncode == 0, prepared.stderr
    trained = _faceclip("train", "stage1", "--config", str(CONFIG), "--data", str(tmp_path / "shards"),
                        "--out", str(tmp_path / "run"), "--max-steps", "2",
                        "--set", "run.eval_samples=0", "data.batch_size=2", env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "uses the tiny random image tower instead" in trained.stderr
    metrics = json.loads(trained.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and metrics["nonfinite_steps"] == 0
    assert (tmp_path / "run" / "final" / "encoder" / "config.json").is_file()


def test_a_real_encoder_never_gets_random_image_targets(tmp_path):
    """Only a packaged random encoder (a smoke run) falls back; a real one keeps 'precomputed' and its error."""
    from faceclip.training.config import load_config
    from faceclip.training.stage1 import image_target_source

    (tmp_path / "prepare.json").write_text(json.dumps({"image_targets": {"g": "some/clip"}}))
    config = load_config("stage1", CONFIG, [], {"data.source": str(tmp_path)})
    assert image_target_source(config, "l") == "tiny-random"
    assert image_target_source(config, "g") == "precomputed"  # the shards hold it
    real = load_config(
        "stage1", CONFIG, ["model.encoder=runs/s1/final/encoder"], {"data.source": str(tmp_path)}
    )
    assert image_target_source(real, "l") == "precomputed"
    synthetic = load_config("stage1", CONFIG)
    assert image_target_source(synthetic, "l") == "precomputed"
