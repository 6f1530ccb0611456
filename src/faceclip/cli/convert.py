"""`faceclip convert`: released ``face_clip_encoder.pt`` -> our safetensors encoder folder."""

from __future__ import annotations

import argparse
import sys

from faceclip.cli._errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the released FaceCLIP encoder weights to a safetensors folder",
        description=(
            "Convert the released FaceCLIP encoder (model/face_clip_encoder.pt of ByteDance/FaceCLIP, "
            "CC-BY-NC-4.0) to a folder with config.json and safetensors weights, loadable with "
            "FaceCLIPEncoder.from_pretrained(DIR). The pickle is read with weights_only=True."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--released",
        metavar="PATH",
        help="face_clip_encoder.pt or .safetensors file, a folder holding model/face_clip_encoder.pt, or a hub id",
    )
    source.add_argument("--official", dest="released", metavar="PATH", help=argparse.SUPPRESS)  # older name
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must not exist)")
    parser.add_argument(
        "--config",
        default="faceclip-sdxl",
        help="encoder architecture, a packaged config name (default: faceclip-sdxl)",
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="dtype of the saved weights (default fp32)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from faceclip.convert import CheckpointKeyError
    from faceclip.devices import resolve_dtype
    from faceclip.hub import WeightsFileError, WeightsNotFoundError
    from faceclip.models import FaceCLIPEncoder
    from faceclip.outputs import atomic_path
    from faceclip.pipelines.sdxl.family import LICENSE_NOTICE as NONCOMMERCIAL_NOTICE

    out = Path(args.out).expanduser()
    if out.exists():
        raise CommandError(f"--out {out} already exists; choose a new folder.")
    try:
        encoder = FaceCLIPEncoder.from_official(
            args.released, config=args.config, torch_dtype=resolve_dtype(args.dtype)
        )
    except WeightsFileError as err:  # names the file itself
        raise CommandError(str(err)) from None
    except (WeightsNotFoundError, CheckpointKeyError, ValueError) as err:
        raise CommandError(f"--released {args.released}: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as staging:
        encoder.save_pretrained(staging)
    shared = "one shared face ViT" if encoder.config.share_face_encoder else "two face ViTs"
    print(f"Wrote {out} ({shared}). {NONCOMMERCIAL_NOTICE}", file=sys.stderr)
    return 0
