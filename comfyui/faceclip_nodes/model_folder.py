"""The ``models/faceclip/`` folder: registered with ComfyUI's ``folder_paths`` when ComfyUI is there.

Each entry of the folder is one encoder choice: a released file (``face_clip_encoder.pt`` / ``.safetensors``)
or a folder in our layout (``config.json`` + safetensors, as ``faceclip convert`` writes it).
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_NAME = "faceclip"
"""The ``folder_paths`` key and the folder under ComfyUI's ``models/``."""

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


def _folder_paths():
    """ComfyUI's ``folder_paths`` module, or ``None`` outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def register_model_folder() -> None:
    """Add ``models/faceclip`` to ComfyUI's model folders (and to ``extra_model_paths.yaml``'s keys)."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return
    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    if default not in _registered(folder_paths):
        folder_paths.add_model_folder_path(FOLDER_NAME, default)


def _registered(folder_paths) -> list[str]:
    """The folders ComfyUI has for :data:`FOLDER_NAME` (none before it is registered)."""
    entry = folder_paths.folder_names_and_paths.get(FOLDER_NAME)
    return list(entry[0]) if entry else []


def model_folders() -> list[Path]:
    """The folders searched for encoders (none outside ComfyUI)."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return []
    return [Path(p) for p in _registered(folder_paths)]


def is_encoder_entry(path: Path) -> bool:
    """A released weights file, or a folder holding ``config.json``."""
    if path.is_dir():
        return (path / "config.json").is_file()
    return path.is_file() and path.suffix in WEIGHT_SUFFIXES


def encoder_choices(tiny: str, folders: list[Path] | None = None) -> list[str]:
    """The encoder names a user can pick: every entry of the model folders, then ``tiny`` (random weights)."""
    names = []
    for folder in model_folders() if folders is None else folders:
        if folder.is_dir():
            names += sorted(entry.name for entry in folder.iterdir() if is_encoder_entry(entry))
    return [*dict.fromkeys(names), tiny]


def find_encoder(name: str, folders: list[Path] | None = None) -> Path | None:
    """The path of choice ``name`` in the model folders, or ``None``."""
    for folder in model_folders() if folders is None else folders:
        path = folder / name
        if is_encoder_entry(path):
            return path
    return None
