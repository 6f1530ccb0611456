import random

import numpy as np
import pytest
import torch

from faceclip.training.checkpoint import (
    TrainingState,
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def _trained_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, opt = _trained_optimizer()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    opt.step()
    sched.step()
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    rng = capture_rng()
    state = TrainingState(step=7, samples_seen=56, lr_scheduler=sched.state_dict(), metrics={"loss": 0.5})
    path = save_checkpoint(
        tmp_path,
        model=dict(model.named_parameters()),
        optimizer=opt.state_dict(),
        state=state,
        rng=[rng, rng],
        config_yaml="stage: stage1\n",
        keep=1,
    )
    assert path.name == "step-000007" and (path / "config.yaml").read_text() == "stage: stage1\n"
    expected = (torch.rand(3), np.random.rand(), random.random())

    ckpt = load_checkpoint(tmp_path)
    assert ckpt.path == path and ckpt.state.step == 7 and ckpt.state.samples_seen == 56
    assert torch.equal(ckpt.model["weight"], model.weight)
    _, opt2 = _trained_optimizer()
    opt2.load_state_dict(ckpt.optimizer)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
    assert opt2.param_groups[0]["betas"][0] == 0.8
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    sched2.load_state_dict(ckpt.state.lr_scheduler)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert len(ckpt.rng) == 2
    restore_rng(ckpt.rng[1])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]


def test_checkpoint_keeps_newest_and_ignores_half_written(tmp_path):
    model, opt = _trained_optimizer()
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path,
            model=dict(model.named_parameters()),
            optimizer=opt.state_dict(),
            state=TrainingState(step=step),
            rng=[capture_rng()],
            config_yaml="",
            keep=2,
        )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-000002", "step-000003"]
    (tmp_path / "checkpoints" / "step-000009.tmp").mkdir()  # an interrupted save
    assert find_checkpoint(tmp_path).name == "step-000003"
    with pytest.raises(FileNotFoundError, match="--resume"):
        find_checkpoint(tmp_path / "nothing")


def _save(folder, step, keep):
    model, opt = _trained_optimizer()
    return save_checkpoint(folder, model=dict(model.named_parameters()), optimizer=opt.state_dict(),
                           state=TrainingState(step=step), rng=[capture_rng()], config_yaml="", keep=keep)  # fmt: skip


def test_pruning_after_a_resume_from_an_earlier_step_keeps_the_new_checkpoint(tmp_path, caplog):
    for step in (2, 3, 6):  # an abandoned run got to step 6; the user resumes from step 3
        _save(tmp_path, step, keep=0)
    with caplog.at_level("WARNING"):
        _save(tmp_path, 4, keep=1)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-000004", "step-000006"]  # 2 and 3 pruned, 6 left alone
    assert find_checkpoint(tmp_path).name == "step-000004"
    assert "step-000006" in caplog.text
    _save(tmp_path, 5, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest", "step-000004", "step-000005", "step-000006"
    ]  # fmt: skip


def test_latest_pointing_to_a_missing_checkpoint_is_reported(tmp_path):
    _save(tmp_path, 1, keep=0)
    (tmp_path / "checkpoints" / "latest").write_text("step-000009\n")
    with pytest.raises(FileNotFoundError, match=r"step-000009.*missing.*step-000001"):
        find_checkpoint(tmp_path)
