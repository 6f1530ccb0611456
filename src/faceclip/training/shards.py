"""WebDataset tar shards of training samples: writing (``faceclip prepare``) and decoding (training).

One sample is a group of tar members sharing a key (the WebDataset convention, readable by the
``webdataset`` library and by open_clip-style loaders):

========================  ===============================================================================
``KEY.jpg``               the training image (JPEG)
``KEY.txt``               the caption (UTF-8)
``KEY.face.png``          the aligned reference face (ArcFace 5-point template, 448 px)
``KEY.json``              ``{"identity": int | null, "identity_name": str | null, "detection": {"box",
                          "score", "landmarks"}, "source": str, "width": int, "height": int}``
``KEY.targets.st``        optional: precomputed target embeddings, a safetensors blob (``image_l``, ...)
========================  ===============================================================================
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from faceclip.outputs import atomic_file
from faceclip.text_input import decode_utf8

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:06d}.tar"


def _require_webdataset():
    try:
        import webdataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Reading and writing training shards needs webdataset: pip install "faceclip[train]"'
        ) from err
    return webdataset


def encode_sample(
    key: str,
    image: Image.Image,
    caption: str,
    face: Image.Image,
    meta: dict[str, Any],
    targets: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The tar members of one sample, as bytes keyed by extension (``__key__`` included)."""
    img_bytes, face_bytes = io.BytesIO(), io.BytesIO()
    image.convert("RGB").save(img_bytes, format="JPEG", quality=95)
    face.convert("RGB").save(face_bytes, format="PNG")
    sample = {
        "__key__": key,
        "jpg": img_bytes.getvalue(),
        "txt": caption.encode("utf-8"),
        "face.png": face_bytes.getvalue(),
        "json": json.dumps(meta).encode("utf-8"),
    }
    if targets:
        sample["targets.st"] = encode_targets(targets)
    return sample


def encode_targets(targets: dict[str, torch.Tensor]) -> bytes:
    """The ``KEY.targets.st`` member: target embeddings as a float32 safetensors blob."""
    from safetensors.torch import save as save_tensors

    return save_tensors({k: v.detach().cpu().float().contiguous() for k, v in targets.items()})


def write_shard(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write encoded samples (see :func:`encode_sample`) to ``path`` atomically; returns how many were written."""
    wds = _require_webdataset()
    count = 0
    with atomic_file(path, "wb") as stream:
        writer = wds.TarWriter(stream)
        for sample in samples:
            writer.write(sample)
            count += 1
        writer.close()
    return count


def iter_raw_samples(
    path: str | Path, on_error: Callable[[Exception], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Group a shard's members by key: ``{"__key__": ..., "jpg": bytes, ...}``.

    A shard that cannot be read (truncated, not a tar) ends with a warning instead of an exception, and
    ``on_error`` (if given) is called with the error, so the caller can count it.
    """
    _require_webdataset()
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    try:
        with open(path, "rb") as stream:
            members = ({**member, "__url__": str(path)} for member in tar_file_iterator(stream))
            yield from group_by_keys(members)
    except Exception as err:  # an unreadable shard is skipped, never fatal
        logger.warning("skipping the rest of shard %s: %s: %s", path, type(err).__name__, err)
        if on_error is not None:
            on_error(err)


def _resize_crop(image: Image.Image, size: int) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """Resize the shorter side to ``size``, centre-crop; returns the image, original (h, w) and crop (top, left)."""
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((rw, rh), Image.Resampling.BICUBIC)
    top, left = (rh - size) // 2, (rw - size) // 2
    return resized.crop((left, top, left + size, top + size)), (h, w), (top, left)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


def decode_sample(
    raw: dict[str, Any], image_size: int, face_size: int, *, image: bool = True
) -> dict[str, Any]:
    """Decode one raw shard sample into training tensors.

    ``image=False`` checks the image's header only and leaves ``image`` out (a cheaper pass, used to replay
    the samples a resumed run skips).

    Returns:
        ``image`` (3, S, S) and ``face`` (3, F, F) in [0, 1], ``caption``, ``identity`` (-1 when unknown),
        ``has_face``, ``original_size`` (h, w), ``crop_top_left`` (top, left), ``targets`` {name: (d,)}.

    Raises:
        ValueError: a member is missing or cannot be decoded, e.g. a caption that is not UTF-8 (the caller counts
            and skips the sample).
    """
    from safetensors.torch import load as load_tensors

    missing = [k for k in ("jpg", "txt", "face.png", "json") if k not in raw]
    if missing:
        raise ValueError(f"sample '{raw.get('__key__')}' lacks {missing}")
    try:
        picture = Image.open(io.BytesIO(raw["jpg"]))
        if image:
            picture.load()
        face = Image.open(io.BytesIO(raw["face.png"]))
        face.load()
        meta = json.loads(raw["json"])
        targets = load_tensors(raw["targets.st"]) if "targets.st" in raw else {}
    except Exception as err:
        raise ValueError(f"sample '{raw.get('__key__')}' is corrupt: {type(err).__name__}: {err}") from err
    caption = decode_utf8(raw["txt"], f"{raw.get('__key__')}.txt")  # NotUTF8Error names the member and line
    if face.size != (face_size, face_size):
        face = face.convert("RGB").resize((face_size, face_size), Image.Resampling.BICUBIC)
    identity = meta.get("identity")
    sample = {
        "key": raw.get("__key__"),
        "face": _to_tensor(face),
        "caption": caption,
        "identity": -1 if identity is None else int(identity),
        "has_face": True,
        "targets": targets,
    }
    if image:
        cropped, sample["original_size"], sample["crop_top_left"] = _resize_crop(
            picture.convert("RGB"), image_size
        )
        sample["image"] = _to_tensor(cropped)
    return sample


def list_shards(folder: str | Path) -> list[Path]:
    """The finished shards in ``folder`` (sorted; half-written temporary files, ``.shard-*.tmp``, excluded)."""
    return sorted(Path(folder).glob("shard-*.tar"))
