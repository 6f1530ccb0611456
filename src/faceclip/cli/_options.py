"""Options shared by several sub-commands (kept free of heavy imports, so ``--help`` stays instant)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from faceclip.cli._errors import CommandError

RELEASED_MODEL = "ByteDance/FaceCLIP"
"""The default ``--model``: the released weights of both families (``faceclip.registry.DEFAULT_MODEL``)."""

FAMILY_NAMES = ("faceclip-sdxl", "facet5-flux")
"""``--family`` choices: the names in ``faceclip.registry.FAMILIES`` (spelled here so ``--help`` stays instant;
a test checks they agree)."""


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model``: what :func:`faceclip.registry.resolve_model` reads."""
    parser.add_argument(
        "--model",
        default=RELEASED_MODEL,
        metavar="ID_OR_DIR",
        help=f"'{RELEASED_MODEL}' (the released weights, default), a hub id or folder saved by the pipeline, "
        "a folder in the released layout (model/face_clip_encoder.pt and model/unet.pt for FaceCLIP-SDXL, "
        "model/face_t5_encoder.pt and model/dit.pt for FaceT5-FLUX), or 'tiny-random' / 'tiny-random-flux' "
        "(random weights: noise, for testing)",
    )
    parser.add_argument(
        "--family",
        choices=FAMILY_NAMES,
        default=None,
        help="the model family, where --model holds both (the released repo does): faceclip-sdxl (default) or "
        "facet5-flux (FaceT5-FLUX; FLUX.1-dev's non-commercial licence applies)",
    )


def add_generation_options(parser: argparse.ArgumentParser, batch_size: bool = True) -> None:
    """What every image of a run is made with: ``--steps``, ``--guidance-scale``, ``--size``,
    ``--negative-prompt`` and ``--batch-size``; each defaults to the model's (see
    :class:`faceclip.generation.GenerationSettings`)."""
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps (default: the model's, 50 for FaceCLIP-SDXL)"
    )
    parser.add_argument(
        "--guidance-scale",
        "--guidance",
        dest="guidance_scale",
        type=float,
        metavar="G",
        help="guidance scale: classifier-free guidance for FaceCLIP-SDXL (default 5.0), FLUX's distilled "
        "guidance for FaceT5-FLUX (default 1.0)",
    )
    parser.add_argument(
        "--true-cfg",
        dest="true_cfg_scale",
        type=float,
        metavar="G",
        help="true classifier-free guidance, FaceT5-FLUX only (default 3.5; 1 turns it off and halves the time)",
    )
    parser.add_argument(
        "--size",
        metavar="HxW",
        help="image height x width, multiples of 8 (16 for FaceT5-FLUX) (default: the model's, 1152x864; "
        "72x56 for tiny-random, 144x112 for tiny-random-flux)",
    )
    parser.add_argument(
        "--negative-prompt", metavar="TEXT", help="negative prompt (default: the model's; '' for none)"
    )
    if not batch_size:
        return
    parser.add_argument(
        "--batch-size", type=int, default=4, metavar="B",
        help="images of one prompt denoised together (default 4; lower it if memory runs out); "
        "each image keeps its own seed, so the images do not depend on it",
    )  # fmt: skip


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace files of an earlier run instead of writing beside them."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files an earlier run left in the output folder (default: keep them; new files get "
        "a -2, -3, ... suffix); input files are never written over",
    )


def add_base_model_option(parser: argparse.ArgumentParser) -> None:
    """``--base-model``: the base model the released weights need (SDXL base for FaceCLIP-SDXL)."""
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="ID_OR_DIR",
        help="base model hub id or folder completing the released weights (VAE, scheduler, configs); "
        "default: the family's, stabilityai/stable-diffusion-xl-base-1.0 for FaceCLIP-SDXL",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, resolved later with :mod:`faceclip.devices`."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the available accelerator, else the CPU), cpu, cuda, cuda:1, mps",
    )
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 on an accelerator, fp32 on the CPU), fp32, bf16, fp16"
    )


SETTINGS_OPTIONS = {
    "prompts": "--prompt",
    "seeds": "--seed",
    "num_images": "-n",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "true_cfg_scale": "--true-cfg",
    "height": "--size (height)",
    "width": "--size (width)",
    "batch_size": "--batch-size",
    "negative_prompt": "--negative-prompt",
}
"""The option of each :class:`faceclip.generation.GenerationSettings` field, for error messages."""


@contextlib.contextmanager
def settings_errors_as_options(options: dict[str, str] | None = None) -> Iterator[None]:
    """Report a :class:`faceclip.generation.SettingsError` under the option's name (``--steps must be ...``)."""
    from faceclip.generation import SettingsError

    try:
        yield
    except SettingsError as error:
        names = {**SETTINGS_OPTIONS, **(options or {})}
        raise CommandError(f"{names.get(error.field, error.field)} {error.reason}") from None


def require_output_folder(out) -> None:
    """Refuse an ``--out`` that cannot receive outputs (a file, a folder without write permission); nothing is
    created.

    Raises:
        CommandError: naming ``--out`` and what to do.
    """
    from faceclip.outputs import output_folder_problem

    problem = output_folder_problem(out)
    if problem:
        raise CommandError(f"--out {problem}")


def load_model(args: argparse.Namespace, dtype, command: str):
    """Load what ``--model`` and ``--base-model`` name: ``(pipeline, ModelSource)``.

    Missing weights become one :class:`CommandError` that also says how to try ``command`` without them.
    """
    from faceclip.hub import WeightsNotFoundError
    from faceclip.registry import get_family, load_pipeline, resolve_model

    family = getattr(args, "family", None)
    try:
        source = resolve_model(args.model, family=family)
        return load_pipeline(source, base_model=args.base_model, torch_dtype=dtype), source
    except WeightsNotFoundError as error:
        tiny = get_family(family).tiny_name if family else "tiny-random"
        raise CommandError(
            f"{error}\nTo try it without weights (the images are noise): faceclip {command} --model {tiny}"
        ) from None
