"""`faceclip demo`: serve the Gradio web demo on this machine.

Examples:
    faceclip demo                         # the released model, http://127.0.0.1:7860
    faceclip demo --model tiny-random     # a tiny random model: try the page offline (outputs are noise)
    faceclip demo --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from faceclip.cli._options import RELEASED_MODEL, add_base_model_option, add_device_options

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve the web demo (Gradio) on this machine",
        description="Serve a web page to try FaceCLIP-SDXL: upload a face photo, write a prompt, generate.",
    )
    parser.add_argument(
        "--model",
        default=RELEASED_MODEL,
        help=f"hub id or local folder of the pipeline, or 'tiny-random' to try the page offline (default: {RELEASED_MODEL})",
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
        "--output-dir", default="outputs/demo", help="where generated PNGs are saved (default: outputs/demo)"
    )
    parser.add_argument("--max-images", type=int, default=4, help="most images per request (default: 4)")
    parser.add_argument(
        "--queue-size", type=int, default=16, help="requests that may wait while one runs (default: 16)"
    )
    parser.add_argument("--max-file-size", default="10mb", help="upload size limit (default: 10mb)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in ("max_images", "queue_size"):
        if getattr(args, name) < 1:
            print(
                f"faceclip demo: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.",
                file=sys.stderr,
            )
            return 2
    if not re.fullmatch(r"\d+\s*(b|kb|mb|gb)", args.max_file_size.strip().lower()):
        print(
            f"faceclip demo: --max-file-size must be a number and a unit, e.g. 10mb or 500kb; "
            f"got {args.max_file_size!r}.",
            file=sys.stderr,
        )
        return 2
    from dataclasses import replace
    from pathlib import Path

    from faceclip.devices import resolve_device, resolve_dtype
    from faceclip.hub import WeightsNotFoundError

    try:
        from faceclip.demo import DemoConfig, create_demo, launch_demo
        from faceclip.demo.app import import_gradio
        from faceclip.registry import ModelArgumentError, load_pipeline

        import_gradio()
    except ImportError as error:
        print(f"faceclip demo: {error}", file=sys.stderr)
        return 1
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except ValueError as error:
        print(f"faceclip demo: {error}", file=sys.stderr)
        return 2

    try:
        pipe = load_pipeline(args.model, base_model=args.base_model, torch_dtype=dtype).to(device)
    except (WeightsNotFoundError, ModelArgumentError) as error:
        print(
            f"faceclip demo: {error}\nTo try the page without weights, run: faceclip demo --model tiny-random",
            file=sys.stderr,
        )
        return 1

    config = DemoConfig(
        output_dir=Path(args.output_dir),
        model_name=args.model,
        max_images=args.max_images,
        queue_size=args.queue_size,
        max_file_size=args.max_file_size,
        show_license_notice=args.model != "tiny-random",
    )
    if args.model == "tiny-random":  # random weights make noise; keep the page quick
        config = replace(config, defaults=replace(config.defaults, steps=4, width=128, height=128))
    if args.host not in LOOPBACK:
        logger.warning("listening on %s: other machines on your network can use this demo", args.host)
    try:
        launch_demo(create_demo(pipe, config), config, host=args.host, port=args.port, share=args.share)
    except OSError as error:  # e.g. the port is taken
        print(f"faceclip demo: cannot start the server: {error}", file=sys.stderr)
        return 1
    return 0
