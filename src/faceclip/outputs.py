"""Writing generated images: PNG files that carry their generation settings, and contact-sheet grids."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin


def save_png(
    image: Image.Image, path: str | os.PathLike, metadata: Mapping[str, object] | None = None
) -> Path:
    """Save ``image`` as PNG with ``metadata`` in text chunks, atomically (temporary file, then rename).

    Each metadata entry becomes one ``tEXt``/``iTXt`` chunk; non-string values are stored as JSON. The whole
    mapping is also stored as JSON under the key ``"faceclip"``, so it can be read back with :func:`read_png_metadata`.
    """
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    meta = dict(metadata or {})
    for key, value in meta.items():
        info.add_itxt(str(key), value if isinstance(value, str) else json.dumps(value))
    info.add_itxt("faceclip", json.dumps(meta, default=str))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=info)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
