"""`faceclip generate` end to end on tiny-random, and its user errors (clear message, non-zero exit)."""

from __future__ import annotations

import hashlib

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from faceclip.cli import main
from faceclip.generation import MAX_SEED
from faceclip.outputs import read_png_metadata


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["generate", *args])
    return code, capsys.readouterr().err


def test_tiny_random_end_to_end(tmp_path, capsys, face_photo):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeffa person on the moon\n\n  # a comment, not a prompt\n", encoding="utf-8")
    out = tmp_path / "out"
    code, err = run(
        capsys,
        "--face", str(face_photo),
        "--prompt", "a person in a garden",
        "--prompts-file", str(prompts),
        "-n", "2",
        "--seed", "5",
        "--steps", "2",
        "--size", "64x48",
        "--model", "tiny-random",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "noise" in err
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["grid.png", "p000_seed5.png", "p000_seed6.png", "p001_seed5.png", "p001_seed6.png"]
    meta = read_png_metadata(out / "p001_seed6.png")
    assert meta["prompt"] == "a person on the moon"
    assert meta["seed"] == 6 and meta["steps"] == 2 and meta["guidance"] == 5.0
    assert meta["size"] == "64x48" and meta["model"] == "tiny-random"
    assert meta["face_sha256"] == hashlib.sha256(face_photo.read_bytes()).hexdigest()
    assert meta["negative_prompt"].startswith("nude, worst quality")
    with Image.open(out / "p001_seed6.png") as image:
        assert image.size == (48, 64)
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 * 48 + 3 * 4, 2 * 64 + 3 * 4)  # 2 columns (images) x 2 rows (prompts)


def test_same_seed_same_image(tmp_path, capsys, face_photo):
    common = [
        "--face",
        str(face_photo),
        "--prompt",
        "a",
        "--steps",
        "1",
        "--size",
        "32x32",
        "--model",
        "tiny-random",
    ]
    assert run(capsys, *common, "--seed", "3", "--out", str(tmp_path / "a"))[0] == 0
    assert run(capsys, *common, "--seed", "3", "--out", str(tmp_path / "b"))[0] == 0
    with (
        Image.open(tmp_path / "a" / "p000_seed3.png") as a,
        Image.open(tmp_path / "b" / "p000_seed3.png") as b,
    ):
        assert a.tobytes() == b.tobytes()


QUICK = ["--prompt", "a", "--steps", "1", "--size", "32x32", "--model", "tiny-random", "--seed", "3"]


def test_a_second_run_keeps_the_first_runs_files(tmp_path, capsys, face_photo):
    out = tmp_path / "out"
    assert run(capsys, "--face", str(face_photo), *QUICK, "--out", str(out))[0] == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert sorted(first) == ["grid.png", "p000_seed3.png"]
    code, err = run(capsys, "--face", str(face_photo), *QUICK, "--guidance-scale", "1", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == [
        "grid-2.png",
        "grid.png",
        "p000_seed3-2.png",
        "p000_seed3.png",
    ]
    assert {name: (out / name).read_bytes() for name in first} == first  # untouched
    assert read_png_metadata(out / "p000_seed3-2.png")["guidance"] == 1.0
    assert read_png_metadata(out / "grid-2.png")["files"] == ["p000_seed3-2.png"]
    assert "grid-2.png" in err


def test_overwrite_replaces_on_purpose(tmp_path, capsys, face_photo):
    out = tmp_path / "out"
    assert run(capsys, "--face", str(face_photo), *QUICK, "--out", str(out))[0] == 0
    code, err = run(
        capsys, "--face", str(face_photo), *QUICK, "--guidance-scale", "1", "--overwrite", "--out", str(out)
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == ["grid.png", "p000_seed3.png"]
    assert read_png_metadata(out / "p000_seed3.png")["guidance"] == 1.0


def test_never_writes_over_its_face_photo(tmp_path, capsys, face_photo):
    out = tmp_path / "out"
    out.mkdir()
    photo = out / "grid.png"
    photo.write_bytes(face_photo.read_bytes())
    code, err = run(capsys, "--face", str(photo), *QUICK, "--out", str(out))
    assert code == 0, err
    assert photo.read_bytes() == face_photo.read_bytes()
    assert (out / "grid-2.png").exists()
    code, err = run(capsys, "--face", str(photo), *QUICK, "--overwrite", "--out", str(out))
    assert code == 2 and "one of this run's inputs" in err and str(photo) in err
    assert photo.read_bytes() == face_photo.read_bytes()
    assert not (out / "p000_seed3-2.png").exists()  # refused before generating


def test_version(capsys):
    from faceclip import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"faceclip {__version__}"


def test_images_do_not_depend_on_the_batch_size(tmp_path, capsys, face_photo):
    """-n 3 in batches of 2 (a batch of 2, then 1) gives the images of one call per image."""
    common = ["--face", str(face_photo), "--prompt", "a", "--steps", "1", "--size", "32x32",
              "--model", "tiny-random", "--seed", "7", "-n", "3"]  # fmt: skip
    assert run(capsys, *common, "--batch-size", "1", "--out", str(tmp_path / "one"))[0] == 0
    assert run(capsys, *common, "--batch-size", "2", "--out", str(tmp_path / "two"))[0] == 0
    for k in range(3):
        name = f"p000_seed{7 + k}.png"
        with Image.open(tmp_path / "one" / name) as a, Image.open(tmp_path / "two" / name) as b:
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.max() <= 1, (name, diff.max())  # float sums in a batch may round differently
        assert read_png_metadata(tmp_path / "two" / name)["seed"] == 7 + k


def test_bad_face_photo(tmp_path, capsys):
    photo = tmp_path / "face.jpg"
    photo.write_text("not an image")
    code, err = run(
        capsys, "--face", str(photo), "--prompt", "a", "--model", "tiny-random", "--out", str(tmp_path)
    )
    assert code != 0
    assert "face.jpg" in err and "Traceback" not in err


def test_missing_face_photo(tmp_path, capsys):
    code, err = run(capsys, "--face", str(tmp_path / "nope.png"), "--prompt", "a", "--out", str(tmp_path))
    assert code != 0 and "nope.png" in err and "Traceback" not in err


def test_no_face_found(tmp_path, capsys):
    photo = tmp_path / "wall.png"
    Image.new("RGB", (128, 128), (200, 180, 160)).save(photo)
    code, err = run(
        capsys, "--face", str(photo), "--prompt", "a", "--model", "tiny-random", "--out", str(tmp_path)
    )
    assert code != 0
    assert "wall.png" in err and "face" in err.lower()
    assert not list(tmp_path.glob("*.png.tmp"))


def test_thin_face_photo_is_no_face_not_a_crash(tmp_path, capsys):
    """On a 2000 x 30 photo YuNet used to report a score-1.0 face far outside it, and OpenCV then crashed."""
    photo = tmp_path / "wide.png"
    Image.new("RGB", (2000, 30)).save(photo)
    code, err = run(
        capsys, "--face", str(photo), "--prompt", "a", "--model", "tiny-random", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert "No face found in" in err and "wide.png" in err and "Traceback" not in err


def test_unwritable_output_folder(tmp_path, capsys, face_photo):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    out = blocker / "sub"
    code, err = run(
        capsys, "--face", str(face_photo), "--prompt", "a", "--model", "tiny-random", "--out", str(out)
    )
    assert code != 0
    assert code == 2 and "cannot create the output folder" in err and str(out) in err


def test_missing_weights(tmp_path, capsys, face_photo, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("FACECLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = run(capsys, "--face", str(face_photo), "--prompt", "a", "--out", str(tmp_path / "out"))
    assert code != 0
    assert "model/face_clip_encoder.pt" in err and "hf download ByteDance/FaceCLIP" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "100x64"], "multiples of 8"),
        (["--size", "big"], "HEIGHTxWIDTH"),
        (["-n", "0"], "-n must be at least 1"),
        (["--prompt", "  "], "no prompt"),
        (["--steps", "0"], "--steps must be a whole number from 1 to 1000; got 0"),
        (["--steps", "-3"], "--steps must be a whole number from 1"),
        (["--guidance-scale", "-1"], "--guidance-scale must be a number from 0 to 100"),
        (["--seed", "99999999999999999999999"], f"--seed must be from 0 to {MAX_SEED} for 1 image"),
        (["--seed", "-1"], "--seed must be from 0"),
        (["--seed", str(MAX_SEED), "-n", "2"], f"--seed must be from 0 to {MAX_SEED - 1} for 2 image(s)"),
        (["--batch-size", "0"], "--batch-size must be a whole number from 1"),
        (["--offload", "--device", "cpu"], "the device here is the CPU (--device cpu); drop --offload"),
    ],
)
def test_bad_arguments(tmp_path, capsys, face_photo, args, message):
    base = ["--face", str(face_photo), "--model", "tiny-random", "--out", str(tmp_path)]
    if "--prompt" not in args:
        base += ["--prompt", "a"]
    code, err = run(capsys, *base, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.png"))


def test_largest_seed_is_accepted(tmp_path, capsys, face_photo):
    args = ["--face", str(face_photo), "--prompt", "a", "--steps", "1", "--size", "32x32"]
    code, err = run(capsys, *args, "--model", "tiny-random", "--seed", str(MAX_SEED), "--out", str(tmp_path))
    assert code == 0, err
    assert read_png_metadata(tmp_path / f"p000_seed{MAX_SEED}.png")["seed"] == MAX_SEED


def test_prompts_file_of_comments_only_is_no_prompt(tmp_path, capsys, face_photo):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# portraits\n\n# none yet\n", encoding="utf-8")
    code, err = run(
        capsys, "--face", str(face_photo), "--prompts-file", str(prompts), "--model", "tiny-random",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "no prompt given" in err and "'#'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_benchmark_script_runs_on_tiny_models(tmp_path):
    """The GPU benchmark's code path (built offline, both pipelines, JSON), on tiny models on the CPU."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "pipeline_cpu.py"
    args = [
        "--arch",
        "tiny",
        "--dtype",
        "fp32",
        "--size",
        "64",
        "--steps",
        "1",
        "--json",
        str(tmp_path / "r.json"),
    ]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, timeout=600)
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results["settings"]) == {"stock_sdxl", "faceclip_sdxl"}
    assert results["ratio_faceclip_over_stock"] > 0
