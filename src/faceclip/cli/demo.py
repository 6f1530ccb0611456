"""`faceclip demo`: serve the Gradio web demo on this machine.

Examples:
    faceclip demo                         # the released model, http://127.0.0.1:7860
    faceclip demo --model tiny-random     # a tiny random model: try the page offline (outputs are noise)
    faceclip demo --model tiny-random --model tiny-random-flux   # a "Model" menu; the first is the default
    faceclip demo --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse
import logging
import re

from faceclip.cli._errors import EXIT_FAILED, CommandError
from faceclip.cli._options import (
    RELEASED_MODEL,
    add_base_model_option,
    add_device_options,
    add_model_option,
    load_model,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve the web demo (Gradio) on this machine",
        description="Serve a web page to try FaceCLIP: upload a face photo, write a prompt, generate.",
        conflict_handler="resolve",  # --model is redefined below: repeatable here
    )
    add_model_option(parser)
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="ID_OR_DIR",
        help=f"a model to offer, as for 'faceclip generate --model': '{RELEASED_MODEL}' (the released weights, "
        "default), a hub id or folder, or 'tiny-random' / 'tiny-random-flux' (random weights: noise, for "
        "testing). Repeat it to offer several in a 'Model' menu: the first is loaded at start and is the "
        "default, the others are loaded when chosen, one model is on the device at a time; --family, "
        "--base-model, --device and --dtype apply to each",
    )
    add_base_model_option(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 serves your network (default: 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument(
        "--share", action="store_true", help="also create a public gradio.live link (off by default)"
    )
    add_device_options(parser)
    parser.add_argument(
        "--out",
        dest="output_dir",
        default="outputs/demo",
        metavar="DIR",
        help="where generated PNGs are saved (default: outputs/demo); earlier files are never replaced",
    )
    parser.add_argument("--output-dir", dest="output_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--max-images", type=int, default=4, help="most images per request (default: 4)")
    parser.add_argument(
        "--queue-size", type=int, default=16, help="requests that may wait while one runs (default: 16)"
    )
    parser.add_argument("--max-file-size", default="10mb", help="upload size limit (default: 10mb)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from pathlib import Path

    from faceclip.demo.app import import_gradio

    try:
        import_gradio()
    except ImportError as error:
        raise CommandError(str(error)) from None
    from faceclip.demo import DemoConfig, create_demo, launch_demo
    from faceclip.demo.app import default_settings

    pool = load_pool(args)
    first = pool.models[0]
    config = DemoConfig(
        output_dir=Path(args.output_dir),
        model_name=first.name,
        defaults=default_settings(pool.current),
        max_images=args.max_images,
        queue_size=args.queue_size,
        max_file_size=args.max_file_size,
    )
    if args.host not in LOOPBACK:
        logger.warning("listening on %s: other machines on your network can use this demo", args.host)
    try:
        launch_demo(create_demo(pool, config), config, host=args.host, port=args.port, share=args.share)
    except OSError as error:  # e.g. the port is taken
        raise CommandError(f"cannot start the server: {error}", EXIT_FAILED) from None
    return 0


def model_names(args: argparse.Namespace) -> list[str]:
    """The ``--model`` arguments in order (the released model when none is given).

    Raises:
        CommandError: a model is given twice.
    """
    names = list(args.model or [RELEASED_MODEL])
    for index, name in enumerate(names):
        if name in names[:index]:
            raise CommandError(f"--model {name} is given twice; give each model once.")
    return names


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad limits and repeated models before anything is loaded."""
    model_names(args)
    for name in ("max_images", "queue_size"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if not re.fullmatch(r"\d+\s*(b|kb|mb|gb)", args.max_file_size.strip().lower()):
        raise CommandError(
            f"--max-file-size must be a number and a unit, e.g. 10mb or 500kb; got {args.max_file_size!r}."
        )


def load(args: argparse.Namespace, name: str):
    """The pipeline of ``--model name`` (with ``--family``, ``--base-model``, ``--device``, ``--dtype`` as given)
    on its device, and what ``name`` resolved to."""
    from faceclip.devices import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    pipe, source = load_model(
        argparse.Namespace(**{**vars(args), "model": name}), resolve_dtype(args.dtype, device), "demo"
    )
    return pipe.to(device), source


def load_pool(args: argparse.Namespace):
    """The page's models: every ``--model`` resolved now (a typo fails before anything loads), the first loaded.

    The others load when chosen in the page; a failure then is shown in the page, which keeps the model it had.
    """
    from faceclip.demo.handlers import DemoError
    from faceclip.demo.models import DemoModel, ModelPool
    from faceclip.registry import resolve_model

    first, *others = model_names(args)
    sources = {name: resolve_model(name, family=args.family) for name in others}
    pipe, source = load(args, first)
    models = [DemoModel.from_source(first, source)]
    models += [DemoModel.from_source(name, sources[name]) for name in others]

    def load_chosen(name: str):
        try:
            return load(args, name)[0]
        except CommandError as error:  # missing weights: the same words as on the command line
            raise DemoError(str(error).splitlines()[0]) from None

    return ModelPool(models, load_chosen, first=pipe)
