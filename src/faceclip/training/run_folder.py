"""A training run's output folder: what marks one, refusing to train into it by accident, clearing it on purpose.

A new run writes ``config.yaml``, ``checkpoints/`` (with ``latest``), TensorBoard logs and ``final/``. Starting
a run in a folder that already holds those would mix two runs (a later ``--resume`` would pick up the other
run's checkpoint), so it is refused unless the run continues the old one (``resume``) or replaces it on purpose
(``overwrite``). A missing or empty folder, or one holding only other files, is fine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
FINAL = "final"
LATEST = "latest"
STAGES = ("stage1", "stage2")


class RunFolderInUseError(FileExistsError):
    """The output folder holds a training run, and the new run neither resumes nor overwrites it."""


def tracker_name(stage: str) -> str:
    """The TensorBoard run name of ``stage``; its logs go to ``OUTPUT/<name>/``."""
    return f"faceclip-{stage}"


def run_contents(folder: str | Path) -> list[str]:
    """The names in ``folder`` that mark a training run (empty for a missing or fresh folder)."""
    folder = Path(folder)
    found = [name for name in (CONFIG_FILE, FINAL, LATEST) if (folder / name).exists()]
    checkpoints = folder / CHECKPOINTS
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        found.append(f"{CHECKPOINTS}/")
    return found


def check_run_folder(folder: str | Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a run in ``folder`` when it holds another run (see the module docstring).

    Raises:
        RunFolderInUseError: ``folder`` holds a run and neither ``resuming`` nor ``overwrite`` is set.
        ValueError: both ``resuming`` and ``overwrite`` are set.
    """
    if resuming and overwrite:
        raise ValueError(
            "--resume continues the run in --out and --overwrite deletes it; give only one of them."
        )
    found = run_contents(folder)
    if found and not (resuming or overwrite):
        raise RunFolderInUseError(
            f"--out '{folder}' already holds a training run ({', '.join(found)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out folder."
        )


def clear_run_folder(folder: str | Path) -> list[str]:
    """Delete what a training run wrote in ``folder`` (other files stay); returns the names deleted."""
    folder = Path(folder)
    names = [CONFIG_FILE, FINAL, LATEST, CHECKPOINTS, *(tracker_name(stage) for stage in STAGES)]
    deleted = []
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        deleted.append(name)
    return deleted
