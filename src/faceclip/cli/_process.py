"""Ending a command that ran in several processes (``accelerate launch`` / ``torchrun``)."""

from __future__ import annotations

import logging
import os
import sys


def finish(code: int) -> int:
    """Return ``code``; in a process of a ``torch.distributed`` group, end the process with it right away.

    Tearing down a gloo process group can deadlock: its destructor joins the backend's worker threads while
    holding the GIL, and a worker still releasing the last collective's Python tensors waits for the GIL. The
    command's work is done and written by now, so the process flushes its output and exits without running
    those destructors.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
