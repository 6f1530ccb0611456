"""FaceT5-FLUX on every surface: `generate`, `eval run`, the registry's options, and images made again from
their metadata."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from faceclip.cli import main
from faceclip.cli._options import FAMILY_NAMES
from faceclip.outputs import read_png_metadata
from faceclip.registry import FAMILIES

FACES = Path(__file__).parents[1] / "data" / "faces"


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def generate(capsys, out: Path, *extra: str) -> tuple[int, str]:
    return run(capsys, "generate", "--face", str(FACES / "astronaut.png"), "--prompt", "a person hiking",
               "--device", "cpu", "--out", str(out), *extra)  # fmt: skip


def test_family_option_lists_every_registered_family():
    assert tuple(family.name for family in FAMILIES) == FAMILY_NAMES


def test_generate_with_tiny_flux_records_the_family_and_every_setting(tmp_path, capsys):
    code, err = generate(
        capsys, tmp_path / "out", "--model", "tiny-random-flux", "--steps", "2", "--seed", "4"
    )
    assert code == 0, err
    meta = read_png_metadata(tmp_path / "out" / "p000_seed4.png")
    assert meta["family"] == "facet5-flux" and meta["model"] == "tiny-random-flux"
    assert (meta["guidance"], meta["true_cfg"], meta["steps"], meta["size"]) == (1.0, 3.5, 2, "144x112")
    assert meta["negative_prompt"].startswith("digital painting, 3d render")
    with Image.open(tmp_path / "out" / "p000_seed4.png") as image:
        assert image.size == (112, 144)


def test_an_image_is_made_again_from_its_metadata(tmp_path, capsys):
    code, err = generate(capsys, tmp_path / "a", "--model", "tiny-random-flux", "--steps", "2", "--seed", "9",
                         "--true-cfg", "2.5", "--size", "32x48")  # fmt: skip
    assert code == 0, err
    meta = read_png_metadata(tmp_path / "a" / "p000_seed9.png")
    height, width = meta["size"].split("x")
    again = ["--model", meta["model"], "--family", meta["family"], "--steps", str(meta["steps"]),
             "--seed", str(meta["seed"]), "--guidance-scale", str(meta["guidance"]), "--true-cfg",
             str(meta["true_cfg"]), "--size", f"{height}x{width}", "--negative-prompt", meta["negative_prompt"]]  # fmt: skip
    code, err = generate(capsys, tmp_path / "b", *again)
    assert code == 0, err
    first, second = (np.asarray(Image.open(p / "p000_seed9.png")) for p in (tmp_path / "a", tmp_path / "b"))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--model", "tiny-random", "--true-cfg", "2"],
            "--true-cfg applies only to models with true classifier",
        ),
        (["--model", "tiny-random-flux", "--size", "40x48"], "--size (height) must be a multiple of 16"),
        (["--model", "tiny-random-flux", "--true-cfg", "nan"], "--true-cfg must be a number from 0 to 100"),
        (["--model", "tiny-random", "--family", "facet5-flux"], "is a FaceCLIP-SDXL model, not FaceT5-FLUX"),
    ],
)
def test_settings_the_family_cannot_take_are_refused(tmp_path, capsys, extra, message):
    code, err = generate(capsys, tmp_path / "out", "--steps", "1", *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_flux_weights_name_the_files_and_the_tiny_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("FACECLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = generate(capsys, tmp_path / "out", "--family", "facet5-flux")
    assert code == 2, err
    assert "model/face_t5_encoder.pt" in err and "hf download black-forest-labs/FLUX.1-dev" in err
    assert "--model tiny-random-flux" in err and "Traceback" not in err


def test_eval_run_with_tiny_flux(tmp_path, capsys):
    (tmp_path / "ids").mkdir()
    Image.open(FACES / "astronaut.png").save(tmp_path / "ids" / "astronaut.png")
    (tmp_path / "prompts.txt").write_text("a portrait of a person\n")
    code, err = run(capsys, "eval", "run", "--model", "tiny-random-flux", "--identities", str(tmp_path / "ids"),
                    "--prompts", str(tmp_path / "prompts.txt"), "--seeds", "1", "--steps", "2", "--out",
                    str(tmp_path / "run"), "--no-clip", "--face-backend", "opencv", "--device", "cpu",
                    "--no-contact-sheet")  # fmt: skip
    assert code in (0, 1), err  # 1: no face in a noise image is a finding, not a failure of the run
    meta = read_png_metadata(tmp_path / "run" / "images" / "astronaut" / "p000_seed0.png")
    assert meta["family"] == "facet5-flux" and meta["true_cfg"] == 3.5
    assert (tmp_path / "run" / "report.json").is_file()
