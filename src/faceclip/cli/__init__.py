"""The ``faceclip`` command line: a thin shell over the public API.

Each sub-command lives in its own module exposing ``register(subparsers)``; those modules import
heavy dependencies (torch, diffusers, gradio) only inside their ``run`` functions, so ``faceclip --help``
stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from faceclip import __version__
from faceclip.cli._errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CommandError, is_user_error, message_of

# name -> module under faceclip.cli; the order is the order shown by --help.
COMMANDS = {
    "convert": "convert",
    "align": "align",
    "generate": "generate",
    "prepare": "prepare",
    "train": "train",
    "eval": "evaluate",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceclip",
        description="FaceCLIP: identity-preserving image generation from one face photo and a prompt.",
        epilog="exit codes: 0 done; 1 some of the work failed; 2 bad argument, input file or model "
        "(nothing done); 130 interrupted.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (and tracebacks)")
    parser.add_argument("--version", action="version", version=f"faceclip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"faceclip.cli.{module_name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("huggingface_hub").propagate = False  # it prints through its own handler already
    if not args.verbose:
        logging.getLogger("transformers.utils.import_utils").addFilter(_drop_torchvision_fallback_notice)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.verbose or not is_user_error(error):
            raise
        print(f"faceclip {args.command}: error: {message_of(error)}", file=sys.stderr)
        return getattr(error, "code", EXIT_BAD_INPUT) if isinstance(error, CommandError) else EXIT_BAD_INPUT


def _drop_torchvision_fallback_notice(record: logging.LogRecord) -> bool:
    """Hide transformers' advice to install torchvision when diffusers imports its image processors.

    The Pillow processors it falls back to are all faceclip uses, and a torchvision wheel from PyPI can break a
    CPU-only torch install, so on the command line the advice is noise (``--verbose`` shows it).
    """
    return "requires torchvision (not installed)" not in record.getMessage()


if __name__ == "__main__":
    sys.exit(main())
