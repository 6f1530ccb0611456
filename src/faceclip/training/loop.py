"""The training loop shared by both stages, on Hugging Face Accelerate.

One code path from one CPU process to many GPUs: ``accelerate launch`` picks DDP (default), FSDP or DeepSpeed;
the loop does gradient accumulation, clipping, non-finite-loss skipping, logging (progress bar, TensorBoard),
atomic checkpoints every N steps and on SIGTERM, and exact resumption (model, optimiser, schedule, RNG, data
position).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceclip.training.checkpoint import (
    TrainingState,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from faceclip.training.config import OptimConfig, save_config, to_dict
from faceclip.training.data import NoReadableSampleError, build_dataloader, eval_batch

logger = logging.getLogger(__name__)


MAX_EMPTY_BATCHES = 100  # batches in a row without a readable sample before the run stops


class NonFiniteLossError(RuntimeError):
    """Raised after ``run.max_nonfinite_steps`` non-finite losses in a row."""


def _require_accelerate():
    try:
        import accelerate
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('Training needs accelerate: pip install "faceclip[train]"') from err
    return accelerate


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


def make_schedule(config: OptimConfig, max_steps: int):
    """LR multiplier per step: linear warm-up, then constant, linear or cosine decay to 0."""
    if config.scheduler not in ("constant", "linear", "cosine"):
        raise ValueError(f"optim.scheduler must be constant, linear or cosine, got '{config.scheduler}'.")

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
        if config.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if config.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


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


def _config_yaml(config, stage: str) -> str:
    import yaml

    return yaml.safe_dump({"stage": stage, **to_dict(config)}, sort_keys=False)


def fit(task, config, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train ``task`` (a :class:`~faceclip.training.stage1.Stage1Task` or ``Stage2Task``) as ``config`` says.

    Returns:
        Final metrics (the same dict on every process): losses, samples/s, skipped samples, evaluation.

    Raises:
        NonFiniteLossError: too many non-finite losses in a row.
        FileNotFoundError: ``resume`` names no checkpoint.
    """
    _require_accelerate()
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object
    from tqdm.auto import tqdm

    run, stage = config.run, task.name
    out = Path(run.output_dir)
    accelerator = Accelerator(
        mixed_precision=run.mixed_precision,
        log_with="tensorboard" if run.tensorboard else None,
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=run.find_unused_parameters)],
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        logger.warning("%s: checkpoints hold gathered trainable weights; optimiser state is gathered too",
                       accelerator.distributed_type)  # fmt: skip
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    if main:
        save_config(config, out / "config.yaml", stage)
    if run.tensorboard:
        accelerator.init_trackers(f"faceclip-{stage}")

    params = task.trainable_parameters()
    optimizer = make_optimizer(params, config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(config.optim, run.max_steps))
    state = TrainingState()
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        task.load_trainable_state(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.state.lr_scheduler)
        if ckpt.ema is not None:
            task.load_ema_state(ckpt.ema)
        state = ckpt.state
        logger.info("resuming from %s at step %d", ckpt.path, state.step)
    task.to(accelerator.device)
    task.model.train()
    model, optimizer = accelerator.prepare(task.model, optimizer)
    if ckpt is not None:
        if len(ckpt.rng) == world:
            restore_rng(ckpt.rng[rank])
        else:
            logger.warning("--resume: the checkpoint has %d processes' RNG states, this run %d; not restored",
                           len(ckpt.rng), world)  # fmt: skip

    data, accum = config.data, run.gradient_accumulation_steps
    per_step = data.batch_size * world * accum
    dims = task.synthetic_target_dims() if data.source == "synthetic" else None
    start = state.samples_seen // (data.batch_size * world)
    loader = build_dataloader(data, rank=rank, world_size=world, start_batch=start, target_dims=dims)
    metrics: dict[str, Any] = {"stage": stage, "world_size": world, "global_batch": per_step}
    evaluation = eval_batch(data, run.eval_samples, dims) if main and run.eval_samples > 0 else None
    if evaluation is not None:
        metrics.update(
            {
                f"eval_start/{k}": v
                for k, v in task.evaluate(_to_device(evaluation, accelerator.device)).items()
            }
        )

    losses, skipped, nonfinite, stopped, empty_batches = [], 0, 0, False, 0
    bar = tqdm(total=run.max_steps, initial=state.step, disable=not (main and run.progress_bar), desc=stage)
    iterator = iter(loader)
    started, samples_timed = time.perf_counter(), 0
    global_batch = data.batch_size * world

    def next_batch() -> tuple[dict[str, Any], int]:
        """This process's next batch and the stream position of its global batch. A global batch in which some
        process got no readable sample is skipped by all processes together (counted), so they stay in step
        and the data position stays exact for --resume."""
        nonlocal skipped, empty_batches
        for _ in range(MAX_EMPTY_BATCHES):
            batch, position = next(iterator), state.samples_seen
            state.samples_seen += global_batch
            skipped += batch["skipped"]
            empty = torch.tensor(float(not batch["caption"]), device=accelerator.device)
            if world > 1:
                empty = accelerator.reduce(empty, reduction="sum")
            if empty.item() == 0:
                return batch, position
            empty_batches += 1
            skipped += len(batch["caption"])  # this process's readable samples, dropped with the global batch
            logger.warning("a batch with no readable sample was skipped (%d so far)", empty_batches)
        raise NoReadableSampleError(
            f"data.source: {MAX_EMPTY_BATCHES} batches in a row had no readable sample; check the data "
            "(the warnings above name the unreadable images)."
        )

    with _StopRequest() as stop:
        while state.step < run.max_steps:
            step_loss, logs = torch.zeros((), device=accelerator.device), {}
            for micro in range(accum):
                batch, position = next_batch()
                batch = _to_device(batch, accelerator.device)
                # Each sample's place in the global stream: per-sample randomness (stage 2) keys on it.
                first = position + rank * data.batch_size
                batch["position"] = torch.arange(first, first + len(batch["caption"]))
                sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    output = model(batch)
                    accelerator.backward(output.loss / accum)
                step_loss += output.loss.detach().float() / accum
                logs = output.logs
            flags = torch.tensor(
                [float(not torch.isfinite(step_loss)), float(stop.requested)], device=accelerator.device
            )
            flags = accelerator.reduce(flags, reduction="sum")
            loss_value = accelerator.reduce(step_loss, reduction="mean").item()
            if flags[0] > 0:
                optimizer.zero_grad(set_to_none=True)
                nonfinite += 1
                state.nonfinite_in_a_row += 1
                logger.warning(
                    "step %d: non-finite loss, update skipped (%d in a row)",
                    state.step,
                    state.nonfinite_in_a_row,
                )
                if state.nonfinite_in_a_row >= run.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{state.nonfinite_in_a_row} non-finite losses in a row (run.max_nonfinite_steps); "
                        "lower optim.lr, check the data, or use run.mixed_precision=bf16 rather than fp16."
                    )
            else:
                state.nonfinite_in_a_row = 0
                if config.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                task.after_step()
                losses.append(loss_value)
            scheduler.step()
            state.step += 1
            samples_timed += per_step
            speed = samples_timed / max(time.perf_counter() - started, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_per_s=f"{speed:.1f}")
            if state.step % run.log_every == 0 or state.step == run.max_steps:
                entry = {"loss": loss_value, "lr": scheduler.get_last_lr()[0], "samples_per_second": speed}
                entry.update({k: float(v) for k, v in logs.items()})
                state.metrics = entry
                accelerator.log(entry, step=state.step)
                logger.debug("step %d %s", state.step, entry)
            stopped = bool(flags[1] > 0)
            if stopped or state.step % run.checkpoint_every == 0 or state.step == run.max_steps:
                state.lr_scheduler = scheduler.state_dict()
                _checkpoint(accelerator, task, model, optimizer, state, config, gather_object)
            if stopped:
                logger.warning("stopped by SIGTERM at step %d; resume with --resume %s", state.step, out)
                break
    bar.close()

    total_skipped = int(accelerator.reduce(torch.tensor(skipped, device=accelerator.device), reduction="sum"))
    window = max(1, min(10, len(losses) // 3 or 1))
    metrics.update({
        "steps": state.step,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_first_mean": sum(losses[:window]) / window if losses else None,
        "loss_last_mean": sum(losses[-window:]) / window if losses else None,
        "samples_per_second": samples_timed / max(time.perf_counter() - started, 1e-9),
        "skipped_samples": total_skipped,
        "empty_batches": empty_batches,
        "nonfinite_steps": nonfinite,
        "stopped_by_signal": stopped,
        "output_dir": str(out),
    })  # fmt: skip
    if main:
        if evaluation is not None:
            metrics.update(
                {
                    f"eval_end/{k}": v
                    for k, v in task.evaluate(_to_device(evaluation, accelerator.device)).items()
                }
            )
        if not stopped:
            task.save_final(out / "final")
            save_config(config, out / "final" / "config.yaml", stage)
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:
        tracker.finish()
    # The process group is left up: destroying a gloo group can deadlock (see faceclip.cli._process.finish,
    # which ends the command's processes).
    return metrics


def _checkpoint(accelerator, task, model, optimizer, state: TrainingState, config, gather_object) -> None:
    rng = gather_object([capture_rng()])
    trainable = task.trainable_state(accelerator.unwrap_model(model))
    if accelerator.is_main_process:
        save_checkpoint(
            config.run.output_dir, model=trainable, optimizer=optimizer.state_dict(), state=state, rng=rng,
            config_yaml=_config_yaml(config, task.name), ema=task.ema_state(), keep=config.run.keep_checkpoints,
        )  # fmt: skip
    accelerator.wait_for_everyone()
