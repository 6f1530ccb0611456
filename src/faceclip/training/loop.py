"""The training loop shared by both stages, on Hugging Face Accelerate.

One code path from one CPU process to many GPUs: ``accelerate launch`` picks DDP (default), FSDP or DeepSpeed;
the loop does gradient accumulation, clipping, non-finite-loss skipping, logging (progress bar, TensorBoard),
atomic checkpoints every N steps and on SIGTERM, and exact resumption (model, optimiser, schedule, RNG, data
position). It drives any :class:`~faceclip.training.task.TrainingTask`.

:func:`fit` runs these steps: :func:`_set_up` (accelerator, run folder, optimiser, schedule, :func:`_resume`,
data), :func:`_train_step` per optimiser step, :func:`_log_step`, :func:`_checkpoint`, then :func:`_finish`
(summary, final evaluation, final weights). Checkpoints are :mod:`faceclip.training.checkpoint`'s rather than
Accelerate's ``save_state``, which pickles the optimiser, scheduler and RNG states (loading them needs
``torch.load(weights_only=False)``); its save/load state hooks run only inside ``save_state``/``load_state``,
so they have nothing to hook here.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object
from diffusers.optimization import get_scheduler
from torch import nn
from tqdm.auto import tqdm

from faceclip.training.checkpoint import (
    Checkpoint,
    TrainingState,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from faceclip.training.config import OptimConfig, dump_config, save_config
from faceclip.training.data import NoReadableSampleError, build_dataloader, eval_batch
from faceclip.training.run_folder import FINAL, check_run_folder, clear_run_folder, tracker_name
from faceclip.training.task import TrainingTask, missing_members

logger = logging.getLogger(__name__)


MAX_EMPTY_BATCHES = 100  # batches in a row without a readable sample before the run stops

#: ``optim.scheduler`` -> the name of diffusers' schedule (each with ``optim.warmup_steps`` of linear warm-up).
LR_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class NonFiniteLossError(RuntimeError):
    """Raised after ``run.max_nonfinite_steps`` non-finite losses in a row."""


def make_optimizer(params: list[nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW with ``optim.use_8bit_adam``."""
    kwargs = dict(
        lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=config.weight_decay
    )
    if not params:
        raise ValueError("nothing to train: every parameter is frozen; check model.branches / model.lora.")
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError(
                "optim.use_8bit_adam needs bitsandbytes (CUDA only): pip install bitsandbytes, "
                "or set optim.use_8bit_adam=false."
            ) from err
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' LR schedule for ``optim.scheduler``: the factor at step ``s`` is ``s / warmup_steps`` during
    warm-up, then 1 (constant), or a linear or cosine decay reaching 0 at ``max_steps``."""
    if config.scheduler not in LR_SCHEDULES:
        raise ValueError(f"optim.scheduler must be constant, linear or cosine, got '{config.scheduler}'.")
    return get_scheduler(
        LR_SCHEDULES[config.scheduler], optimizer, num_warmup_steps=config.warmup_steps,
        num_training_steps=max_steps,
    )  # fmt: skip


class _StopRequest:
    """Turns SIGTERM into a flag the loop checks after each step (a checkpoint is written, then it stops)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        logger.warning("SIGTERM received: saving a checkpoint after this step, then stopping")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(value):
        if torch.is_tensor(value):
            return value.to(device, non_blocking=True)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


class _BatchStream:
    """This process's batches, in step with the other processes, with their places in the global stream.

    A global batch in which some process got no readable sample is skipped by all processes together (counted),
    so they stay in step and the data position (``state.samples_seen``) stays exact for ``--resume``.
    """

    def __init__(self, loader, accelerator: Accelerator, state: TrainingState, batch_size: int):
        self.iterator, self.accelerator, self.state = iter(loader), accelerator, state
        self.batch_size = batch_size
        self.global_batch = batch_size * accelerator.num_processes
        self.skipped = 0  # this process's unreadable (or dropped) samples
        self.empty_batches = 0

    def next(self) -> dict[str, Any]:
        """The next batch on the accelerator's device, with ``position`` (B,): each sample's stream index."""
        batch, position = self._next_readable()
        batch = _to_device(batch, self.accelerator.device)
        # Each sample's place in the global stream: per-sample randomness (stage 2) keys on it.
        first = position + self.accelerator.process_index * self.batch_size
        batch["position"] = torch.arange(first, first + len(batch["caption"]))
        return batch

    def _next_readable(self) -> tuple[dict[str, Any], int]:
        """The next batch no process found empty, and the stream position of its global batch."""
        accelerator = self.accelerator
        for _ in range(MAX_EMPTY_BATCHES):
            batch, position = next(self.iterator), self.state.samples_seen
            self.state.samples_seen += self.global_batch
            self.skipped += batch["skipped"]
            empty = torch.tensor(float(not batch["caption"]), device=accelerator.device)
            if accelerator.num_processes > 1:
                empty = accelerator.reduce(empty, reduction="sum")
            if empty.item() == 0:
                return batch, position
            self.empty_batches += 1
            # This process's readable samples, dropped with the global batch.
            self.skipped += len(batch["caption"])
            logger.warning("a batch with no readable sample was skipped (%d so far)", self.empty_batches)
        raise NoReadableSampleError(
            f"data.source: {MAX_EMPTY_BATCHES} batches in a row had no readable sample; check the data "
            "(the warnings above name the unreadable images)."
        )


@dataclass
class _Run:
    """What one call of :func:`fit` works with, and its running totals."""

    task: TrainingTask
    config: Any
    accelerator: Accelerator
    model: nn.Module  # task.model as prepared by Accelerate (wrapped for DDP etc.)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[nn.Parameter]
    state: TrainingState
    batches: _BatchStream
    out: Path
    losses: list[float] = field(default_factory=list)  # mean loss of each applied step
    nonfinite_steps: int = 0
    samples_timed: int = 0
    started: float = 0.0
    bar: Any = None

    @property
    def samples_per_step(self) -> int:
        return self.batches.global_batch * self.config.run.gradient_accumulation_steps

    def speed(self) -> float:
        """Samples per second since the first step started."""
        return self.samples_timed / max(time.perf_counter() - self.started, 1e-9)


@dataclass
class _StepResult:
    loss: float  # the step's loss, averaged over processes (NaN/inf when skipped)
    logs: dict[str, torch.Tensor]
    stop: bool  # some process got SIGTERM


def fit(
    task: TrainingTask, config, *, resume: str | Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Train ``task`` (a :class:`~faceclip.training.stage1.Stage1Task` or ``Stage2Task``) as ``config`` says.

    Args:
        task: anything with the members of :class:`~faceclip.training.task.TrainingTask`.
        config: the stage's config; ``run.output_dir`` is the run folder.
        resume: a checkpoint folder or a run folder (its latest checkpoint) to continue from.
        overwrite: replace the run already in ``run.output_dir`` (without it, and without ``resume``, a folder
            holding a run is refused: see :mod:`faceclip.training.run_folder`).

    Returns:
        Final metrics (the same dict on every process): losses, samples/s, skipped samples, evaluation.

    Raises:
        TypeError: ``task`` lacks members of the task interface.
        RunFolderInUseError: ``run.output_dir`` holds a run, and neither ``resume`` nor ``overwrite`` is given.
        NonFiniteLossError: too many non-finite losses in a row.
        FileNotFoundError: ``resume`` names no checkpoint.
        CheckpointDamagedError: a file of that checkpoint is cut short or broken (a ``ValueError``).
    """
    missing = missing_members(task)
    if missing:
        raise TypeError(
            f"fit: {type(task).__name__} lacks {missing} (see faceclip.training.task.TrainingTask)."
        )
    run = _set_up(task, config, resume=resume, overwrite=overwrite)
    metrics, evaluation = _start_metrics(run)
    run.bar = tqdm(total=config.run.max_steps, initial=run.state.step, desc=task.name,
                   disable=not (run.accelerator.is_main_process and config.run.progress_bar))  # fmt: skip
    run.started, stopped = time.perf_counter(), False
    with _StopRequest() as stop:
        while run.state.step < config.run.max_steps and not stopped:
            result = _train_step(run, stop)
            _log_step(run, result)
            stopped = result.stop
            if stopped or _checkpoint_due(run.state.step, config.run):
                _checkpoint(run)
    if stopped:
        logger.warning("stopped by SIGTERM at step %d; resume with --resume %s", run.state.step, run.out)
    return _finish(run, metrics, evaluation, stopped=stopped)


def _make_accelerator(config) -> Accelerator:
    run = config.run
    accelerator = Accelerator(
        mixed_precision=run.mixed_precision,
        log_with="tensorboard" if run.tensorboard else None,
        project_dir=str(run.output_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=run.find_unused_parameters)],
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        logger.warning("%s: checkpoints hold gathered trainable weights; optimiser state is gathered too",
                       accelerator.distributed_type)  # fmt: skip
    return accelerator


def _claim_run_folder(accelerator: Accelerator, out: Path, *, resuming: bool, overwrite: bool) -> None:
    """Check the run folder on every process (before anything is written), then clear it on ``overwrite``."""
    check_run_folder(out, resuming=resuming, overwrite=overwrite)
    if overwrite and accelerator.is_main_process:
        deleted = clear_run_folder(out)
        if deleted:
            logger.warning("--overwrite: deleted %s in %s", ", ".join(deleted), out)
    accelerator.wait_for_everyone()


def _set_up(task: TrainingTask, config, *, resume, overwrite: bool) -> _Run:
    """Accelerator, run folder, optimiser, LR schedule, the resumed state, the prepared model and the data."""
    accelerator, out = _make_accelerator(config), Path(config.run.output_dir)
    _claim_run_folder(accelerator, out, resuming=resume is not None, overwrite=overwrite)
    # Read before anything is written, so a damaged checkpoint is refused with the run folder as it was.
    checkpoint = load_checkpoint(resume) if resume is not None else None
    if accelerator.is_main_process:
        save_config(config, out / "config.yaml", task.name)
    if config.run.tensorboard:
        accelerator.init_trackers(tracker_name(task.name))
    params = task.trainable_parameters()
    optimizer = make_optimizer(params, config.optim)
    scheduler = make_lr_scheduler(optimizer, config.optim, config.run.max_steps)
    if checkpoint is not None:
        _resume(task, optimizer, scheduler, checkpoint)
    state = checkpoint.state if checkpoint is not None else TrainingState()
    task.to(accelerator.device)
    task.model.train()
    model, optimizer = accelerator.prepare(task.model, optimizer)
    if checkpoint is not None:
        _restore_rng(accelerator, checkpoint)
    data, world = config.data, accelerator.num_processes
    loader = build_dataloader(
        data, rank=accelerator.process_index, world_size=world,
        start_batch=state.samples_seen // (data.batch_size * world), target_dims=_target_dims(task, config),
    )  # fmt: skip
    batches = _BatchStream(loader, accelerator, state, data.batch_size)
    return _Run(task, config, accelerator, model, optimizer, scheduler, params, state, batches, out)


def _target_dims(task: TrainingTask, config) -> dict[str, int] | None:
    return task.synthetic_target_dims() if config.data.source == "synthetic" else None


def _resume(task: TrainingTask, optimizer, scheduler, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` into the task, the optimiser and the schedule."""
    task.load_trainable_state(checkpoint.model)
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.state.lr_scheduler)
    if checkpoint.ema is not None:
        task.load_ema_state(checkpoint.ema)
    logger.info("resuming from %s at step %d", checkpoint.path, checkpoint.state.step)


def _restore_rng(accelerator: Accelerator, checkpoint: Checkpoint) -> None:
    """This process's generator states from the checkpoint (only when the process count is the same)."""
    world = accelerator.num_processes
    if len(checkpoint.rng) == world:
        restore_rng(checkpoint.rng[accelerator.process_index])
    else:
        logger.warning("--resume: the checkpoint has %d processes' RNG states, this run %d; not restored",
                       len(checkpoint.rng), world)  # fmt: skip


def _evaluate(run: _Run, evaluation: dict[str, Any], prefix: str) -> dict[str, float]:
    metrics = run.task.evaluate(_to_device(evaluation, run.accelerator.device))
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def _start_metrics(run: _Run) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The metrics known before training (with ``eval_start/*``), and the held-out batch (main process only)."""
    config, accelerator = run.config, run.accelerator
    metrics: dict[str, Any] = {"stage": run.task.name, "world_size": accelerator.num_processes,
                               "global_batch": run.samples_per_step}  # fmt: skip
    evaluation = None
    if accelerator.is_main_process and config.run.eval_samples > 0:
        evaluation = eval_batch(config.data, config.run.eval_samples, _target_dims(run.task, config))
        metrics.update(_evaluate(run, evaluation, "eval_start"))
    return metrics, evaluation


def _train_step(run: _Run, stop: _StopRequest) -> _StepResult:
    """One optimiser step over ``run.gradient_accumulation_steps`` micro-batches (or a skipped one)."""
    accelerator, accum = run.accelerator, run.config.run.gradient_accumulation_steps
    step_loss, logs = torch.zeros((), device=accelerator.device), {}
    for micro in range(accum):
        batch = run.batches.next()
        sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(run.model)
        with sync, accelerator.autocast():
            output = run.model(batch)
            accelerator.backward(output.loss / accum)
        step_loss += output.loss.detach().float() / accum
        logs = output.logs
    flags = torch.tensor(
        [float(not torch.isfinite(step_loss)), float(stop.requested)], device=accelerator.device
    )
    flags = accelerator.reduce(flags, reduction="sum")
    loss = accelerator.reduce(step_loss, reduction="mean").item()
    if flags[0] > 0:
        _skip_update(run)
    else:
        _apply_update(run, loss)
    run.scheduler.step()
    run.state.step += 1
    run.samples_timed += run.samples_per_step
    return _StepResult(loss=loss, logs=logs, stop=bool(flags[1] > 0))


def _apply_update(run: _Run, loss: float) -> None:
    run.state.nonfinite_in_a_row = 0
    if run.config.optim.max_grad_norm > 0:
        run.accelerator.clip_grad_norm_(run.params, run.config.optim.max_grad_norm)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.task.after_step()
    run.losses.append(loss)


def _skip_update(run: _Run) -> None:
    """Drop the gradients of a non-finite loss; too many in a row end the run."""
    state, limit = run.state, run.config.run.max_nonfinite_steps
    run.optimizer.zero_grad(set_to_none=True)
    run.nonfinite_steps += 1
    state.nonfinite_in_a_row += 1
    logger.warning(
        "step %d: non-finite loss, update skipped (%d in a row)", state.step, state.nonfinite_in_a_row
    )
    if state.nonfinite_in_a_row >= limit:
        raise NonFiniteLossError(
            f"{state.nonfinite_in_a_row} non-finite losses in a row (run.max_nonfinite_steps); "
            "lower optim.lr, check the data, or use run.mixed_precision=bf16 rather than fp16."
        )


def _log_step(run: _Run, result: _StepResult) -> None:
    """Progress bar every step; tracker and ``state.metrics`` every ``run.log_every`` steps and at the end."""
    state, speed = run.state, run.speed()
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{result.loss:.4f}", samples_per_s=f"{speed:.1f}")
    if state.step % run.config.run.log_every == 0 or state.step == run.config.run.max_steps:
        entry = {"loss": result.loss, "lr": run.scheduler.get_last_lr()[0], "samples_per_second": speed}
        entry.update({k: float(v) for k, v in result.logs.items()})
        state.metrics = entry
        run.accelerator.log(entry, step=state.step)
        logger.debug("step %d %s", state.step, entry)


def _checkpoint_due(step: int, run_config) -> bool:
    return step % run_config.checkpoint_every == 0 or step == run_config.max_steps


def _checkpoint(run: _Run) -> None:
    """Write a checkpoint (main process) with every process's RNG state; all processes wait for it."""
    accelerator, task, state = run.accelerator, run.task, run.state
    state.lr_scheduler = run.scheduler.state_dict()
    rng = gather_object([capture_rng()])
    trainable = task.trainable_state(accelerator.unwrap_model(run.model))
    if accelerator.is_main_process:
        save_checkpoint(
            run.out, model=trainable, optimizer=run.optimizer.state_dict(), state=state, rng=rng,
            config_yaml=dump_config(run.config, task.name), ema=task.ema_state(),
            keep=run.config.run.keep_checkpoints,
        )  # fmt: skip
    accelerator.wait_for_everyone()


def _summary(run: _Run, stopped: bool) -> dict[str, Any]:
    """Step count, first and last losses (single and windowed means), speed and skip counts."""
    accelerator, losses = run.accelerator, run.losses
    skipped = accelerator.reduce(
        torch.tensor(run.batches.skipped, device=accelerator.device), reduction="sum"
    )
    window = max(1, min(10, len(losses) // 3 or 1))
    return {
        "steps": run.state.step,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_first_mean": sum(losses[:window]) / window if losses else None,
        "loss_last_mean": sum(losses[-window:]) / window if losses else None,
        "samples_per_second": run.speed(),
        "skipped_samples": int(skipped),
        "empty_batches": run.batches.empty_batches,
        "nonfinite_steps": run.nonfinite_steps,
        "stopped_by_signal": stopped,
        "output_dir": str(run.out),
    }


def _finish(run: _Run, metrics: dict[str, Any], evaluation: dict[str, Any] | None, *, stopped: bool) -> dict:
    """Summary, ``eval_end/*`` and (unless stopped) ``final/`` with its config; then close the trackers."""
    accelerator = run.accelerator
    run.bar.close()
    metrics.update(_summary(run, stopped))
    if accelerator.is_main_process:
        if evaluation is not None:
            metrics.update(_evaluate(run, evaluation, "eval_end"))
        if not stopped:
            run.task.save_final(run.out / FINAL)
            save_config(run.config, run.out / FINAL / "config.yaml", run.task.name)
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:
        tracker.finish()
    # The process group is left up: destroying a gloo group can deadlock (see faceclip.cli._process.finish,
    # which ends the command's processes).
    return metrics
