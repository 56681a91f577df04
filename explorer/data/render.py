"""The clip renderer: a photograph seen through a moving virtual camera (pan, zoom, roll, combinations) with
optional rigid sprites, sampled deterministically in ``(split, index, seed)`` and rendered from the pyramids;
the public entry points ``make_clip``, ``make_batch``, ``make_image``, ``eval_clips``."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from explorer.data.motion import (
    REF_WIDTH,
    _blob_radius,
    _measure,
    _measure_points,
    bucket_to_motion,
    motion_per_frame,
    motion_to_bucket,
)
from explorer.data.pyramids import _level, _mask_pyramid, _pyramid
from explorer.data.spec import Clip, _Obj, _Spec
from explorer.data.splits import _BY_NAME, _SPLIT_CODE, photos

NUM_FRAMES = 14
LOWRES: tuple[int, int] = (128, 64)  # (width, height): the tiny family's low resolution (paper 512x256 / 4)
BASE: tuple[int, int] = (256, 144)  # (width, height): the tiny family's base resolution (paper 1024x576 / 4)
# Sampling ranges of the virtual camera (reference px = pixels of a 256-wide frame).
FPS_RANGE: tuple[int, int] = (3, 30)
SPEED_RANGE: tuple[float, float] = (3.0, 600.0)  # ref px per second
MOTION_RANGE: tuple[float, float] = (0.1, 16.0)  # ref px per frame kept (pairs outside are re-drawn)
MAX_ZOOM_RATE = 0.06  # |log zoom| per frame (1.06**13 ~ 2.1x over a clip)
MAX_ROTATION_DEG = 2.0  # degrees per frame
MIN_VIEW_WIDTH = 0.7 * REF_WIDTH  # source px per frame width: at 256 wide, upsample at most ~1.43x

KINDS: tuple[str, ...] = ("static", "pan", "zoom", "rotate", "combo", "objects")
KIND_PROBS: tuple[float, ...] = (0.08, 0.30, 0.14, 0.08, 0.22, 0.18)


@contextlib.contextmanager
def _render_threads() -> Iterator[None]:
    """torch's thread count set to ``explorer.data.RENDER_THREADS`` for the duration (read at each call, so that
    setting the package's attribute takes effect)."""
    from explorer import data

    n, prev = data.RENDER_THREADS, torch.get_num_threads()
    if n is None or n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _frame_grid(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in width units relative to the frame centre (x right, y down)."""
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
    y = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / width
    return x.view(1, 1, width).expand(1, height, width), y.view(1, height, 1).expand(1, height, width)


# --------------------------------------------------------------------------------------------------------------
# Sampling


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index), stream]))


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _time_warp(nf: int, accel: float) -> np.ndarray:
    """Cumulative time tau_t (frames) with a linear velocity ramp of mean 1 (accel=0: tau_t = t)."""
    i = np.arange(nf - 1)
    f = 1.0 + accel * ((2 * i + 1) / (nf - 1) - 1.0)
    return np.concatenate([[0.0], np.cumsum(f)])


def _mean_radius(aspect: float) -> float:
    gx, gy = _measure_points(round(aspect * 10000))
    return float(np.hypot(gx, gy).mean())


def _color_matrix(rng: np.random.Generator, gray: bool) -> list[list[float]]:
    """Random colour augmentation (train only) as a 3x4 affine on RGB: hue, saturation, contrast, brightness,
    colour cast; grayscale photographs get a luma-dependent tint so colour is not confined to 4 RGB photos."""
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    inv = np.linalg.inv(yiq)
    h = float(np.clip(rng.normal(0, 0.12), -0.3, 0.3))
    sat = _loguniform(rng, 0.7, 1.3)
    con = _loguniform(rng, 0.8, 1.2)
    bri = rng.uniform(-0.07, 0.07)
    cast = rng.uniform(-0.08, 0.08, 2) if gray else rng.uniform(-0.03, 0.03, 2)
    tint = rng.uniform(-0.15, 0.15, 2) if gray else np.zeros(2)
    a = np.zeros((3, 3))
    a[0, 0] = con
    a[1:, 0] = tint * con
    a[1:, 1:] = con * sat * np.array([[math.cos(h), -math.sin(h)], [math.sin(h), math.cos(h)]])
    b = np.array([0.5 + bri, cast[0], cast[1]])
    # out = inv @ (a @ (yiq @ (x - 0.5)) + b)
    m = inv @ a @ yiq
    off = inv @ b
    return np.concatenate([m, off[:, None]], axis=1).round(6).tolist()


def _sample_spec(
    rng: np.random.Generator,
    split: str,
    aspect: float,
    augment: bool,
    kind: str | None = None,
    motion: float | None = None,
    photo: str | None = None,
    fps: int | None = None,
    speed: float | None = None,
) -> _Spec:
    """Draw one clip's virtual camera and objects. The draw order is fixed so a seed means one clip."""
    nf = NUM_FRAMES
    names = photos(split)
    weights = np.array([_BY_NAME[n].weight for n in names])
    k_draw = KINDS[rng.choice(len(KINDS), p=np.array(KIND_PROBS))]
    p_draw = names[rng.choice(len(names), p=weights / weights.sum())]
    kind = kind or k_draw
    photo = photo or p_draw
    if photo not in names:
        raise ValueError(f"photo {photo!r} is not in split {split!r}")
    flip = bool(augment and rng.random() < 0.5)
    # fps and speed: physical speed sampled per second, per-frame motion = speed / fps (pairs outside re-drawn).
    for _ in range(64):
        f_draw = int(round(_loguniform(rng, FPS_RANGE[0] - 0.49, FPS_RANGE[1] + 0.49)))
        s_draw = _loguniform(rng, *SPEED_RANGE)
        if MOTION_RANGE[0] <= s_draw / f_draw <= MOTION_RANGE[1]:
            break
    fps = int(fps or f_draw)
    if motion is not None:
        m = float(motion)
    else:
        m = float(np.clip(motion_per_frame(s_draw if speed is None else speed, fps), 0.0, MOTION_RANGE[1]))
    if kind == "static":
        m = 0.0
    mu = m / REF_WIDTH  # width units per frame
    r_mean = _mean_radius(aspect)
    accel = float(rng.uniform(-0.6, 0.6)) if rng.random() < 0.5 else 0.0
    ang = rng.uniform(-math.pi, math.pi) if rng.random() < 0.4 else rng.normal(0, 0.3) + math.pi * rng.integers(2)
    mix = rng.dirichlet([1.0, 1.0, 0.6])
    zsign, rsign = (1.0 if rng.random() < 0.5 else -1.0), (1.0 if rng.random() < 0.5 else -1.0)

    # Split the per-frame flow budget between pan / zoom / rotation; caps spill over into the pan.
    budget = {"static": (0, 0, 0), "pan": (1, 0, 0), "zoom": (0, 1, 0), "rotate": (0, 0, 1),
              "combo": tuple(mix), "objects": (0.35 * (rng.random() < 0.5), 0, 0)}[kind]
    zoom = min(budget[1] * mu / r_mean, MAX_ZOOM_RATE)
    rot = min(budget[2] * mu / r_mean, math.radians(MAX_ROTATION_DEG))
    pan_mag = max(0.0, budget[0] * mu + (budget[1] * mu - zoom * r_mean) + (budget[2] * mu - rot * r_mean))
    pan = np.array([math.cos(ang), math.sin(ang)]) * pan_mag
    zoom *= zsign
    rot *= rsign
    tau = _time_warp(nf, accel)

    # Fit the trajectory into the photograph: shrink the motion until the view can be wide enough.
    pyr = _pyramid(photo)
    bx0, by0, bx1, by1 = pyr.box
    if flip:
        bx0, bx1 = pyr.size[0] - bx1, pyr.size[0] - bx0
    vw, vh = bx1 - bx0, by1 - by0
    corners = np.array([[-0.5, -0.5 * aspect], [0.5, -0.5 * aspect], [0.5, 0.5 * aspect], [-0.5, 0.5 * aspect]])
    for _ in range(16):
        z = np.exp(-zoom * tau)  # view width relative to frame 0
        th = rot * tau
        step = np.diff(tau)
        # pan is in units of the current view width, so its on-screen speed stays constant under zoom
        cum = np.concatenate([[[0.0, 0.0]], np.cumsum((z[:-1] * step)[:, None] * pan[None, :], axis=0)])
        cth, sth = np.cos(th), np.sin(th)
        px = cum[:, 0:1] + z[:, None] * (cth[:, None] * corners[None, :, 0] - sth[:, None] * corners[None, :, 1])
        py = cum[:, 1:2] + z[:, None] * (sth[:, None] * corners[None, :, 0] + cth[:, None] * corners[None, :, 1])
        bw, bh = px.max() - px.min(), py.max() - py.min()
        s_max = 0.98 * min(vw / bw, vh / bh)
        if s_max >= MIN_VIEW_WIDTH or m == 0:
            break
        pan, zoom, rot = pan * 0.75, zoom * 0.75, rot * 0.75
    # view width: log-scale between a close-up and the widest view that fits, skewed towards wide views because
    # at inference the conditioning image is usually a whole photograph
    u = math.sqrt(rng.random())
    s_lo = min(s_max, max(MIN_VIEW_WIDTH, 0.3 * s_max))
    s_w = math.exp(math.log(s_lo) + u * (math.log(s_max) - math.log(s_lo)))
    cx0 = rng.uniform(bx0 - s_w * px.min(), max(bx0 - s_w * px.min(), bx1 - s_w * px.max()))
    cy0 = rng.uniform(by0 - s_w * py.min(), max(by0 - s_w * py.min(), by1 - s_w * py.max()))
    center = np.stack([cx0 + s_w * cum[:, 0], cy0 + s_w * cum[:, 1]], axis=1)
    spec = _Spec(kind, photo, flip, fps, m, center, s_w * z, th, (float(pan[0]), float(pan[1])),
                 float(zoom), float(rot), accel)

    n_obj = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    obj_draws = [rng.random(24) for _ in range(3)]
    if kind == "objects":
        for j in range(n_obj):
            spec.objects.append(_sample_object(obj_draws[j], names, split, aspect, mu, s_w, tau))
    if augment:
        spec.color = _color_matrix(rng, pyr.gray)
    return spec


def _sample_object(d: np.ndarray, names: list[str], split: str, aspect: float, mu: float, s_bg: float,
                   tau: np.ndarray) -> _Obj:
    """One rigid sprite (a region of a same-split photograph under a procedural or silhouette mask)."""
    texture = names[min(int(d[0] * len(names)), len(names) - 1)]
    shapes = ["blob", "ellipse", "horse"] if split == "train" else ["blob", "ellipse"]
    shape = shapes[min(int(d[1] * len(shapes)), len(shapes) - 1)]
    radius = 0.07 + 0.13 * d[2]
    coef = [0.25 * d[3] - 0.125, 6.283 * d[4], 0.2 * d[5] - 0.1, 6.283 * d[6], 0.12 * d[7] - 0.06, 6.283 * d[8]]
    if shape == "ellipse":
        coef = [0.6 + 0.9 * d[3]]
    p0 = np.array([0.8 * d[9] - 0.4, (0.8 * d[10] - 0.4) * aspect])
    heading = 2 * math.pi * d[11]
    speed = min(0.06, mu * (2.0 + 3.0 * d[12]))  # width units / frame
    vel = speed * np.array([math.cos(heading), math.sin(heading)])
    pos = p0[None, :] + tau[:, None] * vel[None, :]
    rot_rate = math.radians(6.0 * d[14] - 3.0) if d[13] < 0.5 else 0.0  # up to 3 deg / frame, half of them
    scale_rate = 0.06 * d[16] - 0.03 if d[15] < 0.5 else 0.0  # approaching / receding, half of them
    scale = np.exp(scale_rate * tau)
    rot0 = 0.0 if shape == "horse" else 2 * math.pi * d[17]
    tex = _pyramid(texture)
    tex_scale = s_bg * (0.6 + 0.8 * d[18])
    reach = radius * float(scale.max()) * 1.5 * math.sqrt(2)
    tx0, ty0, tx1, ty1 = tex.box
    tex_scale = max(1.0, min(tex_scale, 0.98 * min(tx1 - tx0, ty1 - ty0) / (2 * reach)))
    rr = reach * tex_scale
    tcx = tx0 + rr + d[19] * max(0.0, tx1 - tx0 - 2 * rr)
    tcy = ty0 + rr + d[20] * max(0.0, ty1 - ty0 - 2 * rr)
    tex_rot = 0.6 * d[21] - 0.3
    return _Obj(texture, shape, float(radius), [float(c) for c in coef], pos, rot0 + rot_rate * tau, scale,
                (float(tcx), float(tcy)), float(tex_scale), float(tex_rot), bool(d[22] < 0.5))


# --------------------------------------------------------------------------------------------------------------
# Rendering


def _h(a: np.ndarray) -> np.ndarray:
    """(F, 2, 3) affine maps -> (F, 3, 3) homogeneous, for composition."""
    out = np.zeros((a.shape[0], 3, 3))
    out[:, :2] = a
    out[:, 2, 2] = 1.0
    return out


def _similarity(center: np.ndarray, scale: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Per-frame p -> center + scale * R(rot) p as (F, 2, 3)."""
    c, s = np.cos(rot) * scale, np.sin(rot) * scale
    return np.stack([np.stack([c, -s, center[:, 0]], 1), np.stack([s, c, center[:, 1]], 1)], 1)


def _normalise(a: np.ndarray, size: tuple[int, int], flip: bool) -> np.ndarray:
    """Compose level-0 pixel coordinates -> grid_sample's [-1, 1] (align_corners=False; level independent)."""
    w0, h0 = size
    n = np.array([[2.0 / w0, 0.0, 1.0 / w0 - 1.0], [0.0, 2.0 / h0, 1.0 / h0 - 1.0]])
    if flip:  # mirroring the photograph = negating its normalised x
        n[0] = -n[0]
    return np.einsum("ij,fjk->fik", n, _h(a))


def _object_local(o: _Obj, offset: float = 0.0) -> np.ndarray:
    """Frame point (width units) -> object-local point (width units before the object's scaling), (F, 2, 3)."""
    c, s, inv = np.cos(o.rot), np.sin(o.rot), 1.0 / o.scale
    px, py = o.pos[:, 0] + offset, o.pos[:, 1] + offset
    return np.stack([np.stack([c * inv, s * inv, -(c * px + s * py) * inv], 1),
                     np.stack([-s * inv, c * inv, (s * px - c * py) * inv], 1)], 1)


@functools.lru_cache(maxsize=16)
def _homog_points(width: int, height: int) -> torch.Tensor:
    """Output pixel centres as (H*W, 3) rows (x, y, 1) in width units relative to the frame centre."""
    x, y = _frame_grid(width, height)
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.ones(width * height)], dim=1)


def _grid(a: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Apply per-frame affine maps (F, 2, 3) to every output pixel in one matmul -> (F, H, W, 2)."""
    m = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1), dtype=np.float32))
    return torch.matmul(_homog_points(width, height), m).view(a.shape[0], height, width, 2)


def _sample(level: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of all frames in one call: grid (F, H, W, 2) -> (F, C, H, W)."""
    nf, h, w, _ = grid.shape
    out = F.grid_sample(level, grid.reshape(1, nf * h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.view(level.shape[1], nf, h, w).transpose(0, 1)


def _render(spec: _Spec, width: int, height: int) -> torch.Tensor:
    """Render the spec as 8-bit levels (0..255 as float), (F, 3, H, W)."""
    pyr = _pyramid(spec.photo)
    cam = _similarity(spec.center, spec.view, spec.rot)
    step = float(np.exp(np.log(spec.view).mean())) / width
    img = _sample(_level(pyr, step), _grid(_normalise(cam, pyr.size, spec.flip), width, height))
    for o in spec.objects:
        img = _composite(img, o, width, height)
    if spec.color is not None:
        cm = torch.tensor(spec.color, dtype=torch.float32)
        img = torch.einsum("ij,fjhw->fihw", cm[:, :3], img - 0.5) + cm[:, 3].view(1, 3, 1, 1)
    return img.clamp_(0.0, 1.0).mul_(255.0).round_()


def _levels_to_unit(levels: torch.Tensor) -> torch.Tensor:
    """8-bit levels -> [-1, 1]; the one conversion used both when rendering and when reading the cache."""
    return levels.mul_(2.0 / 255.0).sub_(1.0)


def _blob_alpha(o: _Obj, local: torch.Tensor, px_per_unit: torch.Tensor, soft: float | None) -> torch.Tensor:
    lx, ly = local[..., 0], local[..., 1]
    r = torch.sqrt(lx * lx + ly * ly)
    edge = o.radius * _blob_radius(o.shape, o.shape_coef, torch.atan2(ly, lx), torch)
    d = (edge - r) * px_per_unit if soft is None else (edge - r) / soft  # ~1 px anti-aliased edge, or a soft one
    return (d + 0.5).clamp_(0.0, 1.0).unsqueeze(1)


def _composite(img: torch.Tensor, o: _Obj, width: int, height: int) -> torch.Tensor:
    """Draw one sprite over the frames: texture warped rigidly with the object, anti-aliased analytic edge."""
    loc = _object_local(o)
    if o.shape == "horse":
        mp = _mask_pyramid("horse")
        step = mp.size[0] / (2 * o.radius * width * float(o.scale.mean()))
        g = _grid(loc / o.radius, width, height)
        inside = (g.abs() < 1.0).all(dim=-1).unsqueeze(1)
        alpha = _sample(_level(mp, step), g) * inside
    else:
        px_per_unit = torch.from_numpy((width * o.scale).astype(np.float32)).view(-1, 1, 1)
        alpha = _blob_alpha(o, _grid(loc, width, height), px_per_unit, None)
        if o.shadow:
            shadow = _blob_alpha(o, _grid(_object_local(o, 0.25 * o.radius), width, height), px_per_unit,
                                 0.3 * o.radius)
            img = img * (1.0 - 0.45 * shadow)
    tex = _pyramid(o.texture)
    nf = len(o.rot)
    tex_map = _similarity(np.tile(o.tex_center, (nf, 1)), np.full(nf, o.tex_scale), np.full(nf, o.tex_rot))
    step = o.tex_scale / (width * float(o.scale.mean()))
    g = _grid(np.einsum("fij,fjk->fik", _normalise(tex_map, tex.size, False), _h(loc))[:, :2], width, height)
    t_img = _sample(_level(tex, step), g)
    return img * (1.0 - alpha) + t_img * alpha


# --------------------------------------------------------------------------------------------------------------
# Public API


def _parse_size(size: tuple[int, int] | str) -> tuple[int, int]:
    if isinstance(size, str):
        w, h = size.lower().split("x")
        return int(w), int(h)
    w, h = size
    return int(w), int(h)


def size_arg(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height), for command lines (``type=size_arg``; argparse reports the ValueError)."""
    try:
        w, h = _parse_size(text)
    except ValueError:
        raise ValueError(f"size must look like 128x64, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return w, h


def _finish(spec: _Spec, width: int, height: int, split: str, index: int, seed: int) -> Clip:
    frames = _levels_to_unit(_render(spec, width, height))
    motion = _measure(spec, height / width)
    bucket = motion_to_bucket(motion)
    params = spec.to_params()
    params.update(motion_ref_px=motion, motion_px=motion * width / REF_WIDTH, motion_bucket_id=bucket,
                  speed_ref_px_per_s=motion * spec.fps)
    return Clip(frames, bucket, spec.fps, motion, params, split, index, seed)


def make_clip(
    split: str,
    index: int,
    size: tuple[int, int] | str = LOWRES,
    seed: int = 0,
    *,
    augment: bool | None = None,
    kind: str | None = None,
    motion: float | None = None,
    photo: str | None = None,
    fps: int | None = None,
    speed: float | None = None,
) -> Clip:
    """The clip number `index` of a split: same arguments -> identical tensors.

    size is (width, height). augment (default: on for train only) adds left-right mirroring and a colour
    transform. kind / motion (target ref px per frame) / photo / fps / speed (ref px per second, giving
    motion = speed / fps) override the sampled ones (tests, demos); the bucket is always measured from the result.
    """
    width, height = _parse_size(size)
    augment = (split == "train") if augment is None else augment
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    with _render_threads():
        spec = _sample_spec(_rng(seed, split, index), split, height / width, augment, kind, motion, photo, fps,
                            speed)
        return _finish(spec, width, height, split, index, seed)


def make_batch(split: str, start: int, batch_size: int, size: tuple[int, int] | str = LOWRES,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Clips start .. start+batch_size-1 stacked: frames (B, F, 3, H, W), motion_bucket_id, fps, motion (B,)."""
    with _render_threads():
        clips = [make_clip(split, i, size, seed).to_sample() for i in range(start, start + batch_size)]
    return torch.utils.data.default_collate(clips)


def make_image(split: str, index: int, size: tuple[int, int] | str = BASE, seed: int = 0, *,
               augment: bool | None = None) -> torch.Tensor:
    """A single-image sample for VAE training: a random crop of a photograph of the split at a random scale
    (1 to ~4 source px per output px, never upsampled unless the photograph is too small), mirrored and
    colour-augmented for train. (3, H, W) in [-1, 1]."""
    width, height = _parse_size(size)
    augment = (split == "train") if augment is None else augment
    rng = _rng(seed, split, index, stream=1)
    names = photos(split)
    weights = np.array([_BY_NAME[n].weight for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    pyr = _pyramid(name)
    flip = bool(augment and rng.random() < 0.5)
    bx0, by0, bx1, by1 = pyr.box
    if flip:
        bx0, bx1 = pyr.size[0] - bx1, pyr.size[0] - bx0
    s_max = 0.999 * min((bx1 - bx0) / width, (by1 - by0) / height)  # source px per output px
    s_lo = min(s_max, 1.0)
    s = _loguniform(rng, s_lo, max(s_lo * 1.0001, min(s_max, 4.0)))
    s_w = s * width
    cx = rng.uniform(bx0 + s_w / 2, max(bx0 + s_w / 2, bx1 - s_w / 2))
    cy = rng.uniform(by0 + s * height / 2, max(by0 + s * height / 2, by1 - s * height / 2))
    color = _color_matrix(rng, pyr.gray) if augment else None
    spec = _Spec("image", name, flip, 1, 0.0, np.array([[cx, cy]]), np.array([s_w]), np.zeros(1),
                 (0.0, 0.0), 0.0, 0.0, 0.0, color=color)
    with _render_threads():
        return _levels_to_unit(_render(spec, width, height)[0])


def eval_clips(split: str = "test", n: int = 64, size: tuple[int, int] | str = BASE, seed: int = 0) -> list[Clip]:
    """A fixed evaluation set: the same n clips every call, photographs and motion types in rotation and the
    requested motion stratified over the bucket range (a few static clips at bucket 0), so a rank correlation
    between requested bucket and measured motion is meaningful. No augmentation."""
    width, height = _parse_size(size)
    names = photos(split)
    kinds = ("pan", "zoom", "combo", "objects", "pan", "rotate", "combo", "pan")
    order = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], 7919])).permutation(n)
    n_static = max(1, n // 16)
    lo, hi = motion_to_bucket(MOTION_RANGE[0]), 250
    out = []
    for i in range(n):
        q = int(order[i])
        if q < n_static:
            kind, target = "static", 0.0
        else:
            kind = kinds[i % len(kinds)]
            b = lo + (hi - lo) * (q - n_static + 0.5) / (n - n_static)
            target = bucket_to_motion(b)
            if kind == "objects":  # sprites move over a mostly still frame: their mean flow is area-weighted
                target = min(target, bucket_to_motion(120))
        rng = _rng(seed, split, 1_000_000 + i, stream=2)
        with _render_threads():
            spec = _sample_spec(rng, split, height / width, False, kind, target, names[i % len(names)])
            out.append(_finish(spec, width, height, split, i, seed))
    return out
