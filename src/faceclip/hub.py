"""Finding weights: a local file or folder, or a Hugging Face hub repo (through the HF cache).

Every loader in the package goes through :func:`resolve_file`, so a missing file always produces the same
kind of error: what is missing, where we looked, and how to get it. Nothing falls back to random weights.
Files that are there are read through :func:`read_state_dict_file` and :func:`read_safetensors`, so an empty,
cut-short or foreign file always produces a :class:`WeightsFileError` naming it and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """Raised when model weights cannot be found locally or in the Hugging Face cache."""


class WeightsFileError(ValueError):
    """A weights file is there but holds no readable tensors: empty, cut short, another kind of file, or a pickle
    holding Python objects besides tensors. The message names the file and what to do."""


def is_offline() -> bool:
    """True when huggingface_hub is in offline mode (``HF_HUB_OFFLINE``, as huggingface_hub itself reads it).

    Only for messages and for callees that do not honour the mode themselves: huggingface_hub's downloads and
    transformers' ``from_pretrained`` keep to the cache on their own.
    """
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


_unreachable: str | None = None
_hub_answered = False


def hub_unreachable_reason() -> str | None:
    """Why the hub could not be reached earlier in this process (then only the cache is searched), or None."""
    return _unreachable


def _connection_failure(err: BaseException) -> str | None:
    """The network error behind a hub error (no DNS, refused, timed out), as ``Type: message``; else None."""
    seen = err
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or name in {"ConnectError", "ConnectTimeout",
                                                                         "gaierror", "ProxyError"}:  # fmt: skip
            return f"{name}: {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


def resolve_file(
    source: str | os.PathLike,
    filename: str,
    *,
    what: str,
    revision: str | None = None,
    hint: str | None = None,
    also_needed: tuple[str, ...] = (),
) -> Path:
    """Return a local path to ``filename`` inside ``source``.

    Args:
        source: a local folder, or a hub repo id such as ``"ByteDance/FaceCLIP"``.
        filename: path of the file inside the folder or repo, e.g. ``"model/face_clip_encoder.pt"``.
        what: a few words naming the file for error messages, e.g. ``"the FaceCLIP encoder weights"``.
        revision: hub revision (branch, tag or commit).
        hint: an extra sentence on how to obtain the file.
        also_needed: other files of the same repo the caller reads next; the suggested download lists them too.

    Raises:
        WeightsNotFoundError: the file is neither on disk nor obtainable from the hub (offline, not cached,
            no network, unknown repo).
    """
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / filename
        if path.is_file():
            return path
        raise WeightsNotFoundError(
            _message(what, f"{path} (no such file in the local folder)", source, filename, hint, also_needed)
        )
    if local.suffix and local.exists():
        return local
    if not is_hub_id(str(source)):
        raise WeightsNotFoundError(
            _message(what, f"{local} (no such file or folder)", source, filename, hint, also_needed)
        )

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    global _unreachable
    _unreachable = _unreachable or _check_hub_before_download(str(source), filename, revision)
    try:  # offline mode is honoured by hf_hub_download; after a connection failure only the cache is searched
        path = hf_hub_download(
            str(source), filename, revision=revision, local_files_only=_unreachable is not None
        )
        return Path(path)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        # After one connection failure, later files are looked up in the cache only (no more retries).
        _unreachable = _unreachable or _connection_failure(err)
        where = f"the Hugging Face cache and hub repo '{source}'"
        if is_offline():
            where += " (HF_HUB_OFFLINE is set)"
        elif _unreachable:
            where += " (the hub could not be reached)"
        raise WeightsNotFoundError(
            _message(what, where, source, filename, hint, also_needed, cause=err)
        ) from err


def _check_hub_before_download(repo_id: str, filename: str, revision: str | None) -> str | None:
    """Why the hub cannot be reached, checked with one quick request before a file the cache lacks; else None.

    Without it, hf_hub_download meets a dead network with a first request and then five retries with backoff
    (about 40 s) before saying so. Cached files and offline mode need no check (they never wait that long).
    """
    from huggingface_hub import try_to_load_from_cache

    global _hub_answered
    if (
        _hub_answered
        or is_offline()
        or try_to_load_from_cache(repo_id, filename, revision=revision) is not None
    ):
        return None
    reason = _probe_hub()
    _hub_answered = reason is None  # checked once per process while the hub answers
    return reason


def _probe_hub() -> str | None:
    """One HEAD request to the hub endpoint (proxies and HF_ENDPOINT honoured, HF_HUB_ETAG_TIMEOUT seconds at
    most): ``Type: message`` when it fails at the network level, None when the hub answers at all."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as err:  # any failure before an HTTP answer: no DNS, refused, timed out, proxy error
        return _connection_failure(err) or f"{type(err).__name__}: {err}"
    return None


WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def is_hub_id(source: str) -> bool:
    """Whether ``source`` has the shape of a hub repo id (``owner/name``).

    Anything else that is not on disk (including ``dir/file.pt``, which has the shape of a hub id) is a local path
    that is missing.
    """
    return not (
        source.startswith((".", "/", "~"))
        or source.count("/") != 1
        or source.lower().endswith(WEIGHT_FILE_SUFFIXES)
    )


def _message(
    what: str,
    where: str,
    source: str | os.PathLike,
    filename: str,
    hint: str | None,
    also_needed: tuple[str, ...] = (),
    cause: Exception | None = None,
) -> str:
    if Path(source).expanduser().exists():
        fix = [f"To fix this, put '{filename}' inside {source},"]
    elif not is_hub_id(str(source)):
        fix = [f"To fix this, check the path: {source} does not exist,"]
    else:
        files = " ".join(dict.fromkeys((filename, *also_needed)))
        fix = ["To fix this, either download it while online, e.g.", f"    hf download {source} {files}"]
    lines = [
        f"Could not find {what}: '{filename}'.",
        f"Looked in: {where}.",
        *fix,
        "or pass the path of a local folder that contains it instead.",
    ]
    if hint:
        lines.append(hint)
    if cause is not None:
        lines.append(
            f"(underlying error: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ reading weights


def read_state_dict_file(path: str | os.PathLike, *, advice: str, allow_legacy: bool = True) -> dict:
    """The tensors of a ``.safetensors`` file or of a pickled ``.pt`` state dict, read without running code.

    A ``.pt`` file is read with ``torch.load(weights_only=True)``, memory-mapped (files in torch's legacy
    pre-zip format cannot be, and are read whole unless ``allow_legacy`` is False); a ``{"state_dict": ...}``
    wrapper is unwrapped.

    Args:
        path: the file.
        advice: what to do about a bad file (one sentence), ending the error message.
        allow_legacy: read legacy-format files (not memory-mapped) rather than refusing them.

    Returns:
        Name -> tensor.

    Raises:
        WeightsFileError: the file is empty, cut short, not a checkpoint, holds objects besides tensors, or (with
            ``allow_legacy=False``) is in the legacy format.
    """
    from collections.abc import Mapping

    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path, advice=advice)[0]
    obj = _torch_load(path, advice, allow_legacy)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(value) for value in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, Mapping) else "a mapping holding other values"
        raise WeightsFileError(f"{path}: expected a state dict (name -> tensor), found {found}. {advice}")
    return dict(obj)


def read_safetensors(path: str | os.PathLike, *, advice: str) -> tuple[dict, dict[str, str]]:
    """The tensors and the metadata of a safetensors file.

    Raises:
        WeightsFileError: the file is empty, cut short or not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _refuse_empty(path, advice)
    try:
        with safe_open(path, "pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118
    except SafetensorError as err:
        reason = str(err).removeprefix("Error while deserializing header: ")
        raise WeightsFileError(
            f"{path}: not a complete safetensors file ({reason}); it is cut short, damaged or another kind of "
            f"file. {advice}"
        ) from err


def _refuse_empty(path: Path, advice: str) -> None:
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsFileError(f"{path}: the file is empty (0 bytes). {advice}")


def _torch_load(path: Path, advice: str, allow_legacy: bool):
    """``torch.load(path, weights_only=True)``, memory-mapped where the format allows, or a WeightsFileError."""
    import pickle
    import warnings

    _refuse_empty(path, advice)
    try:
        with warnings.catch_warnings():  # torch's notice on pickle protocols would come before our message
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return _load_mapped_or_whole(path, advice, allow_legacy)
    except (OSError, WeightsFileError):
        raise  # no permission, a read error: the OS's own message names the file
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise WeightsFileError(f"{path}: not a readable PyTorch checkpoint ({err}). {advice}") from err
        raise WeightsFileError(
            f"{path}: the pickle holds Python objects besides tensors, which could run code when loaded, so "
            f"it is not read (only plain tensor checkpoints are, with weights_only=True). {advice}"
        ) from err
    except Exception as err:  # torch's reader fails on foreign or cut files in many ways (EOF, Key, Runtime)
        raise WeightsFileError(
            f"{path}: not a readable PyTorch checkpoint; it is cut short, damaged or another kind of file. "
            f"{advice}"
        ) from err


def _load_mapped_or_whole(path: Path, advice: str, allow_legacy: bool):
    """``torch.load`` memory-mapped; files in the legacy format are read whole if ``allow_legacy``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:  # files not in torch's zip format (legacy, or foreign) cannot be mapped
        if "mmap" not in str(err):
            raise
    if not allow_legacy:
        raise WeightsFileError(
            f"{path}: not a tensor checkpoint that can be memory-mapped: it is not in torch's zip format (it is "
            f"in the legacy pre-zip format, cut short, or another kind of file). {advice}"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
