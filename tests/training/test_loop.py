"""The training loop on a three-parameter task: its safety nets (non-finite losses, SIGTERM, the run folder),
the task interface and the LR schedule."""

import os
import signal

import pytest
import torch
from torch import nn

from faceclip.training.checkpoint import load_checkpoint
from faceclip.training.config import Stage1Config
from faceclip.training.loop import NonFiniteLossError, fit, make_lr_scheduler
from faceclip.training.run_folder import RunFolderInUseError
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

    def load_ema_state(self, state):
        raise ValueError("no EMA")

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


def test_the_test_task_satisfies_the_task_interface_and_a_partial_one_is_refused(tmp_path):
    from faceclip.training.task import TrainingTask

    assert isinstance(_Task(), TrainingTask)
    partial = type("Partial", (), {k: v for k, v in vars(_Task).items() if k != "save_final"})()
    assert not isinstance(partial, TrainingTask)
    with pytest.raises(TypeError, match="save_final"):
        fit(partial, _config(tmp_path, 1))
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_folder_holding_a_run_is_refused_unless_resuming_or_overwriting(tmp_path):
    fit(_Task(), _config(tmp_path, 2))
    with pytest.raises(RunFolderInUseError, match=r"--resume.*--overwrite"):
        fit(_Task(), _config(tmp_path, 4))
    assert load_checkpoint(tmp_path).state.step == 2  # the refused run changed nothing
    assert fit(_Task(), _config(tmp_path, 3), resume=tmp_path)["steps"] == 3
    replaced = fit(_Task(), _config(tmp_path, 1), overwrite=True)
    assert replaced["steps"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000001"]
    with pytest.raises(ValueError, match="only one"):
        fit(_Task(), _config(tmp_path, 1), resume=tmp_path, overwrite=True)


def _old_lr_factor(scheduler: str, warmup: int, max_steps: int, step: int) -> float:
    """The LR factor the loop used before it took diffusers' schedules (warm-up from 1/warmup)."""
    import math

    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    if scheduler == "linear":
        return max(0.0, 1.0 - progress)
    if scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_lr_schedule_matches_the_earlier_formula_after_warm_up(name):
    """diffusers' schedules equal the earlier formulas past warm-up; warm-up now starts at 0 (step / warmup)."""
    config = Stage1Config().optim
    config.scheduler, config.warmup_steps, config.lr = name, 4, 1.0
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = make_lr_scheduler(optimizer, config, max_steps=20)
    factors = []
    for _ in range(20):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert factors[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert factors[4:] == pytest.approx([_old_lr_factor(name, 4, 20, s) for s in range(4, 20)])
    assert len(set(factors[4:])) == (1 if name == "constant" else 16)
