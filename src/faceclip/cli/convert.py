"""`faceclip convert`: the released pickles -> our safetensors folders, for both families.

    faceclip convert --released model/face_clip_encoder.pt --out enc      # FaceCLIP-SDXL encoder
    faceclip convert --released model/face_t5_encoder.pt --out enc        # FaceT5 encoder (streamed)
    faceclip convert --released model/dit.pt --out transformer            # FaceT5-FLUX transformer (streamed)
    faceclip convert --released ByteDance/FaceCLIP --family facet5-flux --out facet5   # both FLUX files
    faceclip convert --released model/unet.pt --comfyui --out faceclip_sdxl_unet.safetensors  # for ComfyUI
    faceclip convert --released model/dit.pt --comfyui --out facet5_flux_transformer.safetensors  # for ComfyUI

``faceclip generate`` and the other commands convert on first use by themselves (into the cache); this command
is for keeping the converted folders elsewhere or loading them with ``from_pretrained``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceclip.cli._errors import CommandError

FILE_KINDS = {
    "face_clip_encoder": "faceclip-sdxl encoder",
    "face_t5_encoder": "facet5-flux encoder",
    "dit": "facet5-flux transformer",
}
"""Released file stems and what they hold."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert released weights (.pt pickles) to safetensors folders",
        description=(
            "Convert released weights of ByteDance/FaceCLIP (CC-BY-NC-4.0; FaceT5-FLUX also falls under FLUX.1-dev's "
            "non-commercial licence) to folders with config.json and safetensors weights: "
            "face_clip_encoder.pt -> FaceCLIPEncoder.from_pretrained(DIR), face_t5_encoder.pt -> "
            "FaceT5Encoder.from_pretrained(DIR), dit.pt -> FluxTransformer2DModel.from_pretrained(DIR). Pickles are "
            "read with weights_only=True; the FLUX files are streamed (about 5 GB of RAM whatever their size)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--released",
        metavar="PATH",
        help="a released file (face_clip_encoder.pt/.safetensors, face_t5_encoder.pt, dit.pt), or a folder / hub id "
        "holding model/*.pt (then --family picks which files)",
    )
    source.add_argument("--official", dest="released", metavar="PATH", help=argparse.SUPPRESS)  # older name
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must not exist)")
    parser.add_argument(
        "--comfyui",
        action="store_true",
        help="convert the FaceCLIP-SDXL UNet (model/unet.pt, or a folder / hub id holding it) into one "
        "safetensors file in ComfyUI's own (LDM) key layout for ComfyUI/models/diffusion_models/; with dit.pt "
        "(or a folder it was converted to) or --family facet5-flux, the FaceT5-FLUX transformer in the original "
        "FLUX layout instead; --out names "
        "the .safetensors file; --base-model gives SDXL base's unet/config.json or FLUX.1-dev's "
        "transformer/config.json (default: the packaged copy)",
    )
    parser.add_argument(
        "--family",
        choices=("faceclip-sdxl", "facet5-flux"),
        default=None,
        help="for a folder or hub id: faceclip-sdxl (default; the encoder) or facet5-flux (the encoder into "
        "DIR/faceclip_encoder and the transformer into DIR/transformer)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="encoder head counts, a packaged config name (default: faceclip-sdxl or facet5-flux by family)",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="ID_OR_DIR",
        help="for dit.pt: FLUX.1-dev (hub id or folder) whose transformer/config.json to use (default: the "
        "packaged copy of FLUX.1-dev's config)",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="dtype of the saved weights (default: fp32 for the SDXL encoder, the file's own (bf16) for FLUX)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faceclip.hub import WeightsFileError, WeightsNotFoundError

    out = Path(args.out).expanduser()
    if out.exists():
        raise CommandError(f"--out {out} already exists; choose a new folder.")
    kind = comfyui_kind(args) if args.comfyui else released_kind(args.released, args.family)
    try:
        notice = CONVERTERS[kind](args, out)
    except WeightsFileError as err:  # names the file itself
        raise CommandError(str(err)) from None
    except (WeightsNotFoundError, KeyError, ValueError) as err:
        raise CommandError(f"--released {args.released}: {err}") from None
    print(f"Wrote {out}. {notice}", file=sys.stderr)
    return 0


def released_kind(released: str, family: str | None) -> str:
    """What ``--released`` holds (a key of :data:`CONVERTERS`), from the released file names."""
    path = Path(released).expanduser()
    if path.is_file():
        kind = FILE_KINDS.get(path.name.split(".")[0])
        if kind is None and family == "facet5-flux":
            raise CommandError(
                f"--released {released}: not a released file name (face_t5_encoder.pt or dit.pt), so which "
                "FaceT5-FLUX part it holds is unknown; rename it, or pass the folder that holds model/."
            )
        kind = kind or "faceclip-sdxl encoder"  # any other file: the SDXL encoder (.pt or .safetensors)
        if family and not kind.startswith(family):
            raise CommandError(f"--released {released} is a {kind.split()[0]} file, not {family}.")
        return kind
    return "facet5-flux files" if family == "facet5-flux" else "faceclip-sdxl encoder"


def _sdxl_encoder(args: argparse.Namespace, out: Path) -> str:
    from faceclip.devices import resolve_dtype
    from faceclip.models import FaceCLIPEncoder
    from faceclip.outputs import atomic_path
    from faceclip.pipelines.sdxl.family import LICENSE_NOTICE

    dtype = resolve_dtype(args.dtype or "fp32")
    encoder = FaceCLIPEncoder.from_official(
        args.released, config=args.config or "faceclip-sdxl", torch_dtype=dtype
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as staging:
        encoder.save_pretrained(staging)
    shared = "one shared face ViT" if encoder.config.share_face_encoder else "two face ViTs"
    return f"({shared}) {LICENSE_NOTICE}"


def _facet5_encoder(args: argparse.Namespace, out: Path, source: str | None = None) -> str:
    from faceclip.convert.facet5_files import convert_facet5_encoder
    from faceclip.pipelines.flux.family import LICENSE_NOTICE

    dtype = _flux_dtype(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert_facet5_encoder(
        source or args.released, out, config=args.config or "facet5-flux", torch_dtype=dtype
    )
    return LICENSE_NOTICE


def _flux_transformer(
    args: argparse.Namespace, out: Path, source: str | None = None, config: dict | None = None
) -> str:
    from faceclip.convert.flux_transformer import convert_released_transformer
    from faceclip.pipelines.flux.family import LICENSE_NOTICE

    config = config or _transformer_config(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert_released_transformer(source or args.released, config, out, torch_dtype=_flux_dtype(args))
    return LICENSE_NOTICE


def _flux_files(args: argparse.Namespace, out: Path) -> str:
    """Both FaceT5-FLUX files of a folder or hub repo: ``out/faceclip_encoder`` and ``out/transformer``."""
    from faceclip.hub import resolve_file
    from faceclip.outputs import atomic_path
    from faceclip.pipelines.flux.family import RELEASED_ENCODER_FILE, RELEASED_TRANSFORMER_FILE

    encoder = resolve_file(args.released, RELEASED_ENCODER_FILE, what="the FaceT5 encoder weights")
    transformer = resolve_file(args.released, RELEASED_TRANSFORMER_FILE, what="the FaceT5-FLUX transformer")
    config = _transformer_config(args)  # read before the long conversion starts
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as staging:
        staging.mkdir()
        _facet5_encoder(args, staging / "faceclip_encoder", str(encoder))
        return _flux_transformer(args, staging / "transformer", str(transformer), config)


def _transformer_config(args: argparse.Namespace) -> dict:
    """The transformer config: from ``--base-model``'s ``transformer/config.json``, else the packaged one."""
    from faceclip.pipelines.flux.architectures import architecture_config

    return _base_model_config(
        args, "transformer/config.json", "the FLUX.1-dev transformer config", "FLUX.1-dev",
        lambda: architecture_config("flux_transformer"),
    )  # fmt: skip


def _base_model_config(args: argparse.Namespace, file: str, what: str, base: str, packaged) -> dict:
    """``--base-model``'s ``file`` (a JSON config), else ``packaged()``."""
    if args.base_model is None:
        return packaged()
    from faceclip.hub import resolve_file
    from faceclip.pipelines.released_files import read_config

    path = resolve_file(args.base_model, file, what=what)
    return read_config(
        path, f"pass a copy of {base} with --base-model, or leave it out for the packaged config."
    )


def comfyui_kind(args: argparse.Namespace) -> str:
    """Which model ``--comfyui`` converts: the FaceT5-FLUX transformer for ``dit.pt``, a converted transformer
    folder (with ``config.json``) or ``--family facet5-flux``, else the FaceCLIP-SDXL UNet."""
    released = Path(args.released).expanduser()
    if _is_model_folder(released):
        found = "facet5-flux", "folder"
    else:
        stem = {"dit": "facet5-flux", "unet": "faceclip-sdxl"}.get(released.name.split(".")[0])
        found = stem, "file"
    if found[0] and args.family and args.family != found[0]:
        raise CommandError(f"--released {args.released} is a {found[0]} {found[1]}, not {args.family}.")
    return COMFYUI_FLUX if (found[0] or args.family) == "facet5-flux" else COMFYUI_UNET


def _is_model_folder(path: Path) -> bool:
    """A folder written by ``faceclip convert`` (config + safetensors), not one holding ``model/*.pt``."""
    return (path / "config.json").is_file()


def _comfyui_file(args: argparse.Namespace, out: Path, example: str, file: str, what: str) -> Path:
    """The released file ``--comfyui`` reads (``--released`` itself, or ``file`` in that folder / hub id);
    ``out`` must name a ``.safetensors`` file."""
    from faceclip.hub import resolve_file

    if out.suffix != ".safetensors":
        raise CommandError(f"--out {out}: with --comfyui, name a .safetensors file (e.g. {example}).")
    source = Path(args.released).expanduser()
    if source.is_file() or _is_model_folder(source):
        return source
    return resolve_file(args.released, file, what=what)


def _comfyui_flux(args: argparse.Namespace, out: Path) -> str:
    """The FaceT5-FLUX transformer as one ComfyUI diffusion-model file (see :mod:`faceclip.convert.comfyui_flux`)."""
    from faceclip.convert.comfyui_flux import convert_flux_for_comfyui
    from faceclip.pipelines.flux.family import LICENSE_NOTICE, RELEASED_TRANSFORMER_FILE

    source = _comfyui_file(
        args, out, "facet5_flux_transformer.safetensors", RELEASED_TRANSFORMER_FILE,
        "the FaceT5-FLUX transformer",
    )  # fmt: skip
    from faceclip.pipelines.released_files import read_config

    if _is_model_folder(source) and args.base_model is None:  # a converted folder carries its own config
        config = read_config(source / "config.json", "convert dit.pt again, or pass --base-model.")
    else:
        config = _transformer_config(args)
    convert_flux_for_comfyui(source, config, out, torch_dtype=_flux_dtype(args))
    return (
        f"Put it in ComfyUI/models/diffusion_models/ and load it with Load Diffusion Model. {LICENSE_NOTICE}"
    )


def _comfyui_unet(args: argparse.Namespace, out: Path) -> str:
    """The SDXL UNet as one ComfyUI diffusion-model file (see :mod:`faceclip.convert.comfyui_unet`)."""
    from faceclip.convert.comfyui_unet import convert_unet_for_comfyui
    from faceclip.devices import resolve_dtype
    from faceclip.pipelines.sdxl.family import LICENSE_NOTICE, RELEASED_UNET_FILE

    source = _comfyui_file(
        args, out, "faceclip_sdxl_unet.safetensors", RELEASED_UNET_FILE, "the FaceCLIP-SDXL UNet"
    )
    config = _unet_config(args)
    metadata = {"faceclip": "FaceCLIP-SDXL UNet, ComfyUI diffusion_models layout", "license": "CC-BY-NC-4.0"}
    dtype = resolve_dtype(args.dtype) if args.dtype else None
    convert_unet_for_comfyui(source, config, out, torch_dtype=dtype, metadata=metadata)
    return (
        f"Put it in ComfyUI/models/diffusion_models/ and load it with Load Diffusion Model. {LICENSE_NOTICE}"
    )


def _unet_config(args: argparse.Namespace) -> dict:
    """SDXL base's UNet config: ``--base-model``'s ``unet/config.json``, else the packaged copy."""
    from faceclip.pipelines.sdxl.architectures import architecture_config

    return _base_model_config(
        args,
        "unet/config.json",
        "the SDXL base UNet config",
        "SDXL base",
        lambda: architecture_config("sdxl_unet"),
    )


def _flux_dtype(args: argparse.Namespace):
    from faceclip.devices import resolve_dtype

    return resolve_dtype(args.dtype) if args.dtype else None


COMFYUI_UNET = "faceclip-sdxl unet for comfyui"
COMFYUI_FLUX = "facet5-flux transformer for comfyui"

CONVERTERS = {
    "faceclip-sdxl encoder": _sdxl_encoder,
    "facet5-flux encoder": _facet5_encoder,
    "facet5-flux transformer": _flux_transformer,
    "facet5-flux files": _flux_files,
    COMFYUI_UNET: _comfyui_unet,
    COMFYUI_FLUX: _comfyui_flux,
}
"""What each kind of ``--released`` is converted by; each returns the licence line to print."""
