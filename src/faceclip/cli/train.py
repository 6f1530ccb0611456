"""`faceclip train stage1|stage2`: train the joint encoder (stage 1) or the diffusion model (stage 2).

The config's ``family`` picks the model family: FaceCLIP-SDXL (the default) or FaceT5-FLUX
(``family: facet5-flux``, e.g. ``configs/stage2_flux_tiny.yaml``).

Runs as one process, or under ``accelerate launch`` for DDP / FSDP / DeepSpeed. At the end the main process
prints one JSON line of final metrics on stdout. A run folder (``--out``) that already holds a run is refused
unless the run continues it (``--resume``) or replaces it (``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from faceclip.cli._errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, CommandError
from faceclip.cli._options import require_output_folder

PROG = "faceclip train"


class _DeprecatedOutput(argparse.Action):
    """``--output DIR``: the old name of ``--out``; still works, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{PROG}: warning: --output is deprecated; use --out {values}", file=sys.stderr)
        namespace.out = values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the joint encoder (stage1) or the SDXL UNet / FLUX transformer on its conditioning (stage2)",
        description="Train FaceCLIP. The config's 'family' (faceclip-sdxl, the default, or facet5-flux) picks "
        "the model. Example: faceclip train stage1 --config "
        "src/faceclip/training/configs/stage1_tiny.yaml --data synthetic --out runs/s1",
    )
    parser.add_argument(
        "stage", choices=["stage1", "stage2"],
        help="stage1: align the joint encoder; stage2: fine-tune SDXL or FLUX (as the config's family says)",
    )  # fmt: skip
    parser.add_argument(
        "--config", help="YAML config (see src/faceclip/training/configs/); defaults if omitted"
    )
    parser.add_argument(
        "--data", help="'synthetic', a folder of shards from `faceclip prepare`, or a manifest folder"
    )
    parser.add_argument("--max-steps", type=int, help="number of optimiser steps")
    parser.add_argument(
        "--out", metavar="DIR", help="run folder (required): checkpoints, config, logs, final weights"
    )
    parser.add_argument("--output", action=_DeprecatedOutput, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue from a checkpoint folder, or (no value) from the latest one in --out")  # fmt: skip
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="if --out already holds a run, delete it (config, checkpoints, logs, final weights) and start over",
    )
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set optim.lr=3e-4 loss.kind=softmax")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faceclip.cli._process import finish

    return finish(_train(args))


def _error(message: object, code: int = EXIT_BAD_INPUT) -> int:
    """Print in the one error style (``_process.finish`` ends the process, so nothing may be raised past it)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _train(args: argparse.Namespace) -> int:
    from faceclip.hub import WeightsNotFoundError
    from faceclip.training.config import ConfigError, load_config
    from faceclip.training.data import NoReadableSampleError
    from faceclip.training.loop import NonFiniteLossError
    from faceclip.training.run_folder import RunFolderInUseError, check_run_folder

    if not args.out:
        return _error(
            "--out DIR is required: the run folder for checkpoints, config, logs and final weights."
        )
    # Paths and numbers from the command line are set as given; only --set values are parsed as YAML.
    values = {"run.output_dir": args.out}
    if args.data:
        values["data.source"] = args.data
    if args.max_steps is not None:
        values["run.max_steps"] = args.max_steps
    try:
        require_output_folder(args.out)
        config = load_config(args.stage, args.config, list(args.overrides), values)
        # Checked here too, so a refusal comes before the models load; fit checks again before writing.
        check_run_folder(args.out, resuming=args.resume is not None, overwrite=args.overwrite)
        metrics = _fit(args, config)
    except (CommandError, ConfigError, RunFolderInUseError, WeightsNotFoundError, FileNotFoundError, ImportError,
            ValueError, KeyError, NoReadableSampleError) as err:  # fmt: skip
        return _error(err)
    except NonFiniteLossError as err:
        return _error(err, code=EXIT_FAILED)
    if _is_main_process():
        print(json.dumps(metrics), flush=True)
        logging.getLogger(__name__).info("run folder: %s", args.out)
    if metrics.get("stopped_by_signal"):  # a checkpoint was saved; the run is not finished
        print(
            f"{PROG}: stopped by a signal after saving a checkpoint; continue with --resume.", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    return 0


#: config class name -> (module, task class): the one place a config picks its training task.
TASKS = {
    "Stage1Config": ("faceclip.training.stage1", "Stage1Task"),
    "Stage2Config": ("faceclip.training.stage2", "Stage2Task"),
    "FaceT5Stage1Config": ("faceclip.training.stage1_facet5", "FaceT5Stage1Task"),
    "FluxStage2Config": ("faceclip.training.stage2_flux", "FluxStage2Task"),
}


def _fit(args: argparse.Namespace, config) -> dict:
    """Build the task the config's stage and family name and train it (the slow part: models load here)."""
    import importlib

    from faceclip.training import loop

    module, name = TASKS[type(config).__name__]
    task = getattr(importlib.import_module(module), name)(config)
    resume = None if args.resume is None else (args.resume or args.out)
    return loop.fit(task, config, resume=resume, overwrite=args.overwrite)


def _is_main_process() -> bool:
    """Rank 0 of the run (one process: True)."""
    from accelerate import PartialState

    return PartialState().is_main_process
