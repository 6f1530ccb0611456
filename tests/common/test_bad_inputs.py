"""Bad input on the command line: one message naming the input, exit code 2, no traceback, no hang, nothing left.

Fixtures are made at test time. Commands that would load a model must refuse before loading it: the loader is
replaced by one that fails the test if it is reached.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceclip.cli import main

FACE = Path(__file__).parents[1] / "data" / "pipelines" / "astronaut_192.jpg"


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a pipeline is loaded: a bad argument must be refused first."""
    import faceclip.registry

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(faceclip.registry, "load_pipeline", refuse)


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def generate(tmp_path, *extra: str) -> list[str]:
    return ["generate", "--face", str(FACE), "--prompt", "a", "--model", "tiny-random",
            "--out", str(tmp_path / "out"), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cuda"], "--device cuda: this machine has no cuda device"),
        (["--device", "meta"], "--device meta holds no data"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--size", "40000x40000"], "--size (height) must be a whole number from 8 to 4096; got 40000"),
        (["--guidance-scale", "inf"], "--guidance-scale must be a number from 0 to 100; got inf"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a number from 0 to 100; got nan"),
        (["--guidance-scale", "1e30"], "--guidance-scale must be a number from 0 to 100"),
        (["--guidance-scale=-1e30"], "--guidance-scale must be a number from 0 to 100"),
        (["--steps", "0"], "--steps must be a whole number from 1"),
    ],
)
def test_generate_refuses_before_loading(tmp_path, capsys, no_loading, extra, message):
    code, err = run(capsys, *generate(tmp_path, *extra))
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()  # no empty output folder left behind


def test_eval_run_refuses_bad_settings_before_loading(tmp_path, capsys, no_loading):
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "a.jpg").write_bytes(FACE.read_bytes())
    base = ["eval", "run", "--model", "tiny-random", "--identities", str(tmp_path / "ids"), "--out",
            str(tmp_path / "run"), "--no-clip"]  # fmt: skip
    for extra, message in [
        (["--steps", "0"], "--steps must be a whole number from 1"),
        (["--size", "40000x40000"], "--size (height) must be"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a number"),
        (["--device", "meta"], "--device meta"),
    ]:
        code, err = run(capsys, *base, *extra)
        assert code == 2 and message in err, (extra, err)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_face_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    """Hashing a named pipe or /dev/zero never ends: such paths are refused before a byte is read."""
    if kind == "fifo":
        face = tmp_path / "pipe.jpg"
        os.mkfifo(face)
    elif kind == "device":
        face = Path("/dev/zero")
    else:
        face = tmp_path
    command = [sys.executable, "-m", "faceclip", "generate", "--face", str(face), "--prompt", "a", "--model",
               "tiny-random", "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert str(face) in done.stderr and "Traceback" not in done.stderr
    assert ("folder" if kind == "folder" else "not a regular file") in done.stderr


def test_prompts_file_that_is_a_pipe_is_refused(tmp_path, capsys, no_loading):
    prompts = tmp_path / "prompts.txt"
    os.mkfifo(prompts)
    code, err = run(
        capsys, "generate", "--face", str(FACE), "--prompts-file", str(prompts), "--out", str(tmp_path)
    )
    assert code == 2 and "--prompts-file" in err and "not a regular file" in err


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--face", str(FACE), "--prompt", "a", "--model", "tiny-random"],
        ["eval", "score", "--manifest", "m.jsonl"],
        ["align", str(FACE)],
    ],
)
def test_an_existing_file_as_out_is_refused(tmp_path, capsys, monkeypatch, no_loading, command):
    monkeypatch.chdir(tmp_path)
    Path("m.jsonl").write_text('{"image": "x.png", "reference": "y.png", "prompt": "p"}\n')
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, err = run(capsys, *command, "--out", str(blocker))
    assert code == 2 and str(blocker) in err and "is a file" in err
    assert blocker.read_text() == "keep me"


def test_a_full_disk_is_a_message_and_leaves_nothing_partial(tmp_path, capsys, monkeypatch):
    import faceclip.outputs

    real = faceclip.outputs._publish

    def full(tmp, path, overwrite):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faceclip.outputs, "_publish", full)
    code, err = run(capsys, *generate(tmp_path, "--steps", "1", "--size", "32x32"))
    assert code == 2 and "No space left on device while writing" in err
    assert list((tmp_path / "out").glob("*")) == []  # the temporary file was removed
    monkeypatch.setattr(faceclip.outputs, "_publish", real)


def test_missing_weights_name_tiny_random(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("FACECLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = run(capsys, "generate", "--face", str(FACE), "--prompt", "a", "--out", str(tmp_path / "out"))
    assert code == 2 and "--model tiny-random" in err
    assert not (tmp_path / "out").exists()
