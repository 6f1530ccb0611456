"""Both stages satisfy the task interface; stage 2's library parts (EMA, min-SNR) match the earlier formulas."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faceclip.training.config import load_config
from faceclip.training.task import TrainingTask, missing_members

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"


@pytest.fixture(scope="module")
def stage2_ema_task():
    from faceclip.training.stage2 import Stage2Task

    config = load_config(
        "stage2", CONFIGS / "stage2_tiny.yaml", ["model.ema.enabled=true", "model.ema.decay=0.9"]
    )
    return Stage2Task(config)


def test_both_stage_tasks_satisfy_the_task_interface(stage2_ema_task):
    from faceclip.training.stage1 import Stage1Task

    stage1 = Stage1Task(load_config("stage1", CONFIGS / "stage1_tiny.yaml"))
    for task in (stage1, stage2_ema_task):
        assert isinstance(task, TrainingTask) and missing_members(task) == []
    assert missing_members(object()) == sorted(missing_members(object()))
    assert {"name", "model", "save_final", "load_ema_state"} <= set(missing_members(object()))


def _perturb(params: list[torch.nn.Parameter], step: int) -> None:
    with torch.no_grad():
        for i, p in enumerate(params):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(step * 1000 + i)) * 0.1)


def test_stage2_ema_follows_the_earlier_constant_decay_formula(stage2_ema_task):
    """shadow <- shadow + (1 - decay) * (param - shadow), from the initial weights, at every step."""
    task = stage2_ema_task
    names = [k for k, _ in task._trainable()]
    params = task.trainable_parameters()
    live = [p.detach().clone() for p in params]
    task.load_ema_state({k: p.detach() for k, p in zip(names, params)})  # start this test from the weights
    expected = {k: p.detach().float().clone() for k, p in zip(names, params)}
    for step in range(3):
        _perturb(params, step)
        task.after_step()
        for k, p in zip(names, params):
            expected[k].lerp_(p.detach().float(), 1 - 0.9)
    state = task.ema_state()
    assert list(state) == names
    assert max((state[k] - expected[k]).abs().max().item() for k in names) < 1e-6
    assert max((state[k] - p).abs().max().item() for k, p in zip(names, params)) > 1e-3  # EMA != live weights
    with torch.no_grad():
        for p, value in zip(params, live):
            p.copy_(value)


def test_stage2_ema_state_round_trips_and_a_mismatch_is_refused(stage2_ema_task):
    task = stage2_ema_task
    state = {k: v.clone() + 1 for k, v in task.ema_state().items()}
    task.load_ema_state(state)
    assert all(torch.equal(task.ema_state()[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="EMA tensors do not match"):
        task.load_ema_state(dict(list(state.items())[1:]))


def test_stage2_final_weights_are_the_ema_weights_and_training_weights_come_back(stage2_ema_task, tmp_path):
    task = stage2_ema_task
    names = [k for k, _ in task._trainable()]
    live = [p.detach().clone() for p in task.trainable_parameters()]
    ema = {k: v.clone() - 0.5 for k, v in task.ema_state().items()}
    task.load_ema_state(ema)
    task.save_final(tmp_path)
    saved = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    for name in names[:5]:
        assert torch.equal(saved[name.removeprefix("unet.")], ema[name])
    assert all(torch.equal(p, value) for p, value in zip(task.trainable_parameters(), live))


def _old_min_snr_weight(alphas_cumprod, timesteps, gamma, prediction_type):
    """The weights as the stage-2 loss computed them before it took diffusers' compute_snr."""
    alphas = alphas_cumprod[timesteps].float()
    snr = alphas / (1 - alphas)
    clipped = snr.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    return clipped / snr


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_match_the_earlier_formula(prediction_type):
    from diffusers import DDPMScheduler

    from faceclip.training.stage2 import min_snr_weight

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    timesteps = torch.tensor([0, 1, 10, 100, 250, 500, 750, 999])
    weights = min_snr_weight(scheduler, timesteps, 5.0, prediction_type)
    expected = _old_min_snr_weight(scheduler.alphas_cumprod, timesteps, 5.0, prediction_type)
    assert weights.shape == (8,)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-7)
    assert weights.max() > weights.min()  # gamma clips some steps and not others


@pytest.mark.slow
def test_stage2_ema_resumes_exactly(tmp_path):
    """2 steps straight == 1 step + resume + 1 step, for the trained weights and the EMA weights."""
    from faceclip.training.loop import fit
    from faceclip.training.stage2 import Stage2Task

    sets = ["model.ema.enabled=true", "model.ema.decay=0.5", "run.eval_samples=0", "data.batch_size=2",
            "run.checkpoint_every=1", "run.progress_bar=false"]  # fmt: skip

    def run(out, steps, resume=None):
        config = load_config("stage2", CONFIGS / "stage2_tiny.yaml", [*sets, f"run.max_steps={steps}"])
        config.run.output_dir = str(out)
        fit(Stage2Task(config), config, resume=resume)
        folder = out / "checkpoints" / f"step-{steps:06d}"
        return load_file(folder / "model.safetensors"), load_file(folder / "ema.safetensors")

    straight_model, straight_ema = run(tmp_path / "straight", 2)
    _, first_ema = run(tmp_path / "split", 1)
    split_model, split_ema = run(tmp_path / "split", 2, resume=tmp_path / "split")
    assert straight_ema.keys() == straight_model.keys() and len(straight_ema) > 10
    for key in straight_ema:
        torch.testing.assert_close(split_model[key], straight_model[key], rtol=0, atol=1e-6)
        torch.testing.assert_close(split_ema[key], straight_ema[key], rtol=0, atol=1e-6)
    assert max((straight_ema[k] - first_ema[k]).abs().max().item() for k in straight_ema) > 1e-6
