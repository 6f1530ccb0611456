"""The demo's logic without a browser: photo checks, face preview, settings validation, saved PNGs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

import faceclip
from conftest import FakePipeline
from faceclip.demo import handlers
from faceclip.demo.handlers import DemoError, GenerationSettings
from faceclip.outputs import read_png_metadata


def test_read_photo_returns_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (40, 30), 128).save(path)
    photo = handlers.read_photo(path)
    assert photo.mode == "RGB" and photo.size == (40, 30)


def test_read_photo_refuses_a_text_file_in_plain_words(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(DemoError, match="not an image") as info:
        handlers.read_photo(path)
    assert str(tmp_path) not in str(info.value)  # no server paths in the page


def test_read_photo_refuses_a_truncated_file(tmp_path):
    full = tmp_path / "full.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(DemoError, match="damaged or truncated"):
        handlers.read_photo(cut)


def test_read_photo_refuses_too_many_pixels_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 50)).save(path)
    with pytest.raises(DemoError, match=r"too large \(100×50 pixels\)"):
        handlers.read_photo(path, max_pixels=4_999)
    assert handlers.read_photo(path, max_pixels=5_000).size == (100, 50)


def test_read_photo_refuses_a_decompression_bomb_from_its_header(tmp_path):
    # A PNG header announcing 60000 x 60000 pixels and no image data: never decoded.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(DemoError, match="too large"):
        handlers.read_photo(path)


def test_prepare_face_draws_the_detection(fake_pipe, photo_path):
    photo = handlers.read_photo(photo_path)
    preview = handlers.prepare_face(fake_pipe, photo)
    assert preview.aligned.size == (448, 448)
    assert preview.annotated.size == photo.size  # smaller than display_size: not rescaled
    assert preview.annotated.getpixel((10, 30)) != photo.getpixel((10, 30))  # left edge of the box
    assert preview.annotated.getpixel((70, 90)) == photo.getpixel((70, 90))  # outside the box
    assert "93%" in preview.message


def test_draw_detection_scales_large_photos():
    photo = Image.new("RGB", (2000, 1000), (0, 0, 0))
    detection = FakePipeline().prepare_face(photo).detection
    annotated = handlers.draw_detection(photo, detection, display_size=500)
    assert annotated.size == (500, 250)


def test_prepare_face_without_a_face_says_so(photo_path):
    with pytest.raises(DemoError, match="No face found"):
        handlers.prepare_face(FakePipeline(num_faces=0), handlers.read_photo(photo_path))


def test_prepare_face_picks_among_several_faces(tmp_path):
    pipe = FakePipeline(num_faces=3)
    photo = Image.new("RGB", (200, 80), (0, 0, 0))
    first = handlers.prepare_face(pipe, photo)
    assert (first.num_faces, first.face_index) == (3, 0)
    assert "3 faces found; using face 1" in first.message
    third = handlers.prepare_face(pipe, photo, face_index=2)
    assert third.face_index == 2 and third.face.detection is pipe.faces[2]
    assert "using face 3" in third.message
    assert third.annotated.getpixel((10, 40)) == (200, 200, 200)  # face 1: grey, not used
    assert third.annotated.getpixel((130, 40))[1] == 220  # face 3: green
    assert handlers.prepare_face(pipe, photo, face_index=7).face_index == 0  # stale choice: the largest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "   "}, "Type a prompt"),
        ({"num_images": 5}, "number of images must be a whole number from 1 to 4"),
        ({"num_images": 1.5}, "number of images"),
        ({"steps": 0}, "steps must be"),
        ({"seed": -1}, "seed must be"),
        ({"seed": None}, "seed must be"),
        ({"guidance_scale": 31}, "guidance scale"),
        ({"width": 500}, "width must be a multiple of 8"),
        ({"height": 4096}, "height must be"),
    ],
)
def test_settings_validation_names_the_field(change, message):
    settings = GenerationSettings(**{"prompt": "a photo", **change})
    with pytest.raises(DemoError, match=message):
        settings.validate(max_images=4)


def test_settings_validation_cleans_values():
    settings = GenerationSettings(
        prompt="  a photo ", negative_prompt=None, num_images=2.0, steps=3.0, seed=7.0
    )
    clean = settings.validate()
    assert clean.prompt == "a photo" and clean.negative_prompt == ""
    assert (clean.num_images, clean.steps, clean.seed) == (2, 3, 7)
    assert all(isinstance(v, int) for v in (clean.num_images, clean.steps, clean.seed))


def test_parse_size():
    assert handlers.parse_size("Portrait 864×1152") == (864, 1152)
    assert handlers.parse_size("Custom 320x256") == (320, 256)
    with pytest.raises(DemoError, match="Unknown image size"):
        handlers.parse_size("huge")


def test_random_seed_in_range():
    seeds = {handlers.random_seed() for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s <= handlers.MAX_SEED for s in seeds)


def test_generate_images_saves_pngs_with_metadata(fake_pipe, photo_path, tmp_path):
    face = handlers.prepare_face(fake_pipe, handlers.read_photo(photo_path)).face
    settings = GenerationSettings(
        prompt="a photo", num_images=3, steps=2, seed=handlers.MAX_SEED, width=320, height=256
    )
    progress = []
    paths = list(
        handlers.generate_images(
            fake_pipe,
            face,
            settings,
            tmp_path / "out",
            model_name="fake",
            on_progress=lambda f, d: progress.append((f, d)),
        )
    )
    assert len(paths) == 3 and len(set(paths)) == 3
    seeds = [read_png_metadata(p)["seed"] for p in paths]
    assert seeds == [handlers.MAX_SEED, 0, 1]  # one seed per image, wrapping around
    meta = read_png_metadata(paths[0])
    assert meta["prompt"] == "a photo" and meta["model"] == "fake"
    assert (meta["size"], meta["steps"], meta["guidance"]) == ("256x320", 2, 5.0)
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size == (320, 256)
    # Each call: one image, its own seeded generator, the prepared face tensor, the user's settings.
    call = fake_pipe.calls[0]
    assert call["num_images_per_prompt"] == 1 and call["face_image"] is face.tensor
    assert call["guidance_scale"] == 5.0 and call["negative_prompt"] == settings.negative_prompt
    assert [f for f, _ in progress] == pytest.approx([i / 6 for i in range(1, 7)])
    assert progress[-1][1] == "Image 3/3, step 2/2"


def test_generate_images_records_what_faceclip_generate_records(fake_pipe, photo_path, tmp_path):
    from faceclip.cli.generate import sha256_file

    preview = handlers.prepare_face(fake_pipe, handlers.read_photo(photo_path), face_index=0)
    chosen = handlers.choose_face(preview, photo_path, "my photo.jpg")
    settings = GenerationSettings("a photo", negative_prompt="blurry", num_images=1, steps=3, guidance_scale=4.5,
                                  seed=42, width=320, height=256)  # fmt: skip
    [path] = handlers.generate_images(fake_pipe, chosen, settings, tmp_path, model_name="m")
    assert fake_pipe.calls[0]["face_image"] is preview.face.tensor
    # The same keys as `faceclip generate` writes, so the image can be made again with it:
    # faceclip generate --face PHOTO --prompt ... --negative-prompt ... --seed --steps --guidance --size ...
    assert read_png_metadata(path) == {
        "prompt": "a photo",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 3,
        "guidance": 4.5,
        "size": "256x320",
        "model": "m",
        "face_file": "my photo.jpg",
        "face_sha256": sha256_file(photo_path),
        "face_index": 0,
        "scheduler": "FakeScheduler",
        "dtype": "float32",
        "faceclip_version": faceclip.__version__,
    }


def test_requests_in_the_same_second_with_the_same_seed_keep_both_files(fake_pipe, tmp_path, monkeypatch):
    monkeypatch.setattr(handlers.time, "strftime", lambda fmt: "20260101-120000")  # one and the same second
    face = fake_pipe.prepare_face(None)
    first = list(
        handlers.generate_images(fake_pipe, face, GenerationSettings("one", steps=1, seed=7), tmp_path)
    )
    second = list(
        handlers.generate_images(fake_pipe, face, GenerationSettings("two", steps=1, seed=7), tmp_path)
    )
    assert len({*first, *second}) == 4 and sorted(tmp_path.glob("*.png")) == sorted({*first, *second})
    assert [read_png_metadata(p)["prompt"] for p in first + second] == ["one", "one", "two", "two"]
    assert all(p.name.startswith("faceclip-20260101-120000-") for p in first + second)

    monkeypatch.setattr(handlers.secrets, "token_hex", lambda n: "abcdef")  # even the same request name
    again = list(
        handlers.generate_images(fake_pipe, face, GenerationSettings("3", steps=1, seed=7), tmp_path)
    )
    redo = list(handlers.generate_images(fake_pipe, face, GenerationSettings("4", steps=1, seed=7), tmp_path))
    assert [p.name for p in again + redo] == [
        "faceclip-20260101-120000-abcdef-seed7.png",
        "faceclip-20260101-120000-abcdef-seed8.png",
        "faceclip-20260101-120000-abcdef-seed7-2.png",
        "faceclip-20260101-120000-abcdef-seed8-2.png",
    ]
    assert len(list(tmp_path.glob("*.png"))) == 8


def test_generate_images_is_reproducible_per_seed(fake_pipe, photo_path, tmp_path):
    face = fake_pipe.prepare_face(None)
    first = list(
        handlers.generate_images(
            fake_pipe, face, GenerationSettings("p", num_images=2, steps=1, seed=5), tmp_path
        )
    )
    again = list(
        handlers.generate_images(
            fake_pipe, face, GenerationSettings("p", num_images=1, steps=1, seed=6), tmp_path
        )
    )
    with Image.open(first[1]) as a, Image.open(again[0]) as b:
        assert a.getpixel((0, 0)) == b.getpixel((0, 0))


@pytest.mark.slow
def test_a_demo_image_is_made_again_by_faceclip_generate_from_its_metadata(tmp_path):
    # The demo's claim: every image can be reproduced from its metadata. With tiny-random on the CPU, the
    # command `faceclip generate` built from a demo PNG's metadata gives the same pixels and the same metadata.
    import numpy as np

    from faceclip.cli import main
    from faceclip.registry import load_pipeline

    photo = Path(__file__).parents[1] / "data" / "faces" / "astronaut.png"
    pipe = load_pipeline("tiny-random").to("cpu")
    pipe.set_progress_bar_config(disable=True)
    preview = handlers.prepare_face(pipe, handlers.read_photo(photo))
    settings = GenerationSettings("a photo of a person", negative_prompt="blurry", num_images=2, steps=2,
                                  guidance_scale=4.0, seed=3, width=64, height=96)  # fmt: skip
    chosen = handlers.choose_face(preview, photo, photo.name)
    other_png, demo_png = handlers.generate_images(
        pipe, chosen, settings, tmp_path / "demo", model_name="tiny-random"
    )
    meta = read_png_metadata(demo_png)

    command = ["generate", "--face", str(photo), "--prompt", meta["prompt"], "--negative-prompt",
               meta["negative_prompt"], "--seed", str(meta["seed"]), "--steps", str(meta["steps"]), "--guidance",
               str(meta["guidance"]), "--size", meta["size"], "--model", meta["model"], "--face-index",
               str(meta["face_index"]), "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(command) == 0
    [cli_png] = (tmp_path / "cli").glob("00-00-seed*.png")
    assert read_png_metadata(cli_png) == meta
    demo, cli, other = (np.asarray(Image.open(p), dtype=np.int16) for p in (demo_png, cli_png, other_png))
    assert np.abs(demo - cli).max() <= 1 and np.abs(demo - other).max() > 10  # same seed alike, others not
