"""`faceclip align`: detect and align the face of each photo onto the ArcFace template.

For each input image ``photo.jpg`` it writes ``OUT/photo.png`` (the aligned crop) and ``OUT/photo.json`` (box,
score and 5 landmarks in source-image pixels, and the source-to-crop transform). A bad image is reported and
skipped; the exit code is 1 if any input failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from faceclip.outputs import write_text_atomic

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="detect and align faces in photos (ArcFace 5-point template)",
        description="Detect the face in each photo and write the aligned crop (PNG) and its geometry (JSON).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)"
    )
    parser.add_argument(
        "--size", type=int, default=448, help="side of the aligned crop in pixels (default: 448)"
    )
    parser.add_argument(
        "--face-index",
        type=int,
        default=None,
        metavar="N",
        help="which face when there are several, largest first (default: the largest)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "opencv", "insightface"),
        default="auto",
        help="face models: opencv (bundled, offline), insightface (if installed), auto (default)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm.auto import tqdm

    from faceclip.face import LANDMARK_NAMES, FaceAnalyzer, ImageLoadError, NoFaceFoundError
    from faceclip.face.model_files import FaceModelNotFoundError
    from faceclip.outputs import save_png

    if args.size < 16:
        print(f"faceclip align: --size must be at least 16 pixels, got {args.size}.", file=sys.stderr)
        return 2
    inputs, missing = collect_inputs(args.inputs, set(Image.registered_extensions()))
    if not inputs and not missing:
        print("faceclip align: no image files found in the given folders.", file=sys.stderr)
        return 2
    try:
        analyzer = FaceAnalyzer(backend=args.backend)
        _ = analyzer.detector  # load the models now: a broken install fails once, before the batch
    except (FaceModelNotFoundError, ImportError, FileNotFoundError) as error:
        print(f"faceclip align: cannot load the face models: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    for path in missing:
        print(f"faceclip align: skipped '{path}': file not found", file=sys.stderr)
    failed = len(missing)
    stems = unique_stems(inputs)
    done = 0
    for path in tqdm(inputs, desc="aligning", unit="image", file=sys.stderr):
        try:
            aligned = analyzer.align(path, size=args.size, face_index=args.face_index)
        except (ImageLoadError, NoFaceFoundError) as error:
            failed += 1
            tqdm.write(f"faceclip align: skipped '{path}': {error}", file=sys.stderr)
            continue
        except Exception as error:  # one odd file must not stop a batch; its details are logged with -v
            logger.debug("unexpected error on %s", path, exc_info=True)
            failed += 1
            tqdm.write(
                f"faceclip align: skipped '{path}': unexpected error {error!r} (-v for details)",
                file=sys.stderr,
            )
            continue
        record = {
            "source": str(path),
            "size": args.size,
            "face_index": args.face_index,
            "backend": analyzer.backend,
            **aligned.face.to_dict(),
            "landmark_names": list(LANDMARK_NAMES),
            "transform": [[round(float(v), 6) for v in row] for row in aligned.transform],
        }
        stem = stems[path]
        save_png(aligned.image, args.out / f"{stem}.png", {"faceclip_align": record})
        write_json(args.out / f"{stem}.json", record)
        done += 1

    total = len(inputs) + len(missing)
    summary = f"faceclip align: aligned {done} of {total} image(s) into '{args.out}'"
    print(summary + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def collect_inputs(items: list[str], extensions: set[str]) -> tuple[list[Path], list[Path]]:
    """Expand INPUT arguments: files as given, folders to their image files (sorted, not recursive).

    Returns:
        The image paths, and the paths that do not exist.
    """
    found, missing = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found.extend(p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in extensions)
        elif path.exists():
            found.append(path)
        else:
            missing.append(path)
    return list(dict.fromkeys(found)), missing


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output name of each input: its stem, with ``-1``, ``-2``... added when two inputs share one."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        stem, n = path.stem, 0
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        names[path] = stem
    return names


def write_json(path: Path, record: dict) -> None:
    """Write ``record`` as JSON atomically (temporary file, then rename)."""
    write_text_atomic(path, json.dumps(record, indent=2))
