"""`faceclip generate`: new photos of the person in a face photo, one PNG per image plus a contact sheet.

A thin shell over :mod:`faceclip.generation`: image ``k`` of every prompt uses seed ``SEED + k`` (so prompts
are compared on the same noise and any image can be remade alone from its metadata), files are named
``p<prompt>_seed<seed>.png``, and a name already taken in ``--out`` gets a ``-2``, ``-3``... suffix instead of
being replaced (``--overwrite`` replaces; an input file is never written over).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from faceclip.cli._errors import CommandError
from faceclip.cli._options import (
    add_base_model_option,
    add_device_options,
    add_generation_options,
    add_model_option,
    add_overwrite_option,
    load_model,
    settings_errors_as_options,
)

GRID_NAME = "grid.png"
"""The contact sheet of a run (``grid-2.png``, ... when an earlier run's is kept)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images of the person in a face photo",
        description="Generate new photos of the person in --face from one or more prompts.",
    )
    parser.add_argument("--face", required=True, type=Path, metavar="PHOTO", help="a photo showing the face")
    parser.add_argument("--face-index", type=int, metavar="N", help="which face if several (0 = largest)")
    parser.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeat for several)"
    )
    parser.add_argument(
        "--prompts-file",
        type=Path,
        metavar="FILE",
        help="a UTF-8 text file with one prompt per line; blank lines and lines starting with '#' are skipped",
    )
    parser.add_argument(
        "-n", "--num-images", type=int, default=1, metavar="N", help="images per prompt (default 1)"
    )
    parser.add_argument(
        "--seed", type=int, metavar="S", help="seed of the first image of each prompt (default: random)"
    )
    add_generation_options(parser)
    add_model_option(parser)
    add_base_model_option(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("faceclip-outputs"), metavar="DIR", help="output folder"
    )
    add_overwrite_option(parser)
    add_device_options(parser)
    parser.add_argument(
        "--offload", action="store_true", help="keep models on the CPU and move each to the GPU when it runs"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with settings_errors_as_options():
        return generate(args)


def generate(args: argparse.Namespace) -> int:
    from faceclip.generation import (
        FaceReference,
        GenerationSettings,
        OutputFolder,
        consecutive_seeds,
        generate_images,
        image_file_name,
        random_seed,
    )
    from faceclip.outputs import make_grid

    prompts = read_prompts(args.prompt, args.prompts_file)
    seed = args.seed if args.seed is not None else random_seed()
    height, width = parse_size(args.size) if args.size else (None, None)
    settings = GenerationSettings(
        prompts=tuple(prompts), seeds=consecutive_seeds(seed, args.num_images),
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale, true_cfg_scale=args.true_cfg_scale, height=height, width=width,
        batch_size=args.batch_size,
    ).validate()  # fmt: skip
    out = OutputFolder(args.out, inputs=[args.face, args.prompts_file], overwrite=args.overwrite)
    out.check_names(
        [GRID_NAME, *(image_file_name(p, s) for p in range(len(prompts)) for s in settings.seeds)]
    )
    device, dtype = resolve_device_and_dtype(args)
    face = FaceReference.from_file(args.face, face_index=args.face_index)  # a bad photo fails before loading
    pipe = load_on_device(args, device, dtype)
    settings = settings.resolve(pipe)
    images, paths = [], []
    for generated in generate_images(pipe, face, settings, model=str(args.model)):
        paths.append(out.save(generated))
        images.append(generated.image)
    grid = make_grid(images, cols=len(settings.seeds) if len(prompts) > 1 else None)
    grid_meta = {"prompts": prompts, "seed": seed, "model": str(args.model), "files": [p.name for p in paths]}
    grid_path = out.save_png(grid, GRID_NAME, grid_meta)
    print(
        f"faceclip generate: wrote {len(paths)} image(s) and {grid_path.name} to {out.path}", file=sys.stderr
    )
    return 0


def resolve_device_and_dtype(args: argparse.Namespace):
    """``--device`` / ``--dtype`` as torch objects; ``--offload`` needs an accelerator."""
    from faceclip.devices import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.offload and device.type == "cpu":
        raise CommandError(
            "--offload moves models between the CPU and an accelerator, and the device here is the CPU"
            + (
                " (--device cpu); drop --offload."
                if args.device != "auto"
                else " (no GPU found); drop --offload."
            )
        )
    return device, dtype


def load_on_device(args: argparse.Namespace, device, dtype):
    """Load ``--model`` and put it on ``device`` (or offload it there)."""
    from faceclip.model_family import SourceKind

    pipe, source = load_model(args, dtype, "generate ...")
    if source.kind is SourceKind.TINY:
        print("faceclip generate: tiny-random has random weights: the images are noise.", file=sys.stderr)
    if args.offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(desc="steps", leave=False, file=sys.stderr)
    return pipe


def read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    """``--prompt`` values then the lines of ``--prompts-file``, less blank lines and ``#`` comments.

    The file is read as UTF-8; a byte-order mark (as some editors write) is not part of the first prompt.
    """
    out = [p.strip() for p in prompts if p.strip()]
    if prompts_file is not None:
        if not prompts_file.is_file():
            what = (
                "a folder"
                if prompts_file.is_dir()
                else "not a regular file"
                if prompts_file.exists()
                else "missing"
            )
            raise CommandError(f"--prompts-file {prompts_file} is {what}; pass a UTF-8 text file of prompts.")
        from faceclip.text_input import NotUTF8Error, read_utf8

        try:
            text = read_utf8(prompts_file)
        except NotUTF8Error as error:
            raise CommandError(f"--prompts-file: {error}") from None
        except OSError as error:
            raise CommandError(f"cannot read --prompts-file {prompts_file}: {error.strerror or error}") from None
        out += [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    if not out:
        raise CommandError(
            "no prompt given; pass --prompt TEXT (repeatable) or --prompts-file FILE "
            "(one prompt per line; blank lines and lines starting with '#' are skipped)."
        )
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"1152x864"`` -> ``(1152, 864)``: ``--size`` is HEIGHTxWIDTH, both positive multiples of 8."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text.lower())
    if not match:
        raise CommandError(f"--size must look like HEIGHTxWIDTH, e.g. 1152x864; got {text!r}.")
    height, width = int(match[1]), int(match[2])
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise CommandError(f"--size: height and width must be positive multiples of 8; got {height}x{width}.")
    return height, width
