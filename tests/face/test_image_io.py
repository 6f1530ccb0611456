"""load_image: every input kind, every mode converted to RGB, and a clear error for every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceclip.face import ImageLoadError, load_image


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    return np.stack([x, y, 255 - x], axis=-1).round().astype(np.uint8)  # (H, W, 3)


def test_path_str_pil_and_array_agree(tmp_path):
    array = _gradient()
    path = tmp_path / "g.png"
    Image.fromarray(array).save(path)
    for source in (path, str(path), Image.fromarray(array), array):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (40, 30)
        np.testing.assert_array_equal(np.asarray(image), array)


def test_exif_orientation_is_applied(tmp_path):
    array = _gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (30, 40)
    expected = np.asarray(Image.fromarray(array).transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(image).astype(int) - expected).mean() < 3


@pytest.mark.parametrize(
    ("mode", "expected_pixel"),
    [
        ("L", (128, 128, 128)),
        ("LA", (255, 255, 255)),  # fully transparent -> white background
        ("RGBA", (255, 255, 255)),
        ("P", None),
        ("CMYK", None),
        ("1", None),
    ],
)
def test_modes_become_rgb(tmp_path, mode, expected_pixel):
    if mode == "L":
        image = Image.new("L", (8, 6), 128)
    elif mode in ("LA", "RGBA"):
        image = Image.new(mode, (8, 6), (10, 0) if mode == "LA" else (10, 20, 30, 0))
    else:
        image = Image.fromarray(_gradient()).convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{suffix}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == image.size
    if expected_pixel is not None:
        assert loaded.getpixel((0, 0)) == expected_pixel


def test_half_transparent_rgba_composites_onto_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert load_image(image).getpixel((0, 0)) == (127, 127, 127)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 0
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    array = np.array([[0, 257 * 100, 65535]], dtype=np.uint16).repeat(3, 0)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = np.asarray(load_image(path))
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 100, 255])


@pytest.mark.parametrize(
    "array",
    [
        np.full((5, 6), 0.5, dtype=np.float32),
        np.full((5, 6, 1), 128, dtype=np.uint8),
        np.full((5, 6, 3), 257 * 128, dtype=np.uint16),
        np.full((5, 6, 4), 128, dtype=np.uint8),
        np.ones((5, 6), dtype=bool),
    ],
)
def test_arrays_of_every_supported_kind(array):
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (6, 5)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 6, 2), dtype=np.uint8), r"shape \(5, 6, 2\)"),
        (np.zeros((2, 5, 6, 3), dtype=np.uint8), "shape"),
        (np.zeros((5, 6, 3), dtype=np.complex64), "dtype complex64"),
        (np.full((5, 6), np.nan), "NaN"),
        (
            np.full((5, 6, 3), 200.0),
            r"from 200 to 200; float arrays must be in \[0, 1\]: divide 0-255 data by 255",
        ),
        (np.linspace(0, 255, 30, dtype=np.float32).reshape(5, 6), r"float32 with values from 0 to 255"),
        (np.full((5, 6), -0.5), r"from -0.5 to -0.5"),
    ],
)
def test_bad_arrays_are_explained(array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)


def test_float_arrays_at_the_ends_of_the_unit_range_are_read():
    array = np.array([[0.0, 1.0, 1.0 + 1e-6, -1e-6]], dtype=np.float32)  # rounding noise past 0 and 1
    np.testing.assert_array_equal(np.asarray(load_image(array))[0, :, 0], [0, 255, 255, 0])


def test_wrong_type_names_the_argument():
    with pytest.raises(ImageLoadError, match=r"`source` must be a path.*got int"):
        load_image(3)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageLoadError, match=r"not found: '.*nope\.jpg'"):
        load_image(tmp_path / "nope.jpg")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageLoadError, match=r"Cannot read '.*notes\.jpg'.*corrupt"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_names_it(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r"Cannot read '.*cut\..*'.*(truncated|corrupt)"):
        load_image(path)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims to be ``width x height`` (its pixel data is a few bytes): a decompression bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 10_000, 10_000)
    with pytest.raises(ImageLoadError, match=r"'.*bomb\.png' is 10000x10000 = 100000000 pixels.*max_pixels"):
        load_image(path)
    # a caller-chosen limit applies to arrays and PIL images too
    with pytest.raises(ImageLoadError, match="more than the limit of 100"):
        load_image(np.zeros((20, 20, 3), dtype=np.uint8), max_pixels=100)


def test_pillow_refusal_is_reported_too(tmp_path):
    # above twice Pillow's own limit, Pillow refuses in Image.open; the message still names the file
    path = tmp_path / "huge.png"
    _png_header_only(path, 30_000, 30_000)
    with pytest.raises(ImageLoadError, match=r"'.*huge\.png' is too large to decode safely"):
        load_image(path, max_pixels=None)


def test_lazily_opened_truncated_pil_image_names_its_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    path = tmp_path / "lazy.png"
    path.write_bytes(buffer.getvalue()[:400])
    with (
        Image.open(path) as image,  # opening reads only the header
        pytest.raises(ImageLoadError, match=r"Cannot read '.*lazy\.png'.*truncated"),
    ):
        load_image(image)
