"""What a training stage gives the loop: :class:`TrainingTask`, and :class:`StepOutput` from its model.

:func:`faceclip.training.loop.fit` drives any object with these members; ``Stage1Task`` and ``Stage2Task``
are the two the project ships. The loop never looks inside the model: it calls ``task.model(batch)`` for a
:class:`StepOutput`, steps an optimiser over ``task.trainable_parameters()``, and saves and restores the
tensors the task names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class StepOutput:
    """What the task's model returns for a batch: the scalar loss to back-propagate and values to log."""

    loss: torch.Tensor  # () scalar
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> () scalar


@runtime_checkable
class TrainingTask(Protocol):
    """The interface of a training stage, as :func:`~faceclip.training.loop.fit` uses it.

    ``isinstance(task, TrainingTask)`` checks that every member is present (not their signatures).
    """

    name: str
    """The stage's name (``"stage1"``, ``"stage2"``): saved with the config, used for log names."""

    model: nn.Module
    """``model(batch) -> StepOutput``; the loop wraps it for distributed training and calls ``train()`` on it."""

    def to(self, device: torch.device) -> TrainingTask:
        """Move the model (and any EMA weights) to ``device``; returns ``self``."""
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (a non-empty list)."""
        ...

    def trainable_state(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The trainable tensors by name, of ``model`` (an unwrapped copy) or of ``self.model``."""
        ...

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state`; raises ValueError when the names do not match the config."""
        ...

    def after_step(self) -> None:
        """Called after each optimiser step that was applied (EMA update)."""
        ...

    def ema_state(self) -> dict[str, torch.Tensor] | None:
        """EMA weights by name for a checkpoint, or None without EMA."""
        ...

    def load_ema_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`ema_state`; raises ValueError when the task keeps no EMA."""
        ...

    def synthetic_target_dims(self) -> dict[str, int]:
        """Widths of the precomputed targets synthetic data must carry (``{"image_l": 768, ...}``)."""
        ...

    def evaluate(self, batch: dict[str, Any]) -> dict[str, float]:
        """Metrics on one held-out batch (called on the main process at the start and the end)."""
        ...

    def save_final(self, folder: Path) -> None:
        """Write the trained weights in their loadable form to ``folder``."""
        ...


def missing_members(task: object) -> list[str]:
    """The :class:`TrainingTask` members ``task`` lacks (empty when it satisfies the protocol)."""
    members = [name for name in TrainingTask.__annotations__] + [
        name for name, value in vars(TrainingTask).items() if callable(value) and not name.startswith("_")
    ]
    return sorted(name for name in dict.fromkeys(members) if not hasattr(task, name))
