"""`faceclip demo`: argument checks, missing weights, and a real start on tiny-random."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from faceclip.cli import main
from faceclip.demo.handlers import DemoError


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


def test_model_is_repeatable_and_defaults_to_the_released_model():
    from faceclip.cli import build_parser
    from faceclip.cli.demo import model_names

    parse = build_parser().parse_args
    assert model_names(parse(["demo"])) == ["ByteDance/FaceCLIP"]
    assert model_names(parse(["demo", "--model", "tiny-random"])) == ["tiny-random"]
    args = parse(["demo", "--model", "tiny-random-flux", "--model", "tiny-random", "--family", "facet5-flux"])
    assert model_names(args) == ["tiny-random-flux", "tiny-random"] and args.family == "facet5-flux"


def test_a_model_given_twice_is_refused(capsys):
    assert main(["demo", "--model", "tiny-random", "--model", "x", "--model", "tiny-random"]) == 2
    assert "error: --model tiny-random is given twice; give each model once." in capsys.readouterr().err


@pytest.fixture
def served(monkeypatch):
    """`faceclip demo` up to the page: what create_demo was given is recorded, nothing is served."""
    import faceclip.demo

    seen = {}
    monkeypatch.setattr(
        faceclip.demo, "create_demo", lambda pool, config: seen.update(pool=pool, config=config)
    )
    monkeypatch.setattr(faceclip.demo, "launch_demo", lambda *args, **kwargs: "http://127.0.0.1:1")
    return seen


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "tiny-random", "--model", "{tmp}/nope"], "--model {tmp}/nope: no such folder"),
        (
            ["--family", "facet5-flux", "--model", "tiny-random-flux", "--model", "tiny-random"],
            "--model tiny-random is a FaceCLIP-SDXL model, not FaceT5-FLUX.",
        ),
    ],
)
def test_a_bad_later_model_is_refused_before_anything_loads(
    served, monkeypatch, tmp_path, capsys, arguments, message
):
    import faceclip.cli.demo as demo_command

    monkeypatch.setattr(demo_command, "load", lambda *args: pytest.fail("a model was loaded"))
    assert main(["demo", *(a.format(tmp=tmp_path) for a in arguments)]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err and served == {}


def test_several_models_load_the_first_and_the_others_when_chosen(served, tmp_path):
    broken = tmp_path / "broken-flux"  # a FaceT5-FLUX folder in our layout, without its components
    broken.mkdir()
    (broken / "model_index.json").write_text(
        json.dumps({"_class_name": "FaceT5FluxPipeline", "vae": ["diffusers", "AutoencoderKL"]})
    )
    command = ["demo", "--model", "tiny-random", "--model", "tiny-random-flux", "--model", str(broken)]
    assert main([*command, "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path / "out")]) == 0
    pool, config = served["pool"], served["config"]
    assert [model.label for model in pool.models] == [
        "tiny-random (FaceCLIP-SDXL)", "tiny-random-flux (FaceT5-FLUX)", f"{broken} (FaceT5-FLUX)"
    ]  # fmt: skip
    assert type(pool.current).__name__ == "FaceCLIPStableDiffusionXLPipeline"
    assert config.defaults.true_cfg_scale is None and config.model_name == "tiny-random"
    assert [model.random_weights for model in pool.models] == [True, True, False]
    assert "CC-BY-NC-4.0" in pool.models[2].license_notice
    assert type(pool.select("tiny-random-flux")).__name__ == "FaceT5FluxPipeline"
    with pytest.raises(DemoError) as info:  # the reason (the loader's first line) between name and fallback
        pool.select(str(broken))
    assert re.fullmatch(rf"Cannot load {re.escape(str(broken))} \(FaceT5-FLUX\): .*{re.escape(str(broken))}.* "
                        r"The page still uses tiny-random-flux \(FaceT5-FLUX\)\.", str(info.value))  # fmt: skip
    assert pool.current_name == "tiny-random-flux"
