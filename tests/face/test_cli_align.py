"""`faceclip align` through the real entry point: outputs, summary, skipping bad inputs, exit codes."""

from __future__ import annotations

import json
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from faceclip.cli import main
from faceclip.outputs import read_png_metadata


@pytest.fixture
def photos(tmp_path, astronaut):
    folder = tmp_path / "photos"
    folder.mkdir()
    astronaut.save(folder / "astro.jpg", quality=92)
    astronaut.rotate(20, resample=Image.Resampling.BICUBIC, expand=True).save(folder / "tilted.png")
    (folder / "readme.txt").write_text("not an image, and not picked up from a folder")
    return folder


def test_align_folder_writes_crop_and_json(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["align", str(photos), "--out", str(out), "--size", "224"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["astro.json", "astro.png", "tilted.json", "tilted.png"]
    with Image.open(out / "astro.png") as crop:
        assert crop.size == (224, 224)
    record = json.loads((out / "astro.json").read_text())
    assert record["size"] == 224 and record["source"].endswith("astro.jpg")
    assert len(record["box"]) == 4 and 0.5 < record["score"] <= 1
    assert np.asarray(record["landmarks"]).shape == (5, 2)
    assert np.asarray(record["transform"]).shape == (2, 3)
    assert read_png_metadata(out / "astro.png")["faceclip_align"]["landmarks"] == record["landmarks"]
    # landmarks are in source pixels: the astronaut's left eye sits near x=138, y=102
    assert abs(record["landmarks"][0][0] - 138) < 8 and abs(record["landmarks"][0][1] - 102) < 8
    err = capsys.readouterr().err
    assert "aligned 2 of 2 image(s)" in err and "failed" not in err


def test_bad_inputs_are_reported_skipped_and_fail_the_run(photos, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("RGB", (200, 160), (90, 140, 200)).save(photos / "sky.png")
    out = tmp_path / "out"
    code = main(["align", str(photos), str(tmp_path / "missing.jpg"), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err and "corrupt" in err
    assert "sky.png" in err and "No face found" in err
    assert "missing.jpg" in err and "not found" in err
    assert "aligned 2 of 5 image(s)" in err and "3 failed" in err
    # nothing is written for a failed input, and no temporary files are left behind
    assert sorted(p.name for p in out.iterdir()) == ["astro.json", "astro.png", "tilted.json", "tilted.png"]


def _write_bad_input(kind: str, folder, astronaut) -> str:
    """One bad input per case of the issue; returns the message the run must print for it."""
    if kind == "missing":
        return "not found"
    path = folder / f"{kind}.png"
    if kind == "corrupt":
        path.write_bytes(b"GIF89a but not really")
    elif kind == "truncated":
        astronaut.save(path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "bomb":

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

        header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")))
    elif kind == "no-face":
        Image.new("RGB", (300, 200), (200, 180, 150)).save(path)
    return {
        "corrupt": "corrupt",
        "truncated": "truncated",
        "bomb": "decompression bombs). Downscale it first (from Python,",
        "no-face": "No face",
    }[kind]


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "bomb", "no-face"])
def test_each_bad_input_is_reported_and_nothing_is_written(tmp_path, astronaut, capsys, kind):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    astronaut.save(good / "astro.png")
    expected = _write_bad_input(kind, bad, astronaut)
    bad_path = bad / f"{kind}.png"
    out = tmp_path / "out"
    assert main(["align", str(bad_path), str(good / "astro.png"), "--out", str(out), "--size", "112"]) == 1
    err = capsys.readouterr().err
    assert f"skipped '{bad_path}'" in err and expected in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["astro.json", "astro.png"]


def test_face_index_beyond_faces_found(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["align", str(photos / "astro.jpg"), "--out", str(out), "--face-index", "3"]) == 1
    assert "Face index 3 is out of range: only 1 face(s)" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_same_stem_in_two_folders_does_not_overwrite(tmp_path, astronaut):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        astronaut.save(tmp_path / name / "face.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "align",
                str(tmp_path / "a" / "face.png"),
                str(tmp_path / "b"),
                "--out",
                str(out),
                "--size",
                "112",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["face-1.json", "face-1.png", "face.json", "face.png"]


def test_usage_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["align", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no image files found" in capsys.readouterr().err
    assert main(["align", str(tmp_path), "--out", str(tmp_path / "out"), "--size", "8"]) == 2
    assert "--size must be at least 16" in capsys.readouterr().err


def test_missing_insightface_is_a_clear_usage_error(monkeypatch, photos, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    out = tmp_path / "out"
    assert main(["align", str(photos), "--out", str(out), "--backend", "insightface"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "faceclip[insightface]"' in err and "Traceback" not in err
    assert "'opencv' face backend" in err and "backend='opencv'" not in err  # no Python spelling on the CLI
    assert not out.exists()


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("given", ["folder", "file"])
def test_out_holding_the_inputs_is_refused_and_the_photos_are_untouched(photos, astronaut, capsys, given):
    astronaut.save(photos / "astro.png")  # what `photos/astro.jpg` would be aligned to
    before = _snapshot(photos)
    inputs = [str(photos)] if given == "folder" else [str(photos / "astro.jpg")]
    assert main(["align", *inputs, "--out", str(photos), "--size", "112"]) == 2
    err = capsys.readouterr().err
    assert f"--out '{photos}'" in err and "separate output folder" in err and "Traceback" not in err
    assert _snapshot(photos) == before


def test_an_output_that_leads_onto_an_input_is_skipped(photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "astro.png").symlink_to(photos / "astro.jpg")  # writing astro.png would go through to the photo
    before = (photos / "astro.jpg").read_bytes()
    assert main(["align", str(photos), "--out", str(out), "--size", "112"]) == 1
    err = capsys.readouterr().err
    assert f"skipped '{photos / 'astro.jpg'}'" in err and "is an input photo" in err
    assert "aligned 1 of 2 image(s)" in err and "1 failed" in err
    assert (photos / "astro.jpg").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["astro.png", "tilted.json", "tilted.png"]


def test_out_that_is_a_file_is_a_usage_error(photos, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert main(["align", str(photos / "astro.jpg"), "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert f"--out '{afile}' is a file, not a folder" in err and "Traceback" not in err
    assert afile.read_text() == "keep me"
    assert main(["align", str(photos / "astro.jpg"), "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "is a file" in err and "Traceback" not in err


def test_a_write_failure_skips_that_input_and_the_batch_goes_on(photos, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "astro.png").mkdir(parents=True)  # the crop of astro.jpg cannot be written there
    assert main(["align", str(photos), "--out", str(out), "--size", "112"]) == 1
    err = capsys.readouterr().err
    assert f"skipped '{photos / 'astro.jpg'}': cannot write '{out / 'astro.png'}'" in err
    assert "aligned 1 of 2 image(s)" in err and "1 failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["astro.png", "tilted.json", "tilted.png"]
    assert list((out / "astro.png").iterdir()) == []


def test_a_second_run_keeps_earlier_crops_unless_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["align", str(photos), "--out", str(out), "--size", "112"]) == 0
    capsys.readouterr()
    crop = out / "astro.png"
    stamp = crop.stat().st_mtime_ns
    assert main(["align", str(photos), "--out", str(out), "--size", "128"]) == 0
    assert "kept 2 crop(s) of an earlier run" in capsys.readouterr().err
    assert crop.stat().st_mtime_ns == stamp
    assert main(["align", str(photos), "--out", str(out), "--size", "128", "--overwrite"]) == 0
    assert "aligned 2 of 2" in capsys.readouterr().err
    with Image.open(crop) as image:
        assert image.size == (128, 128)
