"""Helpers shared by the tests that start several processes (training and evaluation across processes)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest


@pytest.fixture
def free_port() -> str:
    """A TCP port nobody listens on now, for one process group's rendezvous (never the shared default 29500)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@pytest.fixture
def run_launcher():
    """The :func:`launch_and_wait` helper, for tests that start several processes."""
    return launch_and_wait


def launch_and_wait(cmd: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a multi-process launcher (``torchrun``, ``accelerate launch``) and capture its output.

    If it is still running after ``timeout`` seconds, every process it started prints its Python stack (faulthandler
    on SIGABRT), the whole process group is killed, and the test fails with those stacks, so a hang in CI says where
    it hung instead of only that it timed out.
    """
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _dump_stacks(proc.pid)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        finally:
            _kill_group(proc)
        pytest.fail(f"still running after {timeout:.0f} s: {' '.join(cmd)}\nstdout:\n{out[-4000:]}\n"
                    f"stderr (with the Python stack of every process):\n{err[-30000:]}")  # fmt: skip
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _dump_stacks(pid: int) -> None:
    import psutil

    try:
        launcher = psutil.Process(pid)
        workers = launcher.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    # Workers first, all at once (the launcher stops the others as soon as one dies); their output goes through
    # the launcher's pipes, so the launcher goes last.
    for group in (workers, [launcher]):
        for process in group:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGABRT)
        time.sleep(1.0)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
