"""What a request brings: the uploaded image checked once (format, size, path confinement) and text made safe
for messages and file names."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_INPUT_SIDE = 32  # px: below this the crop/upscale is meaningless


def shorten(text: Any, limit: int = 80) -> str:
    """``text`` for an error message: at most ``limit`` characters (a request can carry megabytes)."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def safe_name(text: str) -> str:
    """A file-name-safe version of a stage key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


@dataclass
class CheckedImage:
    """A validated conditioning image (RGB) and what was done to it."""

    image: Any  # PIL.Image.Image, RGB
    digest: str  # sha256 of the decoded pixels: the cache key (independent of the file format)
    notes: list[str]
    original_size: tuple[int, int]
    original_mode: str


def image_path_of(value: Any) -> Any:
    """The file path inside a gradio payload (dict / FileData / str), or the value itself (array, PIL...)."""
    if value is None:
        return None
    if isinstance(value, dict):
        for key in ("path", "name"):
            if value.get(key):
                return value[key]
        if isinstance(value.get("url"), str) and value["url"].startswith("data:"):
            import base64

            try:
                return base64.b64decode(value["url"].split(",", 1)[1])
            except (ValueError, IndexError):
                return b""
        return None
    path = getattr(value, "path", None)
    return path if isinstance(path, str) else value


def confine_path(src: Any, roots: Sequence[str | Path] | None) -> Any:
    """``src`` unchanged when it is not a file path or lies inside one of ``roots``; otherwise refused.

    Requests name files by path (gradio's upload cache); a crafted request could name any file on the server
    (``/etc/passwd``, ``../../secret.png``). Paths are resolved (symlinks, ``..``) before the check."""
    from explorer.pipeline import ImageInputError

    if roots is None or not isinstance(src, (str, os.PathLike)):
        return src
    try:
        real = Path(src).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        raise ImageInputError("file is not inside the app's upload folder") from None
    for root in roots:
        try:
            real.relative_to(Path(root).resolve())
            return src
        except ValueError:
            continue
    raise ImageInputError("file is not inside the app's upload folder (upload the image instead of naming a "
                          "server path)")


def check_image(value: Any, roots: Sequence[str | Path] | None = None) -> CheckedImage:
    """Validate an uploaded image; raises ``explorer.pipeline.ImageInputError`` with a readable message.

    Refused: no image, not an image, corrupt/truncated, above the pixel limit (checked from the header), smaller
    than ``MIN_INPUT_SIDE`` px on a side. Accepted with a note: grayscale (replicated to RGB), transparency
    (composited over white), 16-bit, palette, EXIF rotation.
    """
    from PIL import Image

    from explorer.pipeline import MAX_INPUT_PIXELS, ImageInputError, load_image

    src = image_path_of(value)
    if src is None or (isinstance(src, str) and not src):
        raise ImageInputError("no image: upload one or pick an example")
    src = confine_path(src, roots)
    mode, size = "?", (0, 0)
    try:  # header only, to describe the original (load_image decodes and validates)
        if isinstance(src, (str, os.PathLike)):
            with Image.open(src) as im:
                mode, size = im.mode, im.size
        elif isinstance(src, (bytes, bytearray)):
            import io

            with Image.open(io.BytesIO(bytes(src))) as im:
                mode, size = im.mode, im.size
        elif isinstance(src, Image.Image):
            mode, size = src.mode, src.size
        elif isinstance(src, np.ndarray):
            size = (int(src.shape[1]), int(src.shape[0])) if src.ndim >= 2 else (0, 0)
            mode = {2: "L"}.get(src.ndim, "RGBA" if src.ndim == 3 and src.shape[-1] == 4 else "RGB")
    except Exception:  # noqa: BLE001 - load_image below gives the user-facing reason
        pass
    try:
        img = load_image(src, max_pixels=MAX_INPUT_PIXELS)
    except ImageInputError as exc:  # name the file, not the server's upload path
        if isinstance(src, (str, os.PathLike)):
            raise ImageInputError(str(exc).replace(str(src), Path(src).name)) from None
        raise
    w, h = img.size
    if min(w, h) < MIN_INPUT_SIDE:
        raise ImageInputError(f"image is too small: {w}x{h} px; need at least {MIN_INPUT_SIDE} px on each side")
    notes: list[str] = []
    if mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        notes.append(f"grayscale image (mode {mode}): replicated to 3 channels")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "A" in img.getbands()):
        notes.append(f"image has transparency (mode {mode}): composited over white")
    if mode == "P":
        notes.append("palette image: converted to RGB")
    if size != (0, 0) and size not in ((w, h), (h, w)):
        notes.append(f"decoded size {w}x{h} differs from the header {size[0]}x{size[1]}")
    elif size == (h, w) and w != h:
        notes.append("EXIF orientation applied")
    digest = hashlib.sha256(f"{w}x{h}".encode() + img.tobytes()).hexdigest()
    return CheckedImage(img, digest, notes, (w, h), mode)


def upscale_note(checked: CheckedImage, width: int, height: int) -> str | None:
    """A note when the image is enlarged a lot to cover the stage's size (detail is invented, not kept)."""
    w, h = checked.original_size
    factor = max(width / max(w, 1), height / max(h, 1))
    return f"upscaled {factor:.1f}x to cover {width}x{height}" if factor > 4 else None


__all__ = ["MIN_INPUT_SIDE", "CheckedImage", "check_image", "confine_path", "image_path_of", "safe_name", "shorten",
           "upscale_note"]
