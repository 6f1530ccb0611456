"""The released ``model/dit.pt`` -> a diffusers ``FluxTransformer2DModel`` folder (config + safetensors shards).

``dit.pt`` already uses diffusers' key names (a full fine-tune of FLUX.1-dev's transformer), so converting is
checking every key and shape against the architecture and re-writing the tensors as safetensors. Memory stays
bounded whatever the file's size (23.8 GB for the released file): the pickle is memory-mapped afresh for each
output shard and tensors are written one at a time (:func:`faceclip.convert.facet5_files.write_safetensors`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from faceclip.convert.faceclip_encoder import CheckpointKeyError
from faceclip.convert.facet5_files import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, _plan_shards, write_safetensors
from faceclip.convert.finite import NonFiniteTensors

logger = logging.getLogger(__name__)

PREFIXES = ("module.", "model.")
"""Wrapper prefixes a training script may leave on every key (stripped when every key has one)."""


def load_transformer_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Memory-map ``dit.pt`` (``torch.load(weights_only=True, mmap=True)``: never executing code).

    Raises:
        faceclip.hub.WeightsFileError: the file is empty, cut short, not a zip-format state dict of tensors, or
            holds more than tensors (a ``ValueError``; the message names the file and what to do).
    """
    from faceclip.hub import read_state_dict_file
    from faceclip.pipelines.flux.family import RELEASED_REPO, RELEASED_TRANSFORMER_FILE

    released = f"{RELEASED_REPO} {RELEASED_TRANSFORMER_FILE}"
    obj = read_state_dict_file(
        path,
        advice=f"Pass the released {RELEASED_TRANSFORMER_FILE} (hf download {released}).",
        allow_legacy=False,
    )
    for prefix in PREFIXES:
        if obj and all(key.startswith(prefix) for key in obj):
            obj = {key.removeprefix(prefix): value for key, value in obj.items()}
    return obj


def expected_transformer_layout(config: Mapping) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every key of a ``FluxTransformer2DModel`` built from ``config``, with its shape (built on the meta device)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(dict(config))
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def check_transformer_keys(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple], where: str
) -> None:
    """Raise :class:`CheckpointKeyError` naming every missing, unexpected or mis-shaped key."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} in the file, {expected[key][0]} expected"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != expected[key][0]
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{where} does not match the FLUX.1-dev transformer architecture:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            lines.append(f"  {len(keys)} {title}: " + ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else ""))
    lines.append("Pass the released model/dit.pt with the transformer config of FLUX.1-dev (--base-model).")
    raise CheckpointKeyError("\n".join(lines))


def convert_released_transformer(
    source: str | os.PathLike,
    config: Mapping,
    out_dir: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 << 30,
) -> Path:
    """Convert ``dit.pt`` into a ``FluxTransformer2DModel`` folder; the folder appears whole or not at all.

    Args:
        source: the released ``dit.pt``.
        config: the transformer config (FLUX.1-dev's ``transformer/config.json``).
        out_dir: the folder to create.
        torch_dtype: cast floating weights; ``None`` keeps the file's (bf16).
        max_shard_bytes: the size above which a new shard starts.

    Tensors holding NaN or infinity are counted as they pass, in one warning naming the file.

    Raises:
        faceclip.hub.WeightsFileError: the file is not a tensor checkpoint (a ``ValueError``).
        CheckpointKeyError: keys or shapes do not match the architecture.
    """
    from faceclip.outputs import atomic_path

    path = Path(source)
    released = load_transformer_state_dict(path)
    expected = expected_transformer_layout(config)
    check_transformer_keys(released, expected, str(path))
    layout = [
        (
            key,
            expected[key][0],
            torch_dtype if torch_dtype and released[key].is_floating_point() else released[key].dtype,
        )
        for key in expected
    ]
    del released
    shards = _plan_shards(layout, max_shard_bytes)
    names = [WEIGHTS_NAME] if len(shards) == 1 else [
        f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]  # fmt: skip
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _save_config(tmp, config)
        nonfinite = NonFiniteTensors(path)
        for name, shard in zip(names, shards, strict=True):
            write_safetensors(tmp / name, _shard_tensors(path, shard, nonfinite), shard)
        if len(shards) > 1:
            total = sum(torch.Size(shape).numel() * dtype.itemsize for _key, shape, dtype in layout)
            weight_map = {
                key: name for name, shard in zip(names, shards, strict=True) for key, _s, _d in shard
            }
            (tmp / WEIGHTS_INDEX_NAME).write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            )
    nonfinite.warn()
    logger.info("Converted %s -> %s (%d shards).", path, out_dir, len(shards))
    return Path(out_dir)


def _save_config(folder: Path, config: Mapping) -> None:
    """Write ``config.json`` as diffusers' ``save_config`` does, without building the model."""
    from diffusers import FluxTransformer2DModel

    data = {
        "_class_name": FluxTransformer2DModel.__name__,
        **{k: v for k, v in config.items() if not k.startswith("_")},
    }
    (folder / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _shard_tensors(
    path: Path, shard: list[tuple], nonfinite: NonFiniteTensors
) -> Iterator[tuple[str, torch.Tensor]]:
    """Map the file afresh and yield the shard's tensors in order, each counted by ``nonfinite`` as it passes;
    the mapping is released afterwards."""
    released = load_transformer_state_dict(path)
    try:
        for name, _shape, dtype in shard:
            yield name, nonfinite.check(name, released[name]).to(dtype)
    finally:
        released.clear()
