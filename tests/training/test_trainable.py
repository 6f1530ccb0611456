"""Every trainable parameter gets a gradient (DDP runs with find_unused_parameters=False by default)."""

from pathlib import Path

import pytest
import torch

from faceclip.training.config import load_config
from faceclip.training.data import build_dataloader

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"


def _without_gradient(task, config) -> list[str]:
    loader = build_dataloader(config.data, target_dims=task.synthetic_target_dims())
    batch = next(iter(loader))
    batch["position"] = torch.arange(len(batch["caption"]))
    task.model.train()
    task.model(batch).loss.backward()
    names = {id(p): k for k, p in task.model.named_parameters()}
    return [names[id(p)] for p in task.trainable_parameters() if p.grad is None]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_stage1_trains_only_parameters_the_loss_uses(kind):
    from faceclip.training.stage1 import Stage1Task

    config = load_config("stage1", CONFIGS / "stage1_tiny.yaml", [f"loss.kind={kind}", "data.batch_size=4"])
    task = Stage1Task(config)
    assert _without_gradient(task, config) == []
    assert any(".logit_scale" in k for k in task.trainable_state())


@pytest.mark.slow
def test_stage2_with_a_trained_encoder_trains_only_parameters_the_loss_uses():
    from faceclip.training.stage2 import Stage2Task

    overrides = ["model.train_encoder=true", "model.condition_dropout=0.0", "data.batch_size=2"]
    config = load_config("stage2", CONFIGS / "stage2_tiny.yaml", overrides)
    task = Stage2Task(config)
    trainable = task.trainable_state()
    assert any(k.startswith("encoder.branch_l.fuser") for k in trainable)
    assert not any("logit_" in k for k in trainable)
    assert _without_gradient(task, config) == []
