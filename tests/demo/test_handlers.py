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
from faceclip.demo.handlers import DemoError, FormValues
from faceclip.generation import MAX_SEED, random_seed
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
    preview = handlers.preview_face(fake_pipe, photo)
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
        handlers.preview_face(FakePipeline(num_faces=0), handlers.read_photo(photo_path))


def test_prepare_face_picks_among_several_faces(tmp_path):
    pipe = FakePipeline(num_faces=3)
    photo = Image.new("RGB", (200, 80), (0, 0, 0))
    first = handlers.preview_face(pipe, photo)
    assert (first.num_faces, first.face_index) == (3, 0)
    assert "3 faces found; using face 1" in first.message
    third = handlers.preview_face(pipe, photo, face_index=2)
    assert third.face_index == 2 and third.face.detection is pipe.faces[2]
    assert "using face 3" in third.message
    assert third.annotated.getpixel((10, 40)) == (200, 200, 200)  # face 1: grey, not used
    assert third.annotated.getpixel((130, 40))[1] == 220  # face 3: green
    assert handlers.preview_face(pipe, photo, face_index=7).face_index == 0  # stale choice: the largest


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
    form = FormValues(**{"prompt": "a photo", **change})
    with pytest.raises(DemoError, match=message):
        form.to_settings(max_images=4)


def test_settings_validation_cleans_values():
    form = FormValues(prompt="  a photo ", negative_prompt=None, num_images=2.0, steps=3.0, seed=7.0)
    settings = form.to_settings()
    assert settings.prompts == ("a photo",) and settings.negative_prompt == ""
    assert settings.seeds == (7, 8) and settings.num_inference_steps == 3
    assert all(isinstance(v, int) for v in (*settings.seeds, settings.num_inference_steps))


def test_the_last_seeds_do_not_wrap():
    assert FormValues("a", num_images=2, seed=MAX_SEED - 1).to_settings().seeds == (MAX_SEED - 1, MAX_SEED)
    with pytest.raises(DemoError, match=f"seed can be at most {MAX_SEED - 2}"):
        FormValues("a", num_images=3, seed=MAX_SEED - 1).to_settings()


def test_size_from_label():
    assert handlers.size_from_label("Portrait 864×1152") == (864, 1152)
    assert handlers.size_from_label("Custom 320x256") == (320, 256)
    with pytest.raises(DemoError, match="Unknown image size"):
        handlers.size_from_label("huge")


def test_random_seed_in_range():
    seeds = {random_seed() for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s <= MAX_SEED for s in seeds)


def test_generate_images_saves_pngs_with_metadata(fake_pipe, photo_path, tmp_path):
    face = handlers.preview_face(fake_pipe, handlers.read_photo(photo_path)).face
    settings = FormValues(
        prompt="a photo", num_images=3, steps=2, seed=MAX_SEED - 2, width=320, height=256
    ).to_settings()
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
    assert seeds == [MAX_SEED - 2, MAX_SEED - 1, MAX_SEED]  # one seed per image
    meta = read_png_metadata(paths[0])
    assert meta["prompt"] == "a photo" and meta["model"] == "fake"
    assert (meta["size"], meta["steps"], meta["guidance"]) == ("256x320", 2, 5.0)
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size == (320, 256)
    # Each call: one image, its own seeded generator, the prepared face tensor, the user's settings.
    call = fake_pipe.calls[0]
    assert call["num_images_per_prompt"] == 1 and call["face_image"] is face
    assert call["guidance_scale"] == 5.0 and call["negative_prompt"] == settings.negative_prompt
    assert [f for f, _ in progress] == pytest.approx([i / 6 for i in range(1, 7)])
    assert progress[-1][1] == "Image 3/3, step 2/2"


def test_generate_images_records_what_faceclip_generate_records(fake_pipe, photo_path, tmp_path):
    from faceclip.outputs import file_sha256

    preview = handlers.preview_face(fake_pipe, handlers.read_photo(photo_path), face_index=0)
    chosen = handlers.choose_face(preview, photo_path, "my photo.jpg")
    settings = FormValues("a photo", negative_prompt="blurry", num_images=1, steps=3, guidance_scale=4.5,
                          seed=42, width=320, height=256).to_settings()  # fmt: skip
    [path] = handlers.generate_images(fake_pipe, chosen, settings, tmp_path, model_name="m")
    assert fake_pipe.calls[0]["face_image"] is preview.face
    # The same keys as `faceclip generate` writes, so the image can be made again with it:
    # faceclip generate --face PHOTO --prompt ... --negative-prompt ... --seed --steps --guidance --size ...
    meta = read_png_metadata(path)
    assert meta.pop("family", None) is None  # a stand-in pipeline of no family; the real ones: test_models.py
    assert meta == {
        "prompt": "a photo",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 3,
        "guidance": 4.5,
        "size": "256x320",
        "model": "m",
        "face_file": "my photo.jpg",
        "face_sha256": file_sha256(photo_path),
        "face_index": 0,
        "scheduler": "FakeScheduler",
        "dtype": "float32",
        "faceclip_version": faceclip.__version__,
    }


def test_requests_with_the_same_seed_keep_both_files(fake_pipe, tmp_path):
    face = fake_pipe.prepare_face(None)

    def request(prompt: str) -> list[Path]:
        settings = FormValues(prompt, steps=1, seed=7).to_settings()
        return list(handlers.generate_images(fake_pipe, face, settings, tmp_path))

    first, second = request("one"), request("two")
    assert [p.name for p in first + second] == [
        "p000_seed7.png", "p000_seed8.png", "p000_seed7-2.png", "p000_seed8-2.png"
    ]  # fmt: skip
    assert [read_png_metadata(p)["prompt"] for p in first + second] == ["one", "one", "two", "two"]
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_generate_images_is_reproducible_per_seed(fake_pipe, photo_path, tmp_path):
    face = fake_pipe.prepare_face(None)
    first = list(
        handlers.generate_images(
            fake_pipe, face, FormValues("p", num_images=2, steps=1, seed=5).to_settings(), tmp_path
        )
    )
    again = list(
        handlers.generate_images(
            fake_pipe, face, FormValues("p", num_images=1, steps=1, seed=6).to_settings(), tmp_path
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
    preview = handlers.preview_face(pipe, handlers.read_photo(photo))
    settings = FormValues("a photo of a person", negative_prompt="blurry", num_images=2, steps=2,
                          guidance_scale=4.0, seed=3, width=64, height=96).to_settings()  # fmt: skip
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
    [cli_png] = (tmp_path / "cli").glob("p000_seed*.png")
    assert read_png_metadata(cli_png) == meta
    demo, cli, other = (np.asarray(Image.open(p), dtype=np.int16) for p in (demo_png, cli_png, other_png))
    assert np.abs(demo - cli).max() <= 1 and np.abs(demo - other).max() > 10  # same seed alike, others not
