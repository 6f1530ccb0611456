"""`faceclip train stage1|stage2`: train the joint encoder (stage 1) or FaceCLIP-SDXL (stage 2).

Runs as one process, or under ``accelerate launch`` for DDP / FSDP / DeepSpeed. At the end the main process
prints one JSON line of final metrics on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the joint encoder (stage1) or the SDXL UNet on FaceCLIP conditioning (stage2)",
        description="Train FaceCLIP. Example: faceclip train stage1 --config "
        "src/faceclip/training/configs/stage1_tiny.yaml --data synthetic --output runs/s1",
    )
    parser.add_argument("stage", choices=["stage1", "stage2"])
    parser.add_argument(
        "--config", help="YAML config (see src/faceclip/training/configs/); defaults if omitted"
    )
    parser.add_argument(
        "--data", help="'synthetic', a folder of shards from `faceclip prepare`, or a manifest folder"
    )
    parser.add_argument("--max-steps", type=int, help="number of optimiser steps")
    parser.add_argument(
        "--output", required=True, help="run folder: checkpoints, config, logs, final weights"
    )
    parser.add_argument("--resume", nargs="?", const="", default=None,
                        help="resume from a checkpoint folder, or (no value) from the latest one in --output")  # fmt: skip
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set optim.lr=3e-4 loss.kind=softmax")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faceclip.cli._process import finish

    return finish(_train(args))


def _train(args: argparse.Namespace) -> int:
    from faceclip.hub import WeightsNotFoundError
    from faceclip.training.config import ConfigError, load_config
    from faceclip.training.data import NoReadableSampleError
    from faceclip.training.loop import NonFiniteLossError, fit

    # Paths and numbers from the command line are set as given; only --set values are parsed as YAML.
    values = {"run.output_dir": args.output}
    if args.data:
        values["data.source"] = args.data
    if args.max_steps is not None:
        values["run.max_steps"] = args.max_steps
    try:
        config = load_config(args.stage, args.config, list(args.overrides), values)
        if args.stage == "stage1":
            from faceclip.training.stage1 import Stage1Task as Task
        else:
            from faceclip.training.stage2 import Stage2Task as Task
        task = Task(config)
        resume = None if args.resume is None else (args.resume or args.output)
        metrics = fit(task, config, resume=resume)
    except (ConfigError, WeightsNotFoundError, FileNotFoundError, ImportError, ValueError, KeyError,
            NoReadableSampleError) as err:  # fmt: skip
        print(f"faceclip train: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"faceclip train: {err}", file=sys.stderr)
        return 3
    if _is_main_process():
        print(json.dumps(metrics), flush=True)
        logging.getLogger(__name__).info("run folder: %s", args.output)
    return 0


def _is_main_process() -> bool:
    """Rank 0 of the run (one process: True)."""
    from accelerate import PartialState

    return PartialState().is_main_process
