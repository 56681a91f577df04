"""The conditioning image: decoding and validating any supported input (``load_image``) and fitting it to a
stage's size (``prepare_image``)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Largest accepted input image, in pixels (64 MP: every phone camera fits; above this PIL's own
# decompression-bomb guard would start warning at ~89 MP).
MAX_INPUT_PIXELS = 64_000_000


class ImageInputError(ValueError):
    """The conditioning image cannot be used (not an image, corrupt, too large, bad size)."""


def _open_image(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _array_to_image(image)
    try:
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise ImageInputError(f"image file not found: {path}")
            return Image.open(path)
        if isinstance(image, (bytes, bytearray, memoryview)):
            if not len(image):
                raise ImageInputError("empty image data")
            return Image.open(io.BytesIO(bytes(image)))
        if hasattr(image, "read"):
            return Image.open(image)
    except ImageInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise ImageInputError(f"not a readable image: {exc}") from exc
    raise ImageInputError(f"unsupported image input of type {type(image).__name__}")


def _array_to_image(array: np.ndarray) -> Image.Image:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageInputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.size == 0:
        raise ImageInputError("empty image array")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError("image array contains NaN or infinite values")
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        scale = 257.0 if arr.max() > 255 else 1.0
        arr = np.round(np.clip(arr / scale, 0, 255)).astype(np.uint8)
    else:
        raise ImageInputError(f"unsupported image array dtype {arr.dtype}")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited over white, 16-bit / float greys are rescaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        return Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ImageInputError("float image contains NaN or infinite values")
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


# EXIF orientations that ImageOps.exif_transpose turns upright (1 and unknown values: the pixels as stored)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset(range(2, 9))


def _is_loaded_rgb(image: Any, max_pixels: int) -> bool:
    """Whether ``image`` already is what :func:`load_image` returns, so that it can be returned unchanged.

    Only a plain in-memory ``PIL.Image.Image`` qualifies (its pixels are decoded; file-backed images, the
    ``ImageFile`` subclasses, may be lazy or have several frames), in mode RGB, with a size ``load_image`` accepts
    and no EXIF orientation that ``exif_transpose`` would apply.
    """
    if type(image) is not Image.Image or image.mode != "RGB":
        return False
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        return False
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1) not in _TRANSPOSED_ORIENTATIONS
    except Exception:  # malformed EXIF or orientation value: load_image's own path decides
        return False


def load_image(image: Any, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Any supported input as an upright 8-bit RGB PIL image (EXIF orientation applied).

    Accepts a PIL image, a path, bytes, a binary file object or a numpy array (HxW[xC], uint8/uint16/bool, or
    float in [0, 1]). Raises :class:`ImageInputError` for non-images, corrupt files and images above
    ``max_pixels`` (checked from the header, before decoding).

    Idempotent and cheap on its own result: an image this function returned (an in-memory, decoded RGB
    ``PIL.Image.Image`` within ``max_pixels`` with no EXIF orientation left to apply) is returned as it is, the
    same object, not decoded, copied or converted again. So a caller that validated an upload with
    ``load_image`` may pass the decoded image on (to :func:`prepare_image`, ``explorer.pipeline.generate``)
    instead of the file: the file is then decoded once.
    """
    if _is_loaded_rgb(image, max_pixels):
        return image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open_image(image)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageInputError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageInputError(
                f"image is too large: {width}x{height} = {width * height} pixels > limit {max_pixels}"
            )
        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageInputError(f"corrupt or truncated image: {exc}") from exc
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # malformed EXIF: use the pixels as stored
            pass
        try:
            return _to_rgb(img)
        except ImageInputError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageInputError(f"cannot convert image of mode {img.mode} to RGB: {exc}") from exc


def prepare_image(
    image: Any, width: int, height: int, max_pixels: int = MAX_INPUT_PIXELS
) -> Image.Image:
    """The conditioning image as the model sees it: RGB, scaled to cover ``width`` x ``height`` keeping its
    aspect ratio, then centre-cropped (Lanczos). Show this to the user. See :func:`load_image` for inputs.

    Callers may pass the image :func:`load_image` returned (e.g. an upload validated once): it is not decoded or
    converted again, only resized; a result of ``prepare_image`` passed back at the same size comes back as an
    equal copy."""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise ImageInputError(f"target size must be positive integers, got {width}x{height}")
    img = load_image(image, max_pixels=max_pixels)
    src_w, src_h = img.size
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = width / scale, height / scale
    left, top = (src_w - crop_w) / 2.0, (src_h - crop_h) / 2.0
    box = (left, top, left + crop_w, top + crop_h)
    return img.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
