"""The FaceT5-FLUX transformer as one safetensors file for ComfyUI's ``models/diffusion_models/``.

ComfyUI's diffusion-model loader (``UNETLoader`` -> ``comfy.sd.load_diffusion_model``) detects FLUX from the keys
of the original (Black Forest Labs) layout: ``double_blocks.0.img_attn.norm.key_norm.scale`` together with
``img_in.weight`` (``comfy.model_detection.detect_unet_config``). A diffusers layout is only renamed as a fallback
(``convert_diffusers_mmdit`` with ``comfy.utils.flux_to_diffusers``). This module writes the original layout,
which ComfyUI reads directly, following the correspondence of ``flux_to_diffusers``:

* q, k and v are one ``qkv`` tensor (rows ``[q; k; v]``) in each double block, for the image and the text stream;
* a single block's ``linear1`` is ``[q; k; v; proj_mlp]``;
* RMSNorm weights are named ``.scale``;
* ``final_layer.adaLN_modulation.1`` holds ``[shift; scale]`` where diffusers' ``norm_out.linear`` holds
  ``[scale; shift]``.

The released ``dit.pt`` (23.8 GB) is never held whole: it is memory-mapped (a converted folder is read tensor by
tensor), and tensors are joined and written one at a time (:func:`faceclip.convert.facet5_files.write_safetensors`),
re-mapping the file every few GB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from faceclip.convert.facet5_files import SAFETENSORS_DTYPES, write_safetensors
from faceclip.convert.finite import NonFiniteTensors
from faceclip.convert.flux_transformer import (
    check_transformer_keys,
    expected_transformer_layout,
    load_transformer_state_dict,
)

SWAP_HALVES = "swap halves"
"""Marks the one tensor whose two halves change places (diffusers [scale; shift] -> original [shift; scale])."""

DOUBLE_BLOCK_PARTS = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn.proj": ("attn.to_out.0",),
    "txt_attn.proj": ("attn.to_add_out",),
    "img_mod.lin": ("norm1.linear",),
    "txt_mod.lin": ("norm1_context.linear",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
}
"""Original double-block modules (weight and bias) -> the diffusers modules joined into each, in row order."""

DOUBLE_BLOCK_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}

SINGLE_BLOCK_PARTS = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}

SINGLE_BLOCK_NORMS = {
    "norm.query_norm.scale": "attn.norm_q.weight",
    "norm.key_norm.scale": "attn.norm_k.weight",
}

OUTER_PARTS = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


class FolderTensors(Mapping):
    """The tensors of a ``FluxTransformer2DModel`` folder's safetensors files, each read only when asked for."""

    def __init__(self, folder: Path):
        from safetensors import SafetensorError, safe_open

        from faceclip.hub import WeightsFileError

        files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
        if not files:
            raise WeightsFileError(
                f"{folder} holds no diffusion_pytorch_model*.safetensors; pass the released dit.pt or a folder "
                "written by faceclip convert --released dit.pt."
            )
        self._where: dict[str, object] = {}
        for file in files:
            try:
                handle = safe_open(str(file), "pt")
            except SafetensorError as err:
                raise WeightsFileError(
                    f"{file}: not a complete safetensors file ({err}); convert dit.pt again."
                ) from err
            self._where.update(dict.fromkeys(handle.keys(), handle))

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shapes(self) -> dict[str, torch.Tensor]:
        """Every tensor as an empty meta tensor of its shape and dtype (from the headers only)."""
        dtypes = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}
        return {
            key: torch.empty(part.get_shape(), dtype=dtypes[part.get_dtype()], device="meta")
            for key, part in ((key, handle.get_slice(key)) for key, handle in self._where.items())
        }

    def clear(self) -> None:
        self._where.clear()


def open_transformer_weights(path: Path) -> Mapping[str, torch.Tensor]:
    """``dit.pt`` memory-mapped, or a converted folder read tensor by tensor (:class:`FolderTensors`)."""
    return FolderTensors(path) if path.is_dir() else load_transformer_state_dict(path)


def original_key_sources(config: Mapping) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """Original key -> (diffusers keys whose rows it joins, ``SWAP_HALVES`` or ``None``), in file order."""
    sources: dict[str, tuple[tuple[str, ...], str | None]] = {}

    def add_modules(ours: str, theirs: tuple[str, ...]) -> None:
        for end in ("weight", "bias"):
            sources[f"{ours}.{end}"] = (tuple(f"{name}.{end}" for name in theirs), None)

    for ours, theirs in OUTER_PARTS.items():
        if config.get("guidance_embeds", True) or not ours.startswith("guidance_in"):
            add_modules(ours, (theirs,))
    for i in range(config.get("num_layers", 19)):  # diffusers' defaults: FLUX.1-dev's 19 and 38 blocks
        for ours, theirs in DOUBLE_BLOCK_PARTS.items():
            add_modules(f"double_blocks.{i}.{ours}", tuple(f"transformer_blocks.{i}.{t}" for t in theirs))
        for ours, theirs in DOUBLE_BLOCK_NORMS.items():
            sources[f"double_blocks.{i}.{ours}"] = ((f"transformer_blocks.{i}.{theirs}",), None)
    for i in range(config.get("num_single_layers", 38)):
        for ours, theirs in SINGLE_BLOCK_PARTS.items():
            add_modules(
                f"single_blocks.{i}.{ours}", tuple(f"single_transformer_blocks.{i}.{t}" for t in theirs)
            )
        for ours, theirs in SINGLE_BLOCK_NORMS.items():
            sources[f"single_blocks.{i}.{ours}"] = ((f"single_transformer_blocks.{i}.{theirs}",), None)
    for end in ("weight", "bias"):
        sources[f"final_layer.adaLN_modulation.1.{end}"] = ((f"norm_out.linear.{end}",), SWAP_HALVES)
    return sources


def original_tensor(parts: list[torch.Tensor], transform: str | None) -> torch.Tensor:
    """The diffusers tensors ``parts`` (each ``(rows_i, ...)``) joined into one original tensor ``(sum rows_i, ...)``."""
    tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if transform == SWAP_HALVES:
        scale, shift = tensor.chunk(2, dim=0)
        tensor = torch.cat([shift, scale], dim=0)
    return tensor


def to_original_layout(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers ``FluxTransformer2DModel`` state dict -> the same weights under the original (ComfyUI) names.

    Raises:
        faceclip.convert.faceclip_encoder.CheckpointKeyError: keys or shapes do not fit ``config``.
    """
    check_transformer_keys(state_dict, expected_transformer_layout(config), "the transformer state dict")
    return {
        key: original_tensor([state_dict[name] for name in names], transform)
        for key, (names, transform) in original_key_sources(config).items()
    }


def convert_flux_for_comfyui(
    path: str | os.PathLike,
    config: Mapping,
    out_file: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    remap_bytes: int = 4 << 30,
) -> Path:
    """Write ``path`` (the released ``dit.pt``, or a folder it was converted to: diffusers keys) as one ComfyUI
    file in the original layout.

    Every key and shape is checked before anything is written; the file appears at ``out_file`` only when
    complete. ``torch_dtype`` casts floating weights (``None`` keeps the file's, bf16 for the released file).

    Raises:
        faceclip.hub.WeightsFileError: the file is not a tensor checkpoint (a ``ValueError``).
        faceclip.convert.faceclip_encoder.CheckpointKeyError: keys or shapes do not fit ``config``.
    """
    from faceclip.outputs import atomic_path

    path = Path(path)
    released = open_transformer_weights(path)
    if isinstance(released, FolderTensors):
        released = released.shapes()
    check_transformer_keys(released, expected_transformer_layout(config), str(path))
    sources = original_key_sources(config)
    layout = [(key, *_planned(released, names, torch_dtype)) for key, (names, _t) in sources.items()]
    del released
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    nonfinite = NonFiniteTensors(path)
    with atomic_path(out_file) as staging:
        write_safetensors(staging, _original_tensors(path, sources, layout, nonfinite, remap_bytes), layout)
    nonfinite.warn()
    return out_file


def _planned(released: Mapping[str, torch.Tensor], names: tuple[str, ...], torch_dtype: torch.dtype | None):
    """(shape, dtype) of the original tensor joining ``names`` (rows add up; the other sizes are shared)."""
    first = released[names[0]]
    shape = (sum(released[name].shape[0] for name in names), *first.shape[1:])
    dtype = torch_dtype if torch_dtype and first.is_floating_point() else first.dtype
    return shape, dtype


def _original_tensors(
    path: Path, sources: Mapping, layout: list[tuple], nonfinite: NonFiniteTensors, remap_bytes: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the original tensors in ``layout`` order, mapping the file afresh after every ``remap_bytes``
    read (so the pages of earlier tensors are released)."""
    released, read = open_transformer_weights(path), 0
    try:
        for key, _shape, dtype in layout:
            names, transform = sources[key]
            parts = [nonfinite.check(name, released[name]).to(dtype) for name in names]
            yield key, original_tensor(parts, transform)
            read += sum(part.numel() * part.element_size() for part in parts)
            if read > remap_bytes:
                released.clear()
                released, read = open_transformer_weights(path), 0
    finally:
        released.clear()
