"""Motion: the measurement of a clip's motion from its known warp, and the mappings of SVD's micro-conditioning
(measured motion -> ``motion_bucket_id``, speed and ``fps`` -> motion per frame, ``added_time_ids``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explorer.data.pyramids import _mask_pyramid

if TYPE_CHECKING:
    from explorer.data.spec import _Obj, _Spec

REF_WIDTH = 256  # motion is measured in pixels of a frame REF_WIDTH wide, whatever the render size

# Motion-bucket mapping: bucket = round(255 * log1p(m / M0) / log1p(M_MAX / M0)), m in reference px per frame.
BUCKET_M0 = 0.5
BUCKET_M_MAX = 16.0


def motion_to_bucket(motion: float | np.ndarray | torch.Tensor) -> Any:
    """Map measured motion (mean displacement, reference px per frame) to SVD's motion_bucket_id in 0..255.

    Monotonic, 0 for a static clip, logarithmic so small motions stay distinguishable; m = 2.4 ref px/frame
    (about 1% of the frame width per frame) lands near SVD's default of 127; m >= 16 saturates at 255.
    """
    scale = 255.0 / math.log1p(BUCKET_M_MAX / BUCKET_M0)
    if isinstance(motion, torch.Tensor):
        return (torch.log1p(motion.clamp(min=0) / BUCKET_M0) * scale).round().clamp(0, 255).long()
    if isinstance(motion, np.ndarray):
        return np.clip(np.round(np.log1p(np.maximum(motion, 0) / BUCKET_M0) * scale), 0, 255).astype(np.int64)
    return int(min(255, max(0, round(math.log1p(max(float(motion), 0.0) / BUCKET_M0) * scale))))


def bucket_to_motion(bucket: float) -> float:
    """Inverse of :func:`motion_to_bucket` (reference px per frame at the bucket's centre)."""
    return BUCKET_M0 * math.expm1(float(bucket) / 255.0 * math.log1p(BUCKET_M_MAX / BUCKET_M0))


def motion_per_frame(speed: float, fps: float) -> float:
    """The fps mapping: a clip samples a motion of `speed` (ref px / s) every 1/fps s, so per-frame = speed/fps."""
    return float(speed) / float(fps)


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float = 0.02) -> list[float]:
    """SVD's micro-conditioning vector ``[fps - 1, motion_bucket_id, noise_aug_strength]``."""
    return [float(fps - 1), float(motion_bucket_id), float(noise_aug_strength)]


@functools.lru_cache(maxsize=64)
def _measure_points(aspect_key: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed 32-wide grid of measurement points, so the measurement does not depend on render size."""
    aspect = aspect_key / 10000.0
    nx = 32
    ny = max(2, round(nx * aspect))
    x = (np.arange(nx) + 0.5) / nx - 0.5
    y = ((np.arange(ny) + 0.5) / ny - 0.5) * aspect
    gx, gy = np.meshgrid(x, y)
    return gx.ravel(), gy.ravel()


def _blob_radius(shape: str, coef: Sequence[float], ang: Any, lib: Any) -> Any:
    if shape == "ellipse":
        a = coef[0]
        return 1.0 / lib.sqrt((lib.cos(ang) / a) ** 2 + (lib.sin(ang) * a) ** 2)
    r = 1.0
    for i, k in enumerate((2, 3, 4)):
        r = r + coef[2 * i] * lib.cos(k * ang + coef[2 * i + 1])
    return r


def _obj_alpha_np(o: _Obj, t: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Object coverage at points (x, y) of frame t (hard edge; used by the measurement)."""
    lx, ly = _local(o, t, x, y)
    if o.shape == "horse":
        pyr = _mask_pyramid("horse")
        m = pyr.levels[0][0, 0].numpy()
        n = m.shape[0]
        ix = np.clip(((lx / o.radius + 1) / 2 * n).astype(int), 0, n - 1)
        iy = np.clip(((ly / o.radius + 1) / 2 * n).astype(int), 0, n - 1)
        inside = (np.abs(lx) < o.radius) & (np.abs(ly) < o.radius)
        return (m[iy, ix] * inside).astype(np.float64)
    r = np.hypot(lx, ly)
    return (r <= o.radius * _blob_radius(o.shape, o.shape_coef, np.arctan2(ly, lx), np)).astype(np.float64)


def _local(o: _Obj, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object-local coordinates (width units, before object scaling) of frame points at frame t."""
    c, s = np.cos(o.rot[t]), np.sin(o.rot[t])
    dx, dy = x - o.pos[t, 0], y - o.pos[t, 1]
    return (c * dx + s * dy) / o.scale[t], (-s * dx + c * dy) / o.scale[t]


def _measure(spec: _Spec, aspect: float) -> float:
    """Mean displacement magnitude between consecutive frames (reference px), from the known warp.

    Background: a frame point maps to the photograph by frame t's camera and back by frame t+1's; points covered
    by an object move with the object's rigid motion instead (alpha-composited in drawing order).
    """
    gx, gy = _measure_points(round(aspect * 10000))
    total = 0.0
    nf = len(spec.view)
    for t in range(nf - 1):
        # relative similarity frame t -> t+1 (exactly the identity when the camera did not move)
        k = spec.view[t] / spec.view[t + 1]
        dr = spec.rot[t] - spec.rot[t + 1]
        c1, s1 = math.cos(spec.rot[t + 1]), math.sin(spec.rot[t + 1])
        dcx, dcy = spec.center[t, 0] - spec.center[t + 1, 0], spec.center[t, 1] - spec.center[t + 1, 1]
        ox = (c1 * dcx + s1 * dcy) / spec.view[t + 1]
        oy = (-s1 * dcx + c1 * dcy) / spec.view[t + 1]
        fx = (k * math.cos(dr) - 1.0) * gx - k * math.sin(dr) * gy + ox
        fy = k * math.sin(dr) * gx + (k * math.cos(dr) - 1.0) * gy + oy
        for o in spec.objects:
            a = _obj_alpha_np(o, t, gx, gy)
            if not a.any():
                continue
            da = o.rot[t + 1] - o.rot[t]
            ks = o.scale[t + 1] / o.scale[t]
            rx, ry = gx - o.pos[t, 0], gy - o.pos[t, 1]
            bx = o.pos[t + 1, 0] + ks * (math.cos(da) * rx - math.sin(da) * ry) - gx
            by = o.pos[t + 1, 1] + ks * (math.sin(da) * rx + math.cos(da) * ry) - gy
            fx, fy = (1 - a) * fx + a * bx, (1 - a) * fy + a * by
        total += float(np.hypot(fx, fy).mean())
    return total / (nf - 1) * REF_WIDTH
