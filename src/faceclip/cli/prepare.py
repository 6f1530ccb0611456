"""`faceclip prepare`: captioned photos -> detected, aligned faces -> WebDataset training shards."""

from __future__ import annotations

import argparse
import json
import sys

from faceclip.cli._errors import CommandError
from faceclip.cli._options import require_output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="detect and align faces in captioned photos and write WebDataset training shards",
        description="INPUT is a folder of images with sidecar .txt captions, or a JSONL manifest "
        '({"image": ..., "caption": ..., "identity": ...} per line). Images without a usable face are skipped '
        "and counted; finished shards are skipped on a re-run of the same input and settings (another input or "
        "other settings are refused: use a new --out, or --overwrite).",
    )
    parser.add_argument("input", metavar="INPUT", help="folder with image + .txt pairs, or a .jsonl manifest")
    parser.add_argument("--out", required=True, metavar="DIR", help="shard folder")
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=1000,
        metavar="N",
        help="samples per .tar shard (default 1000)",
    )
    parser.add_argument("--shard-index", type=int, default=0, help="this job's index (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of parallel jobs")
    parser.add_argument(
        "--face-size",
        type=int,
        default=448,
        metavar="PX",
        help="side of the aligned face crops (default 448)",
    )
    parser.add_argument(
        "--identity-from-folder", action="store_true", help="sub-folder names are identity labels"
    )
    parser.add_argument("--backend", default="auto", help="face analysis backend (auto, opencv, insightface)")
    parser.add_argument("--image-target-l", help="CLIP vision tower for precomputed L-branch image targets")
    parser.add_argument(
        "--image-target-g", help="CLIP vision tower for precomputed bigG-branch image targets"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="if --out holds shards of another input or settings, delete them and start over",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faceclip.hub import WeightsNotFoundError
    from faceclip.training.prepare import list_items, prepare_shards

    require_output_folder(args.out)
    try:
        from faceclip.face import FaceAnalyzer, FaceModelNotFoundError
        from faceclip.training.targets import build_image_tower

        items = list_items(args.input, identity_from_folder=args.identity_from_folder)
        towers = {}
        for name, source in (("l", args.image_target_l), ("g", args.image_target_g)):
            if source:
                towers[name] = build_image_tower(source, projection_dim=None)
        report = prepare_shards(
            items, args.out, analyzer=FaceAnalyzer(backend=args.backend), samples_per_shard=args.samples_per_shard,
            shard_index=args.shard_index, num_shards=args.num_shards, face_size=args.face_size, image_towers=towers,
            image_target_sources={k: v for k, v in (("l", args.image_target_l), ("g", args.image_target_g)) if v},
            overwrite=args.overwrite,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, ImportError, WeightsNotFoundError, FaceModelNotFoundError) as err:
        raise CommandError(str(err)) from None
    print(json.dumps(report.__dict__), flush=True)
    print(
        f"{report.samples_written} samples in {len(report.shards_written)} new shard(s), {report.samples_skipped} "
        f"skipped {report.skipped_reasons or ''}; {len(report.shards_skipped)} shard(s) already done",
        file=sys.stderr,
    )
    return 0
