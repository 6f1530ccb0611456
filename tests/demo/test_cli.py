"""`faceclip demo`: argument checks, missing weights, and a real start on tiny-random."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from faceclip.cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--host", "--port", "--share", "--max-file-size", "--queue-size"):
        assert option in out


def test_bad_limits_are_refused(capsys):
    assert main(["demo", "--model", "tiny-random", "--max-images", "0"]) == 2
    assert "--max-images must be at least 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--model", "tiny-random", "--max-file-size", "100"]) == 2
    assert "--max-file-size must be a number and a unit" in capsys.readouterr().err


@pytest.mark.slow  # imports diffusers
def test_missing_weights_explain_what_to_do(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "faceclip demo --model tiny-random" in err
    assert "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_demo_command_serves_the_page_on_loopback(tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "faceclip", "demo", "--model", "tiny-random", "--port", str(port)]
    command += ["--output-dir", str(tmp_path / "out"), "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 180, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(1)
        assert page is not None, f"the demo did not start: exit code {process.poll()}"
        config = json.loads(page)
        assert config["title"] == "FaceCLIP demo" and "FaceCLIP-SDXL" in page
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "Traceback" not in output, output
