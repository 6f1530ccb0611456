"""FaceT5-FLUX stage 1: the family key picks the FaceT5 task, it trains only the fuser, face projection, heads and
logit scalars, retrieval rises above chance on synthetic data, and resume is exact."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faceclip.cli import main
from faceclip.training.config import ConfigError, FaceT5Stage1Config, load_config
from faceclip.training.task import missing_members

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"
TINY = CONFIGS / "stage1_facet5_tiny.yaml"


def test_the_tiny_config_is_a_facet5_stage1_config():
    assert isinstance(load_config("stage1", TINY), FaceT5Stage1Config)
    assert type(load_config("stage1", CONFIGS / "stage1_tiny.yaml")).__name__ == "Stage1Config"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.pooling=max", "config key 'model.pooling' must be mean or flatten, got 'max'"),
        ("model.targets.text=bert", "config key 'model.targets.text' must be clip, t5 or precomputed"),
        ("loss.kind=triplet", "config key 'loss.kind' must be one of sigmoid, softmax"),
    ],
)
def test_bad_facet5_stage1_values_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("stage1", TINY, [override])


def test_masked_mean_ignores_pad_positions():
    from faceclip.training.stage1_facet5 import masked_mean

    tokens = torch.arange(12.0).reshape(1, 4, 3)
    ids = torch.tensor([[5, 1, 0, 0]])
    torch.testing.assert_close(masked_mean(tokens, ids), tokens[:, :2].mean(dim=1))
    torch.testing.assert_close(masked_mean(tokens, torch.zeros(1, 4, dtype=torch.long)), torch.zeros(1, 3))


def test_facet5_stage1_trains_only_the_fuser_face_projection_heads_and_scalars():
    from faceclip.training.stage1_facet5 import FaceT5Stage1Task

    task = FaceT5Stage1Task(load_config("stage1", TINY))
    assert missing_members(task) == []
    prefixes = {name.split(".")[0] if not name.startswith("encoder.") else ".".join(name.split(".")[:2])
                for name in task.trainable_state()}  # fmt: skip
    assert prefixes == {"encoder.face_patch_proj", "encoder.fuser", "heads", "logit_scale", "logit_bias"}
    assert task.synthetic_target_dims() == {"face_l": 512, "text_l": 24, "image_l": 24}
    assert task.model.heads.face.in_features == 32  # the mean-pooled (B, 32) stream, not 16 x 32 flattened


@pytest.mark.slow
def test_facet5_stage1_retrieval_rises_above_chance(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "stage1", "--config", str(TINY), "--out", str(out), "--set", "run.progress_bar=false"]
    assert main(args) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["loss_last_mean"] < 0.7 * m["loss_first_mean"]
    for metric in ("face_to_text", "text_to_text", "text_to_image"):
        assert m[f"eval_end/t5/{metric}"] > 2 * m[f"eval_end/chance/{metric}"], (metric, m)
    assert (out / "final" / "encoder" / "config.json").is_file() and (out / "final" / "heads").is_dir()


@pytest.mark.slow
def test_facet5_stage1_resumes_exactly(tmp_path):
    from faceclip.training.loop import fit
    from faceclip.training.stage1_facet5 import FaceT5Stage1Task

    sets = ["run.progress_bar=false", "run.eval_samples=0", "data.batch_size=4", "run.checkpoint_every=1"]

    def run(out, steps, resume=None):
        config = load_config("stage1", TINY, [*sets, f"run.max_steps={steps}"])
        config.run.output_dir = str(out)
        fit(FaceT5Stage1Task(config), config, resume=resume)
        return load_file(out / "checkpoints" / f"step-{steps:06d}" / "model.safetensors")

    straight = run(tmp_path / "straight", 3)
    first = run(tmp_path / "split", 1)
    split = run(tmp_path / "split", 3, resume=tmp_path / "split")
    assert straight.keys() == split.keys() and any(k.startswith("encoder.fuser") for k in straight)
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    assert any(not torch.equal(straight[k], first[k]) for k in straight)


def test_a_smoke_run_on_prepared_data_computes_the_targets_the_data_lacks(tmp_path):
    """`faceclip prepare` stores no face/text targets (and here no image_l): a random packaged encoder computes
    them; a real encoder keeps 'precomputed' (and its error); shards holding image_l keep that setting."""
    from faceclip.training.stage1_facet5 import smoke_run_targets

    (tmp_path / "prepare.json").write_text(json.dumps({"image_targets": {"g": "some/clip"}}))
    smoke = smoke_run_targets(load_config("stage1", TINY, [], {"data.source": str(tmp_path)})).model.targets
    assert (smoke.face, smoke.text, smoke.image) == ("encoder", "clip", "tiny-random")
    real = load_config(
        "stage1", TINY, ["model.encoder=runs/s1/final/encoder"], {"data.source": str(tmp_path)}
    )
    assert smoke_run_targets(real) is real
    synthetic = load_config("stage1", TINY)
    assert smoke_run_targets(synthetic) is synthetic
    (tmp_path / "prepare.json").write_text(
        json.dumps({"image_targets": {"l": "openai/clip-vit-large-patch14"}})
    )
    prepared = smoke_run_targets(
        load_config("stage1", TINY, [], {"data.source": str(tmp_path)})
    ).model.targets
    assert prepared.image == "precomputed" and prepared.face == "encoder"
