"""`faceclip generate`: new photos of the person in a face photo, one PNG per image plus a contact sheet.

Image ``k`` of every prompt uses seed ``SEED + k``, so prompts are compared on the same noise and any image
can be reproduced alone from the seed in its metadata. Each PNG records the prompt, negative prompt, seed,
steps, guidance, size, model and the SHA-256 of the face file in its text chunks.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import sys
import tempfile
from pathlib import Path

from faceclip.cli._options import RELEASED_MODEL, add_base_model_option, add_device_options

logger = logging.getLogger(__name__)

MAX_SEED = 2**64 - 1
"""Largest seed ``torch.Generator.manual_seed`` takes (image ``k`` uses ``--seed + k``, which must fit too)."""
TINY_DEFAULTS = {"steps": 4, "size": (128, 96)}
"""``--model tiny-random`` defaults: its output is noise, so it is kept small and fast."""


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images of the person in a face photo",
        description="Generate new photos of the person in --face from one or more prompts (FaceCLIP-SDXL).",
    )
    parser.add_argument("--face", required=True, type=Path, metavar="PHOTO", help="a photo showing the face")
    parser.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeat for several)"
    )
    parser.add_argument(
        "--prompts-file",
        type=Path,
        metavar="F",
        help="a UTF-8 text file with one prompt per line; blank lines and lines starting with '#' are skipped",
    )
    parser.add_argument(
        "--negative-prompt", metavar="TEXT", help="default: the released model's negative prompt"
    )
    parser.add_argument(
        "-n", "--num-images", type=int, default=1, metavar="N", help="images per prompt (default 1)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help=f"seed of the first image of each prompt, 0 to {MAX_SEED} (default: random)",
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default: 50; 4 for tiny-random)")
    parser.add_argument(
        "--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5.0)"
    )
    parser.add_argument(
        "--size",
        metavar="HxW",
        help="image height x width, multiples of 8 (default 1152x864; 128x96 for tiny-random)",
    )
    parser.add_argument(
        "--model",
        default=RELEASED_MODEL,
        metavar="ID_OR_DIR",
        help=f"'{RELEASED_MODEL}' (released weights, default), a folder or hub id saved by the pipeline, "
        "a folder holding model/face_clip_encoder.pt and model/unet.pt, or 'tiny-random' (noise, for testing)",
    )
    add_base_model_option(parser)
    parser.add_argument("--face-index", type=int, metavar="N", help="which face if several (largest first)")
    parser.add_argument(
        "--out", type=Path, default=Path("faceclip-outputs"), metavar="DIR", help="output folder"
    )
    add_device_options(parser)
    parser.add_argument(
        "--offload", action="store_true", help="keep models on the CPU and move each to the GPU when it runs"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, metavar="B",
        help="images of one prompt denoised together (default 4; lower it if memory runs out); "
        "each image keeps its own seed, so the images do not depend on it",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _generate(args)
    except UserError as error:
        print(f"faceclip generate: error: {error}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from faceclip.devices import resolve_device, resolve_dtype
    from faceclip.outputs import generation_metadata, make_grid, save_png
    from faceclip.pipelines.sdxl.family import NEGATIVE_PROMPT as DEFAULT_NEGATIVE_PROMPT
    from faceclip.pipelines.sdxl.family import TINY_RANDOM

    tiny = args.model == TINY_RANDOM
    check_counts(args.num_images, args.steps, args.seed, args.batch_size)
    prompts = read_prompts(args.prompt, args.prompts_file)
    height, width = parse_size(args.size) if args.size else TINY_DEFAULTS["size"] if tiny else (1152, 864)
    steps = args.steps if args.steps is not None else TINY_DEFAULTS["steps"] if tiny else 50
    check_writable(args.out)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.offload and device.type == "cpu":
        raise UserError(
            "--offload moves models between the CPU and an accelerator, and the device here is the CPU"
            + (" (--device cpu); drop --offload." if args.device else " (no GPU found); drop --offload.")
        )

    face_hash = sha256_file(args.face)
    face = prepare_face(args.face, args.face_index)
    pipe = load(args.model, args.base_model, dtype)
    if tiny:
        print("faceclip generate: tiny-random has random weights: the images are noise.", file=sys.stderr)
    if args.offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(desc="steps", leave=False, file=sys.stderr)

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    negative = args.negative_prompt if args.negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT
    # the face is encoded once for all prompts
    embeds, _, pooled, _ = pipe.encode_prompt(prompts, face, do_classifier_free_guidance=False)
    images, total = [], len(prompts) * args.num_images
    with tqdm(total=total, desc="images", unit="image", file=sys.stderr) as bar:
        for p, prompt in enumerate(prompts):
            for first in range(0, args.num_images, args.batch_size):
                ks = range(first, min(first + args.batch_size, args.num_images))
                batch = pipe(
                    prompt_embeds=embeds[p : p + 1],
                    pooled_prompt_embeds=pooled[p : p + 1],
                    negative_prompt=negative,
                    num_images_per_prompt=len(ks),
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=args.guidance,
                    generator=[torch.Generator().manual_seed(seed + k) for k in ks],  # one seed per image
                ).images
                for k, image in zip(ks, batch, strict=True):
                    metadata = generation_metadata(
                        prompt=prompt, negative_prompt=negative, seed=seed + k, steps=steps,
                        guidance=args.guidance, height=height, width=width, model=str(args.model),
                        face_file=args.face.name, face_sha256=face_hash, face_index=args.face_index,
                        scheduler=pipe.scheduler, dtype=dtype,
                    )  # fmt: skip
                    save_png(image, args.out / f"{p:02d}-{k:02d}-seed{seed + k}.png", metadata)
                    images.append(image)
                    bar.update()
    grid = make_grid(images, cols=args.num_images if len(prompts) > 1 else None)
    save_png(grid, args.out / "grid.png", {"prompts": prompts, "seed": seed, "model": str(args.model)})
    print(f"faceclip generate: wrote {len(images)} image(s) and grid.png to {args.out}", file=sys.stderr)
    return 0


def check_counts(num_images: int, steps: int | None, seed: int | None, batch_size: int = 1) -> None:
    """Check ``-n``, ``--steps``, ``--seed`` and ``--batch-size`` before anything is loaded."""
    if num_images < 1:
        raise UserError(f"-n must be at least 1; got -n {num_images}.")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got --batch-size {batch_size}.")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1; got --steps {steps}.")
    if seed is not None and not 0 <= seed <= MAX_SEED - (num_images - 1):
        raise UserError(
            f"--seed must be from 0 to {MAX_SEED - (num_images - 1)} with -n {num_images} (image k uses "
            f"seed + k, at most {MAX_SEED}); got --seed {seed}."
        )


def read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    """``--prompt`` values then the lines of ``--prompts-file``, less blank lines and ``#`` comments.

    The file is read as UTF-8; a byte-order mark (as some editors write) is not part of the first prompt.
    """
    out = [p.strip() for p in prompts if p.strip()]
    if prompts_file is not None:
        try:
            text = prompts_file.read_text(encoding="utf-8-sig")
            out += [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read --prompts-file {prompts_file}: {error}") from None
    if not out:
        raise UserError(
            "no prompt given; pass --prompt TEXT (repeatable) or --prompts-file F "
            "(one prompt per line; blank lines and lines starting with '#' are skipped)."
        )
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"1152x864"`` -> ``(1152, 864)`` (height, width), both positive multiples of 8."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text.lower())
    if not match:
        raise UserError(f"--size must look like HEIGHTxWIDTH, e.g. 1152x864; got {text!r}.")
    height, width = int(match[1]), int(match[2])
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise UserError(f"--size: height and width must be positive multiples of 8; got {height}x{width}.")
    return height, width


def check_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written there, before any model is loaded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".faceclip-write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(
            f"cannot write to the output folder {folder}: {reason}; choose another with --out DIR."
        ) from None


def sha256_file(path: Path) -> str:
    """SHA-256 of a file (recorded in the metadata, so an image can be traced to its face photo)."""
    from faceclip.outputs import file_sha256

    try:
        return file_sha256(path)
    except OSError as error:
        raise UserError(f"cannot read the face photo {path}: {error.strerror or error}.") from None


def prepare_face(path: Path, face_index: int | None):
    """Detect and align the face (before loading the model, so a bad photo fails fast)."""
    from faceclip.face import FaceAnalyzer, FaceModelNotFoundError, ImageLoadError, NoFaceFoundError
    from faceclip.pipelines import prepare_face as prepare

    try:
        return prepare(os.fspath(path), analyzer=FaceAnalyzer(), face_index=face_index)
    except (ImageLoadError, NoFaceFoundError, FaceModelNotFoundError) as error:
        raise UserError(str(error)) from None


def load(model: str, base_model: str | None, dtype):
    from faceclip.convert.sdxl_unet import UNetConversionError
    from faceclip.hub import WeightsNotFoundError
    from faceclip.registry import ModelArgumentError, load_pipeline

    try:
        return load_pipeline(model, base_model=base_model, torch_dtype=dtype)
    except (WeightsNotFoundError, UNetConversionError, ModelArgumentError) as error:
        raise UserError(str(error)) from None
