"""Counting the weights of a converted file that hold NaN or infinity, one tensor at a time as it passes.

Such weights convert (the file is what it is), but every image made with them comes out black or noise, so the
converter warns once at the end, naming the file and how many tensors are affected.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 24
"""Elements checked at once: the check's scratch memory stays at 16 MiB whatever the tensor's size."""


def is_all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor (any shape) holds no NaN or infinity; tensors that are not floating, or have no data
    (the meta device), count as finite."""
    if not tensor.is_floating_point() or tensor.is_meta:
        return True
    flat = tensor.reshape(-1)
    return all(
        bool(torch.isfinite(flat[start : start + CHUNK_ELEMENTS]).all())
        for start in range(0, flat.numel(), CHUNK_ELEMENTS)
    )


class NonFiniteTensors:
    """Tally of the floating tensors read from ``source`` that hold NaN or infinity.

    Call :meth:`check` on each tensor as the conversion passes it, then :meth:`warn` once.
    """

    def __init__(self, source: str | os.PathLike):
        self.source = source
        self.checked = 0
        self.names: list[str] = []

    def check(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Count ``tensor`` (returned unchanged) if it is floating; note ``name`` if it is not all finite."""
        if tensor.is_floating_point():
            self.checked += 1
            if not is_all_finite(tensor):
                self.names.append(name)
        return tensor

    def warn(self) -> int:
        """Log one warning naming the file and the count, if any tensor was not finite; returns the count."""
        if self.names:
            shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
            logger.warning(
                "%s: %d of %d floating-point tensors %s NaN or infinite values (%s); images made with these "
                "weights will be black or noise. Download the file again, or check the training run that wrote it.",
                self.source, len(self.names), self.checked, "holds" if len(self.names) == 1 else "hold", shown,
            )  # fmt: skip
        return len(self.names)
