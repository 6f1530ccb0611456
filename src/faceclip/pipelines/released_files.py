"""Released checkpoint files, for every family: finding them, saying which are missing, and the cache of their
conversion to safetensors.

The released ``.pt`` pickles are converted once into a cache folder (``$FACECLIP_CACHE``, default
``$HF_HOME/faceclip``); later starts load the converted files and need neither the pickles nor the network. A
conversion is redone when a released file on disk changed since (size or modification time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from faceclip.hub import WeightsNotFoundError, hub_unreachable_reason, is_offline, resolve_file

logger = logging.getLogger(__name__)

CONVERSION_RECORD = "conversion.json"


def default_cache_dir() -> Path:
    """``$FACECLIP_CACHE`` if set, else ``$HF_HOME/faceclip`` (``~/.cache/huggingface/faceclip``)."""
    if os.environ.get("FACECLIP_CACHE"):
        return Path(os.environ["FACECLIP_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "faceclip"


def converted_dir(
    model: str | os.PathLike, cache_dir: str | os.PathLike | None = None, kind: str = ""
) -> Path:
    """Where the converted safetensors of the released weights at ``model`` live (or will live).

    ``kind`` tells families apart whose files share one repo (``ByteDance/FaceCLIP`` holds both).
    """
    local = Path(model).expanduser()
    key = str(local.resolve()) if local.is_dir() else str(model)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", key.strip("/"))[-60:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return (
        Path(cache_dir or default_cache_dir()) / "converted" / f"{slug}{'-' + kind if kind else ''}-{digest}"
    )


@dataclass(frozen=True)
class MissingFile:
    """A file that was looked for and not found: what it is, in which source, under which name(s), and where."""

    what: str
    source: str
    filenames: tuple[str, ...]
    where: str


@dataclass
class FileSearch:
    """Looks up the files a family needs from several sources and collects what is missing, to report it all
    at once (:meth:`raise_if_missing`) rather than one file per attempt."""

    title: str
    """The family's name, for the message (``FaceT5-FLUX``)."""
    found: dict[str, Path] = field(default_factory=dict)
    missing: list[MissingFile] = field(default_factory=list)

    def find(self, source: str | os.PathLike, filename: str, what: str) -> Path | None:
        """The file ``filename`` of ``source`` (a folder or hub repo), or ``None`` (then recorded as missing)."""
        missing = self._look(source, filename, what)
        if missing is not None:
            self.missing.append(missing)
        return self.found.get(filename)

    def find_first(self, source: str | os.PathLike, filenames: Sequence[str], what: str) -> str | None:
        """The first of ``filenames`` that ``source`` has (its name), or ``None`` (recorded as missing)."""
        tried = [self._look(source, name, what) for name in filenames if not self.found.get(name)]
        for name in filenames:
            if name in self.found:
                return name
        self.missing.append(
            MissingFile(f"{what} (either file)", str(source), tuple(filenames), tried[0].where)
        )
        return None

    def _look(self, source, filename: str, what: str) -> MissingFile | None:
        try:
            self.found[filename] = resolve_file(source, filename, what=what)
        except WeightsNotFoundError as err:
            where = next((line for line in str(err).splitlines() if line.startswith("Looked in:")), "")
            return MissingFile(what, str(source), (filename,), where.removeprefix("Looked in: ").rstrip("."))
        return None

    def raise_if_missing(self, local_folders_hint: str) -> None:
        """Raise one :class:`WeightsNotFoundError` listing every missing file and how to get it.

        Args:
            local_folders_hint: the sentence saying which local folders can replace the hub repos.
        """
        if not self.missing:
            return
        lines = [f"{self.title} cannot be loaded: {len(self.missing)} required file(s) not found."]
        lines += [f"  - {m.what}: {' or '.join(m.filenames)} (looked in {m.where})" for m in self.missing]
        lines.append("To fix this, download them while online:")
        by_source: dict[str, list[str]] = {}
        for item in self.missing:
            by_source.setdefault(item.source, []).append(item.filenames[0])
        for source, names in by_source.items():
            if Path(source).expanduser().exists():
                lines.append(f"    put {' '.join(names)} inside {source}")
            else:
                lines.append(f"    hf download {source} {' '.join(names)}")
        lines.append(local_folders_hint)
        if is_offline():
            lines.append("HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched.")
        elif hub_unreachable_reason():
            lines.append(
                f"The Hugging Face hub could not be reached ({hub_unreachable_reason()}), so the local cache was "
                "searched instead; check the network connection, or set HF_HUB_OFFLINE=1 to skip the hub."
            )
        raise WeightsNotFoundError("\n".join(lines))


def read_config(path: Path, fix: str) -> dict:
    """A JSON config file (a UTF-8 JSON object), or a ValueError naming it and saying ``fix``."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a readable JSON config; {fix}")
    return config


def _current_file(model: str | os.PathLike, filename: str) -> Path | None:
    """The released file if it is on disk right now (no download)."""
    local = Path(model).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(model), filename)
    return Path(cached) if isinstance(cached, str) else None


def fingerprint(path: Path) -> dict[str, object]:
    """What identifies a released file's version cheaply: its real path, size and modification time."""
    real = path.resolve()
    stat = real.stat()
    return {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def conversion_outdated(target: Path, model: str | os.PathLike, filenames: Sequence[str]) -> bool:
    """True if ``target`` holds no finished conversion, or a released file on disk changed since it was made."""
    record_path = target / CONVERSION_RECORD
    if not record_path.is_file():
        return True
    try:
        files = json.loads(record_path.read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        files = None
    if not isinstance(files, dict):
        logger.warning("%s is damaged; converting again", record_path)
        return True
    for filename in filenames:
        current = _current_file(model, filename)
        if current is not None and fingerprint(current) != files.get(filename):
            logger.info("%s changed since it was converted; converting again", current)
            return True
    return False


@contextlib.contextmanager
def conversion_folder(target: Path, model: str | os.PathLike, files: dict[str, Path]) -> Iterator[Path]:
    """A staging folder to convert into; on success it gets the conversion record and replaces ``target``.

    Args:
        target: the cache folder of the conversion.
        model: the released model argument (recorded).
        files: the released files converted, by their names in the repo (fingerprinted in the record).
    """
    from faceclip.outputs import give_usual_permissions

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        record = {"source": str(model), "files": {name: fingerprint(path) for name, path in files.items()}}
        (staging / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
        give_usual_permissions(staging)  # a shared cache: readable by whoever may read the user's files
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
