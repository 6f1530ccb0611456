"""Self-describing, atomic training checkpoints in safetensors.

A checkpoint is a folder ``OUTPUT/checkpoints/step-000100/`` holding:

- ``model.safetensors``: the trainable parameters (what the run changes; frozen weights come from the config);
- ``optimizer.safetensors``: the optimiser's tensors, with its hyper-parameters and scalar state as metadata;
- ``rng.safetensors``: every process's torch (and accelerator) generator state, plus numpy and Python states;
- ``training_state.json``: step, learning-rate schedule, data position, last metrics;
- ``config.yaml``: the full run config, so the folder explains itself;
- optionally ``ema.safetensors``.

Everything is written into a temporary folder that is renamed into place when complete, and ``latest`` (a
one-line file) is replaced atomically after that, so an interrupted save never leaves a half checkpoint that
``--resume`` would pick up.

The format is ours rather than Accelerate's ``save_state``/``load_state``: those write the optimiser, the LR
scheduler and every process's RNG states with ``torch.save`` (pickles, which ``load_state`` reads with
``weights_only=False``, so a checkpoint could run code when loaded). Here every tensor is in safetensors and
everything else is JSON; nothing is unpickled on ``--resume``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from faceclip.hub import WeightsFileError, read_safetensors
from faceclip.outputs import write_text_atomic
from faceclip.training.run_folder import CHECKPOINTS, LATEST

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """What a resumed run needs besides tensors."""

    step: int = 0
    samples_seen: int = 0  # global data position (all processes)
    lr_scheduler: dict[str, Any] = field(default_factory=dict)
    nonfinite_in_a_row: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the CPU)."""

    path: Path
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: TrainingState
    rng: list[dict[str, Any]]
    ema: dict[str, torch.Tensor] | None = None


# --- optimiser state <-> flat tensors -------------------------------------------------------------------------


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Flatten ``optimizer.state_dict()`` into safetensors tensors plus JSON metadata."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    metadata = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in json.loads(metadata["scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json.loads(metadata["param_groups"])}


# --- random number generators -----------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The current process's generator states (torch CPU, each CUDA device, numpy, Python)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda_devices"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda_devices" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_devices"])


def _rng_to_tensors(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = {}, {}
    for rank, st in enumerate(states):
        tensors[f"rank{rank}.torch"] = st["torch"].clone()
        for i, cuda_state in enumerate(st.get("cuda_devices", [])):
            tensors[f"rank{rank}.cuda{i}"] = cuda_state.clone()
        kind, keys, pos, has_gauss, gauss = st["numpy"]
        tensors[f"rank{rank}.numpy"] = torch.from_numpy(keys.astype(np.int64))
        version, internal, gauss_next = st["python"]
        meta[f"rank{rank}"] = json.dumps(
            {
                "numpy": [kind, int(pos), int(has_gauss), float(gauss)],
                "python": [version, list(internal), gauss_next],
            }
        )
    meta["world_size"] = str(len(states))
    return tensors, meta


def _rng_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> list[dict[str, Any]]:
    states = []
    for rank in range(int(meta["world_size"])):
        extra = json.loads(meta[f"rank{rank}"])
        kind, pos, has_gauss, gauss = extra["numpy"]
        version, internal, gauss_next = extra["python"]
        prefix = f"rank{rank}.cuda"
        cuda = [tensors[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in tensors))]
        st = {
            "torch": tensors[f"rank{rank}.torch"],
            "numpy": (kind, tensors[f"rank{rank}.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss),
            "python": (version, tuple(internal), gauss_next),
        }
        if cuda:
            st["cuda_devices"] = cuda
        states.append(st)
    return states


# --- save / load ------------------------------------------------------------------------------------------------


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(
    output_dir: str | Path,
    *,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: TrainingState,
    rng: list[dict[str, Any]],
    config_yaml: str,
    ema: dict[str, torch.Tensor] | None = None,
    keep: int = 0,
) -> Path:
    """Write a checkpoint atomically and point ``latest`` at it.

    Args:
        output_dir: the run's output folder.
        model: trainable parameters by name.
        optimizer: ``optimizer.state_dict()``.
        state: step, data position, schedule.
        rng: one :func:`capture_rng` dict per process, in rank order.
        config_yaml: the run config as YAML text.
        ema: EMA weights, if any.
        keep: keep only the newest ``keep`` checkpoints up to this one (0 keeps all). The checkpoint just
            written is never deleted; older ones (lower steps) are pruned. Checkpoints with *higher* steps
            (left by an abandoned run that this one resumed from an earlier point) are left alone, with a warning.

    Returns:
        The checkpoint folder.
    """
    final = checkpoint_dir(output_dir, state.step)
    # The checkpoint is several files that only make sense together, so they are staged in one folder renamed
    # into place when all are written (per-file atomic writes would not stop a half checkpoint); the files in
    # it need no atomic writes of their own.
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, tmp / "model.safetensors")
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors", metadata=opt_meta)
    rng_tensors, rng_meta = _rng_to_tensors(rng)
    save_file(rng_tensors, tmp / "rng.safetensors", metadata=rng_meta)
    if ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
    (tmp / "training_state.json").write_text(json.dumps(state.__dict__, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_text_atomic(final.parent / LATEST, final.name + "\n")
    if keep > 0:
        _prune(final.parent, state.step, keep)
    logger.info("saved checkpoint %s", final)
    return final


def _checkpoint_steps(folder: Path) -> dict[int, Path]:
    """Finished ``step-NNNNNN`` folders by step (half-written ``.tmp`` folders and other names are ignored)."""
    steps = {}
    for path in folder.glob("step-*"):
        number = path.name[len("step-") :]
        if path.is_dir() and number.isdigit():
            steps[int(number)] = path
    return steps


def _prune(folder: Path, current: int, keep: int) -> None:
    """Keep the checkpoint of step ``current`` and the newest ``keep - 1`` below it; never touch higher steps."""
    steps = _checkpoint_steps(folder)
    older = sorted(s for s in steps if s < current)
    for step in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(steps[step], ignore_errors=True)
    newer = sorted(s for s in steps if s > current)
    if newer:
        logger.warning(
            "%s holds checkpoints of later steps (%s) from an earlier run that this one resumed before; they are "
            "not pruned and `latest` points to step-%06d. Delete them by hand if they are not needed.",
            folder, ", ".join(steps[s].name for s in newer), current,
        )  # fmt: skip


def find_checkpoint(path: str | Path) -> Path:
    """Resolve ``--resume``: a checkpoint folder, or a run's output folder (its ``latest`` checkpoint).

    Raises:
        FileNotFoundError: nothing to resume from, with what was looked at.
    """
    path = Path(path)
    if (path / "training_state.json").is_file():
        return path
    latest = path / CHECKPOINTS / LATEST
    if latest.is_file():
        found = latest.parent / latest.read_text(encoding="utf-8", errors="replace").strip()
        if (found / "training_state.json").is_file():
            return found
        available = ", ".join(p.name for _, p in sorted(_checkpoint_steps(latest.parent).items())) or "none"
        raise FileNotFoundError(
            f"--resume: {latest} points to '{found.name}', which is missing or incomplete (checkpoints there: "
            f"{available}); pass one of them explicitly, e.g. --resume {latest.parent}/step-NNNNNN."
        )
    raise FileNotFoundError(
        f"--resume: no checkpoint at '{path}' (looked for training_state.json there and for {latest}); "
        "pass a run's output folder or one of its checkpoints/step-* folders."
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (``path`` as in :func:`find_checkpoint`).

    Raises:
        FileNotFoundError: nothing to resume from (see :func:`find_checkpoint`).
        CheckpointDamagedError: a file of the checkpoint is cut short or broken (the message names it, and the
            earlier checkpoint to resume from instead, if there is one).
    """
    path = find_checkpoint(path)
    advice = _damaged_advice(path)
    state = _read_training_state(path / "training_state.json", advice)
    opt_tensors, opt_meta = _read_tensors(path / "optimizer.safetensors", advice)
    rng_tensors, rng_meta = _read_tensors(path / "rng.safetensors", advice)
    ema_path = path / "ema.safetensors"
    model = _read_tensors(path / "model.safetensors", advice)[0]
    ema = _read_tensors(ema_path, advice)[0] if ema_path.is_file() else None
    try:
        optimizer = optimizer_from_tensors(opt_tensors, opt_meta)
    except (KeyError, ValueError, TypeError) as err:
        raise _damaged(
            path / "optimizer.safetensors", f"its metadata is incomplete ({err!r})", advice
        ) from err
    try:
        rng = _rng_from_tensors(rng_tensors, rng_meta)
    except (KeyError, ValueError, TypeError) as err:
        raise _damaged(path / "rng.safetensors", f"its metadata is incomplete ({err!r})", advice) from err
    return Checkpoint(path=path, model=model, optimizer=optimizer, state=state, rng=rng, ema=ema)


class CheckpointDamagedError(ValueError):
    """A file of a training checkpoint is cut short or broken; the message names it and says what to do."""


REQUIRED_STATE = {"step": int, "samples_seen": int, "lr_scheduler": dict}
"""The fields of ``training_state.json`` a resumed run cannot do without, with their JSON types."""


def _damaged(file: Path, problem: str, advice: str) -> CheckpointDamagedError:
    return CheckpointDamagedError(f"{file}: {problem}. {advice}")


def _damaged_advice(checkpoint: Path) -> str:
    """What to do about a damaged ``checkpoint``: resume from the newest earlier one, or start over."""
    number = checkpoint.name.removeprefix("step-")
    steps = _checkpoint_steps(checkpoint.parent)
    earlier = [steps[s] for s in sorted(steps) if number.isdigit() and s < int(number)]
    if earlier:
        instead = f"resume from the one before it with --resume {earlier[-1]}, or start over with --overwrite"
    else:
        instead = (
            "there is no earlier checkpoint to resume from: start over with --overwrite instead of --resume"
        )
    return f"The checkpoint {checkpoint.name} is damaged; {instead}."


def _read_tensors(file: Path, advice: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of one safetensors file of a checkpoint, or a CheckpointDamagedError."""
    try:
        return read_safetensors(file, advice=advice)
    except FileNotFoundError as err:
        raise _damaged(file, "missing", advice) from err
    except WeightsFileError as err:
        raise CheckpointDamagedError(str(err)) from err


def _read_training_state(file: Path, advice: str) -> TrainingState:
    """``training_state.json``, checked: UTF-8 JSON, an object, the :data:`REQUIRED_STATE` fields, no others."""
    try:
        values = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(file, "not UTF-8 text", advice) from None
    except json.JSONDecodeError as err:
        raise _damaged(file, f"not valid JSON ({err})", advice) from None
    if not isinstance(values, dict):
        raise _damaged(file, f"holds a JSON {type(values).__name__}, not an object", advice)
    missing = [name for name in REQUIRED_STATE if name not in values]
    unknown = sorted(set(values) - {f.name for f in fields(TrainingState)})
    mistyped = [
        name
        for name, kind in REQUIRED_STATE.items()
        if name in values and (not isinstance(values[name], kind) or isinstance(values[name], bool))
    ]
    problems = {"missing fields": missing, "unknown fields": unknown, "fields of the wrong type": mistyped}
    found = [f"{label}: {', '.join(names)}" for label, names in problems.items() if names]
    if found:
        raise _damaged(file, "; ".join(found), advice)
    return TrainingState(**values)
