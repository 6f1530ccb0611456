"""One command-line style: help on every option, --out for every output, --version, documented exit codes."""

from __future__ import annotations

import argparse

import pytest

from faceclip.cli import build_parser, main
from faceclip.cli._errors import EXIT_BAD_INPUT, CommandError, is_user_error


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(_subcommands(sub, f"{prefix}{name} "))
    return found


COMMANDS = _subcommands(build_parser())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command):
    for action in COMMANDS[command]._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"faceclip {command} {'/'.join(action.option_strings) or action.dest} has no help"


WRITERS = ("align", "convert", "demo", "eval run", "eval score", "generate", "prepare", "train")


@pytest.mark.parametrize("command", WRITERS)
def test_every_output_is_named_out(command):
    shown = {
        option
        for action in COMMANDS[command]._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    }
    assert "--out" in shown
    assert not shown & {"--output", "--output-dir", "--output_dir"}


def test_generate_and_eval_run_share_their_generation_options():
    def options(command):
        return {
            o for a in COMMANDS[command]._actions if a.help != argparse.SUPPRESS for o in a.option_strings
        }

    shared = {"--steps", "--guidance-scale", "--size", "--negative-prompt", "--model", "--base-model"}
    assert shared <= options("generate") and shared <= options("eval run")


def test_exit_codes_are_in_the_top_level_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 done; 1 some of the work failed; 2 bad argument" in text and "130 interrupted" in text


def test_which_errors_are_the_users():
    assert is_user_error(CommandError("x"))
    assert is_user_error(FileNotFoundError(2, "No such file or directory", "photo.jpg"))
    assert not is_user_error(RuntimeError("a bug"))
    try:
        int("not a number")  # a ValueError raised outside faceclip: a bug, shown with its traceback
    except ValueError as error:
        assert not is_user_error(error)


def test_a_user_error_is_one_line_with_the_command_and_code_2(tmp_path, capsys):
    code = main(
        ["generate", "--face", str(tmp_path / "missing.jpg"), "--prompt", "a", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err.startswith("faceclip generate: error: ") and "missing.jpg" in err and "Traceback" not in err
