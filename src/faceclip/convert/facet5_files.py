"""The released ``face_t5_encoder.pt`` -> a :class:`FaceT5Encoder` folder (``config.json`` + safetensors shards).

Bounded memory, whatever the file's size: the pickle is memory-mapped (``torch.load(weights_only=True,
mmap=True)``) afresh for every output shard, so pages read for one shard are released before the next, and
tensors are written one at a time by a streaming safetensors writer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from faceclip.convert.facet5_encoder import (
    config_from_released_keys,
    convert_released_state_dict,
    load_released_state_dict,
    normalize_released_keys,
    released_key_map,
    resolve_released_file,
)
from faceclip.convert.finite import NonFiniteTensors

logger = logging.getLogger(__name__)

SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
}
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def _target_dtype(our_key: str, tensor: torch.Tensor, torch_dtype: torch.dtype | None) -> torch.dtype:
    """``torch_dtype`` for floating tensors, except T5's ``wo`` (kept in fp32, as transformers keeps it)."""
    if torch_dtype is None or not tensor.is_floating_point():
        return tensor.dtype
    return torch.float32 if ".wo." in our_key else torch_dtype


def write_safetensors(path: Path, tensors: Iterator[tuple[str, torch.Tensor]], layout: list[tuple]) -> None:
    """Write a safetensors file tensor by tensor (each tensor is copied at most once, then released).

    Args:
        path: the file to write.
        tensors: (name, tensor) in ``layout`` order, each already in its final dtype.
        layout: (name, shape, dtype) of every tensor, to write the header first.
    """
    header, offset = {}, 0
    for name, shape, dtype in layout:
        size = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little") + encoded)
        for (name, shape, dtype), (got, tensor) in zip(layout, tensors, strict=True):
            if got != name or tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise RuntimeError(
                    f"write_safetensors: {got} does not match the planned {name} {shape} {dtype}"
                )
            handle.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)


def _plan_shards(layout: list[tuple], max_shard_bytes: int) -> list[list[tuple]]:
    shards: list[list[tuple]] = [[]]
    size = 0
    for entry in layout:
        nbytes = torch.Size(entry[1]).numel() * entry[2].itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def _shard_tensors(
    path: Path, key_map: Mapping, shard: list[tuple], sources: Mapping[str, str], nonfinite: NonFiniteTensors
):
    """Map the file afresh and yield the shard's tensors in order, each counted by ``nonfinite`` as it passes;
    the mapping is released afterwards."""
    released = normalize_released_keys(load_released_state_dict(path))
    try:
        for name, _shape, dtype in shard:
            tensor = released[sources[name]]
            rows = key_map[sources[name]][1]
            if rows is not None:
                block = tensor.shape[0] // 3
                tensor = tensor[rows[0] * block : rows[1] * block]
            yield name, nonfinite.check(sources[name], tensor).to(dtype)
    finally:
        released.clear()


def convert_facet5_encoder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | Mapping = "facet5-flux",
    torch_dtype: torch.dtype | None = None,
    max_shard_bytes: int = 1 << 30,
) -> Path:
    """Convert ``face_t5_encoder.pt`` into a :class:`FaceT5Encoder` folder (``config.json`` + safetensors shards).

    Peak memory stays near ``max_shard_bytes`` plus the largest tensor, whatever the file's size: the file is
    memory-mapped afresh for every shard and tensors are written one at a time. The folder appears whole or
    not at all.

    Args:
        source: the released file, or a folder / hub repo holding ``model/face_t5_encoder.pt``.
        out_dir: the folder to create (must not exist, or be empty).
        config: base config for the sizes the keys do not show (head counts).
        torch_dtype: cast floating weights (``wo`` stays fp32); None keeps the file's (bf16).
        max_shard_bytes: the size above which a new shard starts.
    """
    from accelerate import init_empty_weights

    from faceclip.models.facet5_encoder import FaceT5Encoder, facet5_config
    from faceclip.outputs import atomic_path

    path = resolve_released_file(source)
    released = normalize_released_keys(load_released_state_dict(path))
    base = facet5_config(config) if isinstance(config, str) else dict(config)
    model_config = config_from_released_keys(released, base)
    with init_empty_weights(include_buffers=False):
        model = FaceT5Encoder.from_config(model_config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    converted = convert_released_state_dict(released, model_config, expected)  # checks every key and shape
    key_map = released_key_map(model_config)
    sources = {ours: released_key for released_key, (ours, _rows) in key_map.items()}
    layout = [(key, expected[key], _target_dtype(key, converted[key], torch_dtype)) for key in expected]
    del released, converted
    shards = _plan_shards(layout, max_shard_bytes)
    names = (
        [WEIGHTS_NAME]
        if len(shards) == 1
        else [
            f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            for i in range(len(shards))
        ]
    )
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        model.save_config(tmp)
        nonfinite = NonFiniteTensors(path)
        for name, shard in zip(names, shards):
            write_safetensors(tmp / name, _shard_tensors(path, key_map, shard, sources, nonfinite), shard)
        if len(shards) > 1:
            total = sum(torch.Size(s).numel() * d.itemsize for _k, s, d in layout)
            weight_map = {key: name for name, shard in zip(names, shards) for key, _s, _d in shard}
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2))
    nonfinite.warn()
    logger.info("Converted %s -> %s (%d shards).", path, out_dir, len(shards))
    return Path(out_dir)
