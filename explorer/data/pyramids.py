"""In-memory pyramids of the photographs: sampling from the level nearest the target scale is the
anti-aliasing of the bilinear warp. Built once per process."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from explorer.data.splits import _BY_NAME, is_gray, load_photo, skimage_data_dir


@dataclass
class _Pyramid:
    levels: list[torch.Tensor]  # (1, C, h, w) float32 in [0, 1]; level k downscaled by ~2**(k/2)
    factors: list[float]  # downscale factor of each level
    size: tuple[int, int]  # (W0, H0) of level 0
    box: tuple[float, float, float, float]  # usable region in level-0 pixels (x0, y0, x1, y1)
    gray: bool


def _build_pyramid(img: torch.Tensor, box: tuple[float, float, float, float], gray: bool) -> _Pyramid:
    """Half-octave pyramid built with area-style antialiased resizes from level 0 (done once per process)."""
    _, _, h0, w0 = img.shape
    levels, factors = [img], [1.0]
    k = 1
    while True:
        f = 2.0 ** (k / 2)
        h, w = round(h0 / f), round(w0 / f)
        if min(h, w) < 8:
            break
        levels.append(F.interpolate(img, size=(h, w), mode="bilinear", antialias=True, align_corners=False))
        factors.append(f)
        k += 1
    return _Pyramid(levels, factors, (w0, h0), box, gray)


@functools.cache
def _pyramid(name: str) -> _Pyramid:
    arr = load_photo(name)
    img = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0).contiguous()
    h0, w0 = arr.shape[:2]
    fx0, fy0, fx1, fy1 = _BY_NAME[name].box or (0.0, 0.0, 1.0, 1.0)
    return _build_pyramid(img, (fx0 * w0, fy0 * h0, fx1 * w0, fy1 * h0), is_gray(name))


@functools.cache
def _mask_pyramid(name: str) -> _Pyramid:
    """A silhouette (1 inside), cropped square around the shape so local coordinates [-1, 1] cover it."""
    if name != "horse":
        raise ValueError(name)
    from PIL import Image

    with Image.open(skimage_data_dir() / "horse.png") as im:
        m = np.asarray(im.convert("L")) < 128
    ys, xs = np.nonzero(m)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = int(math.ceil(max(ys.max() - ys.min(), xs.max() - xs.min()) / 2)) + 2
    pad = np.zeros((2 * half, 2 * half), dtype=np.float32)
    y0, x0 = int(round(cy)) - half, int(round(cx)) - half
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + 2 * half, m.shape[0]), min(x0 + 2 * half, m.shape[1])
    pad[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = m[sy0:sy1, sx0:sx1]
    t = torch.from_numpy(pad)[None, None]
    return _build_pyramid(t, (0.0, 0.0, float(2 * half), float(2 * half)), True)


def _level(pyr: _Pyramid, step: float) -> torch.Tensor:
    """Level whose pixel spacing is nearest below the requested step (source px per output px)."""
    k = int(math.floor(2.0 * math.log2(max(step, 1e-6)))) if step > 1.0 else 0
    return pyr.levels[min(max(k, 0), len(pyr.levels) - 1)]
