"""Splitting evaluation work across processes with Hugging Face Accelerate.

Launched with ``accelerate launch`` or ``torchrun`` (CPU processes: ``torchrun``), every process takes a contiguous slice of the work
(:meth:`accelerate.PartialState.split_between_processes`) and the results are gathered back in the original
order (:func:`accelerate.utils.gather_object`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def process_state(cpu: bool | None = None):
    """The Accelerate :class:`~accelerate.PartialState` of this process (one process when not launched).

    Args:
        cpu: run the processes on the CPU (gloo); ``None``: when no accelerator is available. Accelerate joins
            CPU processes started by ``torchrun`` into one group only when this is set.
    """
    from accelerate import PartialState  # a core dependency

    if cpu is None:
        import torch

        cpu = not torch.accelerator.is_available()
    return PartialState(cpu=cpu)


def distributed_map(fn: Callable[[list[T]], list[R]], items: Sequence[T], state=None) -> list[R]:
    """Run ``fn`` on this process's share of ``items``; return all processes' results, in ``items`` order.

    Shares are contiguous slices in process order, so concatenating the gathered lists keeps the order.

    Args:
        fn: maps a list of items to a list of results.
        items: the work, identical on every process.
        state: an Accelerate ``PartialState``; ``None`` runs ``fn`` on all items here, without Accelerate.

    Returns:
        The results of all items, on every process.
    """
    if state is None or state.num_processes == 1:
        return fn(list(items))
    from accelerate.utils import gather_object

    with state.split_between_processes(list(items)) as share:
        local = fn(list(share))
    return gather_object(local)
