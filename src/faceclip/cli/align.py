"""`faceclip align`: detect and align the face of each photo onto the ArcFace template.

For each input image ``photo.jpg`` it writes ``OUT/photo.png`` (the aligned crop) and ``OUT/photo.json`` (box,
score and 5 landmarks in source-image pixels, and the source-to-crop transform). A bad image, or one whose outputs
cannot be written, is reported and skipped; the exit code is 1 if any input failed. ``OUT`` must be a folder of its
own: one that holds input photos is refused, so that a crop never replaces a photo. A crop already in ``OUT`` (from
an earlier run) is kept and its photo skipped, so an interrupted batch resumes; ``--overwrite`` redoes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from faceclip.cli._errors import CommandError
from faceclip.cli._options import add_overwrite_option, require_output_folder
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
    add_overwrite_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    analyzer, inputs, missing = prepare(args)
    for path in missing:
        print(f"faceclip align: skipped '{path}': file not found", file=sys.stderr)
    protected = {path.resolve() for path in inputs}
    stems = unique_stems(inputs)
    failed, done, kept = len(missing), 0, 0
    for path in tqdm(inputs, desc="aligning", unit="image", file=sys.stderr):
        out_stem = args.out / stems[path]
        if not args.overwrite and all(out_stem.with_suffix(s).is_file() for s in (".png", ".json")):
            kept += 1
            continue
        problem = align_one(analyzer, path, args, out_stem, protected)
        if problem:
            failed += 1
            tqdm.write(f"faceclip align: skipped '{path}': {problem}", file=sys.stderr)
        else:
            done += 1
    total = len(inputs) + len(missing)
    summary = f"faceclip align: aligned {done} of {total} image(s) into '{args.out}'"
    if kept:
        summary += f"; kept {kept} crop(s) of an earlier run (--overwrite redoes them)"
    print(summary + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def prepare(args: argparse.Namespace):
    """Check the arguments, load the face models and create ``--out``: (analyzer, inputs, missing inputs).

    Raises:
        CommandError: what is wrong, before any photo is read.
    """
    from PIL import Image

    from faceclip.face import FaceAnalyzer
    from faceclip.face.model_files import FaceModelNotFoundError

    if args.size < 16:
        raise CommandError(f"--size must be at least 16 pixels, got {args.size}.")
    inputs, missing = collect_inputs(args.inputs, set(Image.registered_extensions()))
    if not inputs and not missing:
        raise CommandError("no image files found in the given folders.")
    require_output_folder(args.out)
    problem = check_separate_from_inputs(args.out, args.inputs, inputs)
    if problem:
        raise CommandError(problem)
    try:
        analyzer = FaceAnalyzer(backend=args.backend)
        _ = analyzer.detector  # load the models now: a broken install fails once, before the batch
    except (FaceModelNotFoundError, ImportError, FileNotFoundError) as error:
        raise CommandError(f"cannot load the face models: {error}") from None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(
            f"cannot create the output folder '{args.out}': {error.strerror or error}; choose another with --out DIR."
        ) from None
    return analyzer, inputs, missing


def align_one(
    analyzer, path: Path, args: argparse.Namespace, out_stem: Path, protected: set[Path]
) -> str | None:
    """Align ``path`` and write ``out_stem``.png and .json; why it was skipped, or None when written.

    Nothing is written over a path in ``protected`` (the inputs), and a crop without its JSON is removed.
    """
    from faceclip.face import ImageLoadError, NoFaceFoundError
    from faceclip.face.types import LANDMARK_NAMES
    from faceclip.outputs import save_png

    try:
        aligned = analyzer.align(path, size=args.size, face_index=args.face_index)
    except (ImageLoadError, NoFaceFoundError) as error:
        return str(error)
    except Exception as error:  # one odd file must not stop a batch; its details are logged with -v
        logger.debug("unexpected error on %s", path, exc_info=True)
        return f"unexpected error {error!r} (-v for details)"
    record = {
        "source": str(path),
        "size": args.size,
        "face_index": args.face_index,
        "backend": analyzer.backend,
        **aligned.face.to_dict(),
        "landmark_names": list(LANDMARK_NAMES),
        "transform": [[round(float(v), 6) for v in row] for row in aligned.transform],
    }
    crop_path, json_path = (
        out_stem.with_name(out_stem.name + ".png"),
        out_stem.with_name(out_stem.name + ".json"),
    )
    clash = [p for p in (crop_path, json_path) if p.resolve() in protected]
    if clash:  # never write over an input, whatever path led there
        return f"its output '{clash[0]}' is an input photo; choose another --out DIR."
    writing = crop_path
    try:
        save_png(aligned.image, crop_path, {"faceclip_align": record})
        writing = json_path
        try:
            write_text_atomic(json_path, json.dumps(record, indent=2))
        except OSError:
            crop_path.unlink(missing_ok=True)  # a crop without its geometry is not an output
            raise
    except OSError as error:
        return f"cannot write '{writing}': {error.strerror or error}"
    return None


def check_separate_from_inputs(out: Path, items: list[str], inputs: list[Path]) -> str | None:
    """Why ``out`` may not receive the crops (it holds input photos), or ``None`` when it is separate.

    Writing the crops among the photos could replace them (``photo.png`` for ``photo.jpg``, or a photo of the
    folder itself), and a second run would take the crops for photos.
    """
    target = out.resolve()
    for item in items:
        if Path(item).is_dir() and Path(item).resolve() == target:
            return (
                f"--out '{out}' is also an input folder: the crops would be written among the photos and could "
                "replace them. Choose a separate output folder with --out DIR."
            )
    for path in inputs:
        if path.resolve().parent == target:
            return (
                f"--out '{out}' holds the input photo '{path}': the crops would be written among the photos and "
                "could replace them. Choose a separate output folder with --out DIR."
            )
    return None


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
