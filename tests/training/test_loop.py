"""The training loop's safety nets, on a two-parameter task: non-finite losses and SIGTERM."""

import os
import signal

import pytest
import torch
from torch import nn

from faceclip.training.checkpoint import load_checkpoint
from faceclip.training.config import Stage1Config
from faceclip.training.loop import NonFiniteLossError, fit
from faceclip.training.stage1 import StepOutput


class _Model(nn.Module):
    def __init__(self, bad_steps: set[int], sigterm_at: int | None, batch_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.bad_steps, self.sigterm_at, self.batch_size = bad_steps, sigterm_at, batch_size

    def forward(self, batch: dict) -> StepOutput:
        step = int(batch["position"][0]) // self.batch_size
        if step == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        loss = (self.weight * batch["image"].mean()).square().sum()
        if step in self.bad_steps:
            loss = loss * float("nan")
        return StepOutput(loss=loss)


class _Task:
    name = "stage1"

    def __init__(self, bad_steps=(), sigterm_at=None, batch_size=2):
        self.model = _Model(set(bad_steps), sigterm_at, batch_size)

    def to(self, device):
        self.model.to(device)
        return self

    def synthetic_target_dims(self):
        return {}

    def trainable_parameters(self):
        return [self.model.weight]

    def trainable_state(self, model=None):
        return {"weight": (model or self.model).weight.detach()}

    def load_trainable_state(self, state):
        self.model.weight.data.copy_(state["weight"])

    def after_step(self):
        pass

    def ema_state(self):
        return None

    def evaluate(self, batch):
        return {}

    def save_final(self, folder):
        folder.mkdir(parents=True, exist_ok=True)


def _config(tmp_path, steps: int) -> Stage1Config:
    config = Stage1Config()
    config.run.output_dir, config.run.max_steps, config.run.eval_samples = str(tmp_path), steps, 0
    config.run.progress_bar, config.run.max_nonfinite_steps = False, 3
    config.data.batch_size, config.data.face_size, config.data.image_size = 2, 8, 8
    config.optim.lr = 0.1
    return config


def test_non_finite_loss_skips_the_update(tmp_path):
    task = _Task(bad_steps={1, 2})
    metrics = fit(task, _config(tmp_path, 4))
    assert metrics["nonfinite_steps"] == 2 and metrics["steps"] == 4
    assert torch.isfinite(task.model.weight).all()


def test_too_many_non_finite_losses_stop_the_run(tmp_path):
    with pytest.raises(NonFiniteLossError, match="max_nonfinite_steps"):
        fit(_Task(bad_steps={1, 2, 3, 4}), _config(tmp_path, 6))


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    metrics = fit(_Task(sigterm_at=2), _config(tmp_path, 10))
    assert metrics["stopped_by_signal"] and metrics["steps"] == 3
    assert load_checkpoint(tmp_path).state.step == 3
    assert not (tmp_path / "final").exists()


def test_a_batch_with_no_readable_sample_is_skipped_and_counted(tmp_path):
    """Rows 'missing' have no image: the first global batch holds only those, and is skipped, not fed."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(data / "ok.png")
    order = torch.randperm(
        6, generator=torch.Generator().manual_seed(0)
    ).tolist()  # the sampler's first epoch
    rows = ['{"image": "ok.png", "caption": "c", "face": "ok.png"}'] * 6
    for index in order[:2]:
        rows[index] = '{"image": "missing.png", "caption": "c", "face": "ok.png"}'
    (data / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    config = _config(tmp_path / "run", 2)
    config.data.source = str(data)
    task = _Task()
    metrics = fit(task, config)
    assert metrics["steps"] == 2 and metrics["empty_batches"] == 1 and metrics["skipped_samples"] == 2
    assert load_checkpoint(tmp_path / "run").state.samples_seen == 6  # 3 global batches drawn


class _FaceModel(_Model):
    def forward(self, batch: dict) -> StepOutput:
        return StepOutput(loss=(self.weight * batch["face"].mean(dim=(1, 2, 3))[:, None]).sin().sum())


def test_resume_on_shards_with_reference_photos_matches_a_straight_run(tmp_path):
    """4 steps straight == 2 steps + resume + 2 steps, with shards and data.different_reference_photo."""
    from PIL import Image

    from faceclip.training.shards import encode_sample, write_shard

    data = tmp_path / "shards"
    data.mkdir()
    for shard in range(2):
        samples = []
        for i in range(6):
            colour = (40 * i, 30 * shard, 7 * i)
            meta = {
                "identity": i % 3,
                "detection": {"box": [0, 0, 1, 1], "score": 1.0, "landmarks": [[0, 0]] * 5},
            }
            image, face = Image.new("RGB", (8, 8), colour), Image.new("RGB", (8, 8), colour)
            samples.append(encode_sample(f"{shard}{i:03d}", image, "c", face, meta))
        write_shard(data / f"shard-{shard:06d}.tar", samples)

    def run(out, steps, resume=None):
        config = _config(out, steps)
        config.data.source, config.optim.lr = str(data), 0.5
        task = _Task()
        task.model = _FaceModel(set(), None, 2)
        fit(task, config, resume=resume)
        return task.model.weight.detach()

    straight = run(tmp_path / "straight", 4)
    run(tmp_path / "split", 2)
    assert torch.equal(run(tmp_path / "split", 4, resume=tmp_path / "split"), straight)
