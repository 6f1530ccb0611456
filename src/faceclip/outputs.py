"""Writing output files whole or not at all: PNGs that carry their generation settings, text and JSON files,
and contact-sheet grids."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin


def save_png(
    image: Image.Image,
    path: str | os.PathLike,
    metadata: Mapping[str, object] | None = None,
    *,
    overwrite: bool = True,
) -> Path:
    """Save ``image`` as PNG with ``metadata`` in text chunks, atomically (temporary file, then rename).

    Each metadata entry becomes one ``tEXt``/``iTXt`` chunk; non-string values are stored as JSON. The whole
    mapping is also stored as JSON under the key ``"faceclip"``, so it can be read back with :func:`read_png_metadata`.

    Args:
        overwrite: replace a file already at ``path``. Without it, an existing file is kept and the image goes
            to the first free name of ``stem-2.png``, ``stem-3.png``, ... (see :func:`atomic_file`).

    Returns:
        The path written.
    """
    info = PngImagePlugin.PngInfo()
    meta = dict(metadata or {})
    for key, value in meta.items():
        info.add_itxt(str(key), value if isinstance(value, str) else json.dumps(value))
    info.add_itxt("faceclip", json.dumps(meta, default=str))
    with atomic_file(path, "wb", overwrite=overwrite) as handle:
        image.save(handle, format="PNG", pnginfo=info)
    return Path(handle.final_path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; returns the path."""
    path = Path(path)
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True) -> Iterator:
    """Open a temporary file beside ``path``; when the block ends without an error, move it onto ``path``.

    An error (or interruption) removes the temporary file and leaves any earlier ``path`` untouched. The file
    gets the usual permissions (``0666`` less the umask), not ``mkstemp``'s private ``0600``.

    Args:
        overwrite: replace an existing ``path``. Without it an existing file is never replaced: the file is
            published under the first free name of ``stem-2.ext``, ``stem-3.ext``, ... with a hard link, which
            fails instead of replacing, so two writers at once never take the same name.

    The handle's ``final_path`` attribute holds the path written once the block has ended.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        give_usual_permissions(tmp)
        handle.final_path = _publish(Path(tmp), path, overwrite)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _publish(tmp: Path, path: Path, overwrite: bool) -> Path:
    """Move the finished ``tmp`` to ``path`` (or, without ``overwrite``, to the first free variant of it)."""
    if overwrite:
        os.replace(tmp, path)
        return path
    for number in range(1, 100_000):
        candidate = path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            continue
        except (
            OSError
        ):  # no hard links here (some network and FAT file systems): claim the name, then replace
            try:
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os.replace(tmp, candidate)
        return candidate
    raise FileExistsError(f"no free name left for {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` for a writer that wants a name, not a handle; when the block
    ends without an error, rename what it wrote there (a file or a folder) onto ``path``.

    For writers such as ``safetensors.torch.save_file`` or ``save_pretrained(folder)``. Nothing exists at the
    yielded path when the block starts. An error (or interruption) removes whatever was written there and leaves
    ``path`` as it was. The result gets the usual permissions (see :func:`give_usual_permissions`). A folder can
    only replace a missing ``path`` or an empty folder.
    """
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} (meant for {path})")
        give_usual_permissions(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def output_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot receive outputs, or ``None`` when it can; nothing is created.

    An existing folder must accept a file; a missing one must lie under a writable folder (it is created when
    the first file is written, so a run that fails before that leaves no empty folder behind).
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            return f"'{folder}' is a file, not a folder; choose a folder."
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".faceclip-write-test-"):
                pass
        except OSError as error:
            return f"cannot write to the output folder '{folder}': {error.strerror or error}; choose another."
        return None
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create the output folder '{folder}': '{parent}' is a file; choose another."
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create the output folder '{folder}': '{parent}' is not writable; choose another."
    return None


def give_usual_permissions(path: str | os.PathLike) -> None:
    """chmod ``path`` (and, for a folder, everything in it) to ``0666``/``0777`` less the umask.

    Temporary files and some writers (safetensors) create private ``0600`` files; a finished output should be
    as readable as any other file the user creates.
    """
    mask = _umask()
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def generation_metadata(
    *,
    prompt: str,
    negative_prompt: str,
    seed: int,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    model: str,
    family: str | None = None,
    true_cfg: float | None = None,
    face_file: str | None,
    face_sha256: str | None,
    face_index: int | None,
    scheduler: object | None,
    dtype: object | None,
) -> dict[str, object]:
    """The metadata of one generated image, as ``faceclip generate`` and the demo record it.

    With it (and the face photo), the image can be made again with ``faceclip generate`` (``--family``,
    ``--guidance-scale``, ``--true-cfg`` where the family has true CFG, ...).
    """
    from faceclip import __version__

    return {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        **({"true_cfg": true_cfg} if true_cfg is not None else {}),
        "size": f"{height}x{width}",
        "model": model,
        **({"family": family} if family is not None else {}),
        "face_file": face_file,
        "face_sha256": face_sha256,
        "face_index": face_index,
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "faceclip_version": __version__,
    }


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (the metadata records which photo an image was made from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_png_metadata(path: str | os.PathLike) -> dict:
    """Read back the metadata written by :func:`save_png` (an empty dict if there is none)."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}) or {}
    return json.loads(text["faceclip"]) if "faceclip" in text else {}


def make_grid(
    images: Sequence[Image.Image], cols: int | None = None, pad: int = 4, fill=(255, 255, 255)
) -> Image.Image:
    """Tile ``images`` (resized to the first one's size) into a contact sheet with ``cols`` columns."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    cols = cols or min(len(images), 4)
    rows = -(-len(images) // cols)
    width, height = images[0].size
    sheet = Image.new("RGB", (cols * width + (cols + 1) * pad, rows * height + (rows + 1) * pad), fill)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        tile = (
            image.convert("RGB").resize((width, height))
            if image.size != (width, height)
            else image.convert("RGB")
        )
        sheet.paste(tile, (pad + c * (width + pad), pad + r * (height + pad)))
    return sheet
