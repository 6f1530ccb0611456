"""Loading any user image (file, PIL image or numpy array) as an 8-bit RGB PIL image.

Every path into the package that accepts a photo goes through :func:`load_image`, so EXIF orientation, unusual
modes (RGBA, LA, P, CMYK, 16-bit, greyscale) and hostile files (missing, corrupt, truncated, decompression bombs)
are handled once, with errors that name the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's default limit (about 89.5 megapixels, e.g. 9458 x 9458): larger images are refused, not decoded.
DEFAULT_MAX_PIXELS = 89_478_485

FLOAT_TOLERANCE = 0.5 / 255
"""How far outside [0, 1] a float array may stray (rounding) and still be read: half an 8-bit step."""

ImageSource = str | os.PathLike | Image.Image | np.ndarray


class ImageLoadError(ValueError):
    """An image could not be read; the message names the source and says what to do."""


class ImageTypeError(ImageLoadError, TypeError):
    """The image is not a path, PIL image or numpy array (an :class:`ImageLoadError` and a ``TypeError``)."""


def load_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load ``source`` as an RGB PIL image with EXIF orientation applied.

    Args:
        source: a path to any file Pillow reads, a PIL image, or a numpy array (H, W), (H, W, 1), (H, W, 3) or
            (H, W, 4) in RGB(A) channel order; uint8, uint16, bool, or float in [0, 1] (a float array beyond
            that range is refused, not clipped).
        max_pixels: refuse images with more pixels than this (decompression-bomb guard); ``None`` disables it.

    Returns:
        A new PIL image in mode ``"RGB"`` (transparency composited onto white, 16-bit scaled to 8-bit).

    Raises:
        ImageLoadError: the file is missing, not an image, truncated or too large, or the array has an
            unsupported shape or dtype, or float values outside [0, 1].
    """
    if isinstance(source, Image.Image):
        name = f"'{source.filename}'" if getattr(source, "filename", "") else "the PIL image"
        if 0 in source.size:
            raise ImageLoadError(
                f"image: {name} is empty ({source.width}x{source.height} pixels); pass a photo."
            )
        _check_pixels(source.size, max_pixels, name)
        try:
            return to_rgb(ImageOps.exif_transpose(source))
        except OSError as error:  # a lazily opened image whose file is corrupt or truncated
            raise ImageLoadError(f"Cannot read {name}: the file is corrupt or truncated ({error}).") from None
    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[1::-1], max_pixels, "the numpy array")
        return array_to_image(source)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), max_pixels)
    hint = (
        "; convert a (3, H, W) tensor in [0, 1] with x.permute(1, 2, 0).numpy()"
        if hasattr(source, "ndim")
        else ""
    )
    raise ImageTypeError(
        f"load_image: `source` must be a path, a PIL.Image.Image or a numpy array (H, W, 3) of the image, "
        f"got {type(source).__name__}{hint}."
    )


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"{name} is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels} "
            "(a guard against decompression bombs). Downscale it first (from Python, a trusted file can also be "
            "read with a larger `max_pixels`)."
        )


def check_regular_file(path: Path, what: str = "an image file") -> None:
    """Refuse, before reading a byte, a path that is a folder, a pipe, a device (``/dev/zero``) or a socket:
    reading those can block forever or never end.

    Raises:
        ImageLoadError: naming the path and what it is.
    """
    if path.is_dir():
        raise ImageLoadError(f"'{path}' is a folder, not {what}.")
    if not path.is_file():
        raise ImageLoadError(f"'{path}' is not a regular file (a pipe, device or socket), not {what}.")


def _load_file(path: Path, max_pixels: int | None) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"Image file not found: '{path}'. Check the path.")
    check_regular_file(path)
    try:
        # Pillow warns between 1x and 2x its own limit and refuses above; our check is exact, so mute the warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(image.size, max_pixels, f"Image file '{path}'")
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"Image file '{path}' is too large to decode safely ({error}). Downscale it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"Cannot read '{path}': not an image format Pillow recognises (is the file corrupt?)."
        ) from None
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"Cannot read '{path}': the file is corrupt or truncated ({error}).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB (alpha composited onto white, 16/32-bit rescaled)."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode == "F":  # 32-bit float pixels: 0-1, 0-255 or 0-65535 depending on the writer
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max(initial=0.0)), 1.0)
        scaled = array / (1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0)
        return array_to_image(np.clip(scaled, 0.0, 1.0))  # a file's stray negatives are clipped, as before
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return array_to_image(np.asarray(image))
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def array_to_image(array: np.ndarray) -> Image.Image:
    """Convert an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) RGB(A) array to an 8-bit RGB PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise ImageLoadError(
            f"Unsupported image array shape {tuple(array.shape)}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."
        )
    array = _to_uint8(array)
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")  # mode "L"
    if array.shape[2] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(array)))  # mode "RGBA"
    return Image.fromarray(np.ascontiguousarray(array))  # mode "RGB"


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError("The image array contains NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:  # not clipped: 0-255 data would turn white
            raise ImageLoadError(
                f"The image array is {array.dtype} with values from {low:g} to {high:g}; float arrays must be "
                "in [0, 1]: divide 0-255 data by 255 (or pass it as uint8)."
            )
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    if array.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        return (array.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        # 32-bit integer images (Pillow mode "I") hold 16-bit data in practice.
        peak = 65535 if array.max(initial=0) > 255 else 255
        return np.clip(array.astype(np.int64) * 255 // peak, 0, 255).astype(np.uint8)
    raise ImageLoadError(
        f"Unsupported image array dtype {array.dtype}: use uint8, uint16, bool, or float in [0, 1]."
    )
