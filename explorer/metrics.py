"""Quality metrics every stage is judged by: Fréchet distances (FVD-proxy and, with user-supplied I3D, FVD),
first-frame fidelity and motion following.

Why these: an image-to-video model must (1) produce clips that look and move like real ones (a Fréchet distance
between feature distributions of real and generated clips), (2) keep the conditioning image (PSNR of frame 0
against what the model could possibly reproduce: the VAE round trip of the conditioning image), and (3) obey the
``motion_bucket_id`` it is given (rank correlation between the requested bucket and the motion measured in the
generated pixels by phase correlation). Everything here is deterministic numpy / torch on the CPU; see
docs/metrics.md for conventions and sanity numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REF_WIDTH = 256  # motion is reported in pixels of a 256-wide frame, as explorer.data measures it

# ------------------------------------------------------------------------------------------------------------
# Fréchet distance


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of features (N, D): the Gaussian the Fréchet distance compares."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"features must be (N, D) with N >= 1, got shape {x.shape}")
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False) if x.shape[0] > 1 else np.zeros((x.shape[1], x.shape[1]))
    return mu, np.atleast_2d(sigma)


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) via the symmetric form sqrt(S1)^(1/2) S2 sqrt(S1)^(1/2) (exact for PSD inputs)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = half @ sigma2 @ half
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) -- the FID/FVD formula.

    Computed as common FID/FVD code does (``scipy.linalg.sqrtm`` of S1 S2; if the result is not finite, or has a
    non-negligible imaginary part -- singular covariances, e.g. fewer samples than dimensions -- ``eps`` is added
    to both diagonals and the root retaken; the real part is used). If even that fails, the exact symmetric
    eigen-decomposition is used. Tiny negative results from rounding are clipped to 0.
    """
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2

    def trace_sqrt(a: np.ndarray, b: np.ndarray) -> float | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm(a @ b)
        if not np.isfinite(covmean).all():
            return None
        if np.iscomplexobj(covmean):
            scale = max(1.0, float(np.abs(np.diagonal(covmean).real).max()))
            if np.abs(np.diagonal(covmean).imag).max() > 1e-3 * scale:
                return None
            covmean = covmean.real
        return float(np.trace(covmean))

    tr = trace_sqrt(s1, s2)
    if tr is None:
        offset = np.eye(s1.shape[0]) * eps
        tr = trace_sqrt(s1 + offset, s2 + offset)
    if tr is None:
        tr = _trace_sqrt_product_eigh(s1, s2)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr)
    return max(value, 0.0)


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fit to two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2), eps=eps)


# ------------------------------------------------------------------------------------------------------------
# First-frame fidelity


def to_float01(frames: Any) -> np.ndarray:
    """uint8 (..., H, W, 3) or float in [0, 1] -> float64 in [0, 1] (HWC)."""
    arr = np.asarray(frames)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def psnr(a: Any, b: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same shape (inf when identical)."""
    x, y = to_float01(a), to_float01(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


@torch.no_grad()
def vae_round_trip(vae: Any, image: Any, width: int, height: int) -> np.ndarray:
    """The conditioning image as the stage's VAE reproduces it: prepare (cover + centre crop) at the stage's
    resolution, encode (mode of the posterior), decode one frame. float (H, W, 3) in [0, 1].

    Why: frame 0 of a generated clip can be no closer to the input than the VAE allows, so first-frame PSNR is
    measured against this round trip, which isolates what the UNet loses.
    """
    from explorer.pipeline import prepare_image

    img = np.asarray(prepare_image(image, width, height), dtype=np.float32) / 127.5 - 1.0
    param = next(vae.parameters())
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device=param.device, dtype=param.dtype)
    z = vae.encode(x).latent_dist.mode()
    out = vae.decode(z, num_frames=1).sample
    return ((out[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy().astype(np.float64)


def first_frame_psnr(video: Any, reference: Any) -> float:
    """PSNR of frame 0 of ``video`` (F, H, W, 3) against ``reference`` (H, W, 3), e.g. the VAE round trip."""
    return psnr(np.asarray(video)[0], reference)


# ------------------------------------------------------------------------------------------------------------
# Sharpness and fade: what a one-step generator that regresses to the mean loses


def _unit_images(frames: Any) -> torch.Tensor:
    """(F, H, W, 3) or (H, W, 3) uint8 / float in [0, 1] -> (F, 3, H, W) float64 in [-1, 1]."""
    arr = to_float01(frames)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).mul(2).sub(1)


def sharpness_and_fade(video: Any, round_trip: Any) -> dict[str, float]:
    """How much detail each frame keeps and whether the clip fades, at the clip's own size.

    ``hf_kept_frame0`` / ``hf_kept_median``: frame 0's and the median over frames of each frame's high-frequency
    energy (variance of the Laplacian of the luminance, ``explorer.vae.laplacian_energy``) as a fraction of the
    conditioning image's VAE round trip (what the UNet could keep at best). ``std_drift_max``: the largest
    relative change of a frame's pixel standard deviation from frame 0's (a fade towards a flat colour grows it).
    """
    from explorer.vae import laplacian_energy

    frames = _unit_images(video)
    ref = float(laplacian_energy(_unit_images(round_trip))[0])
    energy = laplacian_energy(frames).numpy() / max(ref, 1e-12)
    std = frames.flatten(1).std(dim=1).numpy()
    drift = np.abs(std - std[0]) / max(float(std[0]), 1e-12)
    return {"hf_kept_frame0": float(energy[0]), "hf_kept_median": float(np.median(energy)),
            "std_drift_max": float(drift.max())}


# ------------------------------------------------------------------------------------------------------------
# Motion: phase correlation


def _gray(frames: Any) -> torch.Tensor:
    """(F, H, W, 3) uint8/float01 or (F, 3, H, W) float in [-1, 1] tensor -> (F, H, W) float64 luma in [0, 1]."""
    if isinstance(frames, torch.Tensor) and frames.ndim == 4 and frames.shape[1] == 3 and frames.dtype != torch.uint8:
        x = (frames.detach().double().cpu() + 1.0) / 2.0
        x = x.permute(0, 2, 3, 1)
    else:
        x = torch.from_numpy(to_float01(frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3) or (F, 3, H, W), got {tuple(x.shape)}")
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def phase_correlation(a: torch.Tensor, b: torch.Tensor, peak_sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel translation d with b(x) ~ a(x - d), for batches of square patches (N, P, P).

    Returns (shifts (N, 2) as (dy, dx) in pixels, peak height (N,)). Hann-windowed patches, normalised
    cross-power spectrum, a Gaussian low-pass that turns the correlation peak into a Gaussian of ``peak_sigma``
    px, and a Gaussian (log-parabola) fit around the maximum for the sub-pixel part.
    """
    n, p, q = a.shape
    win = torch.outer(torch.hann_window(p, periodic=False, dtype=a.dtype),
                      torch.hann_window(q, periodic=False, dtype=a.dtype))
    a = (a - a.mean(dim=(1, 2), keepdim=True)) * win
    b = (b - b.mean(dim=(1, 2), keepdim=True)) * win
    cross = torch.fft.fft2(b) * torch.conj(torch.fft.fft2(a))
    cross = cross / (cross.abs() + 1e-12)
    fy = torch.fft.fftfreq(p, dtype=a.dtype).view(p, 1)
    fx = torch.fft.fftfreq(q, dtype=a.dtype).view(1, q)
    s = 1.0 / (2.0 * math.pi * peak_sigma)
    cross = cross * torch.exp(-(fy**2 + fx**2) / (2 * s * s))
    r = torch.fft.ifft2(cross).real  # (N, P, Q)
    flat = r.reshape(n, -1).argmax(dim=1)
    iy, ix = flat // q, flat % q
    ar = torch.arange(n)

    def fit(m1: torch.Tensor, c0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        tiny = 1e-12 * c0.abs().clamp_min(1e-30)
        l1, l0, l2 = (torch.log(v.clamp_min(0) + tiny) for v in (m1, c0, p1))
        den = l1 - 2 * l0 + l2
        gauss = 0.5 * (l1 - l2) / torch.where(den.abs() > 1e-12, den, torch.full_like(den, -1e-12))
        pden = m1 - 2 * c0 + p1
        para = 0.5 * (m1 - p1) / torch.where(pden.abs() > 1e-12, pden, torch.full_like(pden, -1e-12))
        ok = (m1 > 0) & (p1 > 0) & (c0 > 0)
        return torch.where(ok, gauss, para).clamp(-0.5, 0.5)

    c0 = r[ar, iy, ix]
    dy = fit(r[ar, (iy - 1) % p, ix], c0, r[ar, (iy + 1) % p, ix])
    dx = fit(r[ar, iy, (ix - 1) % q], c0, r[ar, iy, (ix + 1) % q])
    sy = iy.to(a.dtype) + dy
    sx = ix.to(a.dtype) + dx
    sy = torch.where(sy > p / 2, sy - p, sy)
    sx = torch.where(sx > q / 2, sx - q, sx)
    return torch.stack([sy, sx], dim=1), c0


def patch_size_for(height: int, width: int) -> int:
    """Largest power of two <= min(H, W) / 2, clipped to 8..64 (128x64 -> 32, 256x144 -> 64, 32x16 -> 8)."""
    m = max(8, min(height, width) // 2)
    return int(min(64, 2 ** int(math.floor(math.log2(m)))))


def frame_pair_shifts(frames: Any, patch: int | None = None, min_std: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch phase-correlation shifts between consecutive frames on a half-overlapping grid.

    Two passes: the second re-cuts each patch of the later frame at the first estimate (rounded, kept inside the
    frame) and adds the residual shift, which removes the pull towards zero that a fixed window has on large
    shifts (content leaving the window). Returns (shifts (F-1, K, 2) as (dy, dx) in pixels, valid (F-1, K) bool:
    patches with texture, std >= min_std in both frames; flat patches carry no motion information).
    """
    g = _gray(frames)
    f, h, w = g.shape
    p = patch or patch_size_for(h, w)
    if f < 2:
        return np.zeros((0, 0, 2)), np.zeros((0, 0), dtype=bool)
    if p > min(h, w):
        raise ValueError(f"patch {p} larger than the frame {w}x{h}")
    stride = max(1, p // 2)
    ys = list(range(0, h - p + 1, stride))
    xs = list(range(0, w - p + 1, stride))
    oy, ox = (h - (ys[-1] + p)) // 2, (w - (xs[-1] + p)) // 2  # centre the grid: both borders alike
    corners = [(y + oy, x + ox) for y in ys for x in xs]
    k = len(corners)
    patches = torch.stack([g[:, y : y + p, x : x + p] for y, x in corners], dim=1)  # (F, K, P, P)
    a, b = patches[:-1].reshape(-1, p, p), patches[1:].reshape(-1, p, p)
    first, _ = phase_correlation(a, b)
    first = first.reshape(f - 1, k, 2)
    offsets = torch.zeros(f - 1, k, 2, dtype=g.dtype)
    b2 = []
    for t in range(f - 1):
        for j, (y, x) in enumerate(corners):
            yy = int(min(max(y + round(float(first[t, j, 0])), 0), h - p))
            xx = int(min(max(x + round(float(first[t, j, 1])), 0), w - p))
            offsets[t, j, 0], offsets[t, j, 1] = yy - y, xx - x
            b2.append(g[t + 1, yy : yy + p, xx : xx + p])
    residual, _ = phase_correlation(a, torch.stack(b2))
    shifts = offsets + residual.reshape(f - 1, k, 2)
    std_a, std_b = a.std(dim=(1, 2)), b.std(dim=(1, 2))
    valid = (std_a >= min_std) & (std_b >= min_std)
    return shifts.numpy(), valid.reshape(f - 1, k).numpy()


def global_motion(frames: Any, patch: int | None = None, min_std: float = 0.01) -> float:
    """Measured global motion of a clip: mean magnitude of the per-patch phase-correlation shifts over all frame
    pairs, in reference pixels (of a 256-wide frame, like ``explorer.data``'s motion).

    Why patches: zooms and rotations have no single translation, but locally they are translations whose
    magnitudes grow with the motion, so the mean local shift is monotone in the amount of motion for every
    motion kind. A clip whose patches are all flat measures 0.
    """
    shifts, valid = frame_pair_shifts(frames, patch, min_std)
    if shifts.size == 0 or not valid.any():
        return 0.0
    width = _gray(frames).shape[2]
    mag = np.linalg.norm(shifts, axis=-1)
    # rounded to 1e-6 ref px so that float noise (~1e-16) on identical frames reads as exactly 0: ranks of noise
    # would otherwise give a static clip set a spurious Spearman correlation
    return round(float(mag[valid].mean() * REF_WIDTH / width), 6)


PSNR_CAP_DB = 60.0  # identical frames (a static clip) score this instead of infinity, so means stay finite


def consecutive_psnr(frames: Any, patch: int | None = None, border: float = 0.1) -> float:
    """Mean motion-compensated PSNR (dB) between consecutive frames: how much a clip flickers beyond its motion.

    Each later frame is warped back onto the earlier one with the dense motion field interpolated from the
    per-patch phase-correlation shifts (:func:`frame_pair_shifts`; flat patches take the pair's median shift),
    then compared on the interior (``border`` of each side left out, where content enters or leaves). Smooth real
    motion scores high; texture that boils from frame to frame scores low. Each pair is capped at
    ``PSNR_CAP_DB``.
    """
    g = _gray(frames)
    f, h, w = g.shape
    if f < 2:
        return PSNR_CAP_DB
    rgb = torch.from_numpy(to_float01(frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames))
    if rgb.ndim == 4 and rgb.shape[1] == 3 and rgb.shape[-1] != 3:  # (F, 3, H, W) in [-1, 1]
        rgb = ((rgb + 1.0) / 2.0).permute(0, 2, 3, 1)
    shifts, valid = frame_pair_shifts(frames, patch)
    p = patch or patch_size_for(h, w)
    stride = max(1, p // 2)
    ny, nx = len(range(0, h - p + 1, stride)), len(range(0, w - p + 1, stride))
    y0, x0 = int(h * border), int(w * border)
    out = []
    for t in range(f - 1):
        d = shifts[t].copy()
        ok = valid[t]
        fill = np.median(d[ok], axis=0) if ok.any() else np.zeros(2)
        d[~ok] = fill
        field = torch.from_numpy(d.reshape(ny, nx, 2)).permute(2, 0, 1)[None]  # (1, 2, ny, nx) as (dy, dx)
        field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=True)[0]
        yy, xx = torch.meshgrid(torch.arange(h, dtype=field.dtype), torch.arange(w, dtype=field.dtype),
                                indexing="ij")
        # b(x) ~ a(x - d)  =>  a(x) ~ b(x + d)
        gx = (xx + field[1]) / max(w - 1, 1) * 2 - 1
        gy = (yy + field[0]) / max(h - 1, 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1)[None]
        b = rgb[t + 1].permute(2, 0, 1)[None]
        warped = F.grid_sample(b, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
        a = rgb[t].permute(2, 0, 1)
        mse = float(((warped - a)[:, y0 : h - y0, x0 : w - x0] ** 2).mean())
        out.append(PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else 10 * math.log10(1.0 / mse))
    return float(np.mean(out))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks). 0.0 when either side is constant, where the
    correlation is undefined: a constant output carries no rank information about the request."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D sequences of equal length, got {a.shape} and {b.shape}")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def motion_spearman(requested_buckets: Sequence[float], videos: Sequence[Any]) -> tuple[float, list[float]]:
    """Spearman between requested motion buckets and the measured global motion of each video; also returns the
    measured motions (reference px per frame)."""
    motions = [global_motion(v) for v in videos]
    return spearman(list(requested_buckets), motions), motions


# ------------------------------------------------------------------------------------------------------------
# Spread: which differences between two rows are real


BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_LEVEL = 0.95


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, resamples: int = BOOTSTRAP_RESAMPLES,
                       level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Bias-corrected percentile bootstrap interval of ``statistic(indices)`` over ``n`` clips drawn with
    replacement.

    ``statistic`` receives an index array (length ``n``) into the clips and recomputes the metric on that resample
    (a set metric such as the FVD-proxy is recomputed from the resampled clips, not averaged). The percentiles are
    shifted by the bootstrap's bias (mean of the resamples less the full-set value): a resample repeats clips,
    which shrinks a set's covariance and inflates a Fréchet distance, so an unshifted interval would not contain
    the value it describes. Seeded, so a record is reproducible; two rows whose intervals do not overlap differ by
    more than the choice of test clips explains.
    """
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 clips, got {n}")
    point = float(statistic(np.arange(n)))
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(int(resamples))], np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or not math.isfinite(point):
        return math.nan, math.nan
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) - (values.mean() - point)
    return float(low), float(high)


def frechet_distance_eigh(features1: np.ndarray, features2: np.ndarray) -> float:
    """:func:`frechet_distance_features` through the exact symmetric form only (no ``sqrtm`` and no retries):
    the same value to ~1e-6 relative, several times faster, for a bootstrap's hundreds of recomputations."""
    mu1, s1 = feature_stats(features1)
    mu2, s2 = feature_stats(features2)
    diff = mu1 - mu2
    tr = _trace_sqrt_product_eigh(s1, s2)
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr), 0.0)


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a[i] - b[i]`` over the same clips (same photographs and seeds in two rows) and its 95% bootstrap
    interval over the pairs. A paired interval is far narrower than two rows' own intervals, because what the clips
    share (an easy photograph, a hard seed) cancels: it says whether one variant is better on the same clips."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"paired values of at least 2 clips needed, got shapes {np.shape(a)} and {np.shape(b)}")
    low, high = bootstrap_interval(lambda i: float(d[i].mean()), d.size, seed=seed)
    return float(d.mean()), low, high


def intervals_overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """True when two (low, high) intervals overlap (the difference is within the spread); None if either is
    missing."""
    if not a or not b or any(not math.isfinite(float(v)) for v in (*a, *b)):
        return None
    return float(a[0]) <= float(b[1]) and float(b[0]) <= float(a[1])


# ------------------------------------------------------------------------------------------------------------
# Real FVD with a user-supplied TorchScript I3D


# Call convention of the TorchScript I3D used by StyleGAN-V and universome/fvd-comparison (a port of the TF-Hub
# Kinetics-400 I3D of google-research/frechet_video_distance): detector(videos, **kwargs) -> (B, 400) features,
# videos (B, 3, T, 224, 224) float in [-1, 1] when rescale=False and resize=False (the preprocessing below).
I3D_KWARGS: dict[str, bool] = {"rescale": False, "resize": False, "return_features": True}
I3D_SIZE = 224


def to_unit_tensor(videos: Any) -> torch.Tensor:
    """Videos as float (N, F, 3, H, W) in [-1, 1].

    Accepts uint8 arrays/tensors (N, F, H, W, 3) as ``generate`` returns them (or a single clip (F, H, W, 3)),
    float tensors (N, F, 3, H, W) / (F, 3, H, W) already in [-1, 1] as ``explorer.data`` renders them, or a list of
    either. Why both: real clips come from the renderer, generated ones from the pipeline as 8-bit frames.
    """
    if isinstance(videos, (list, tuple)):
        return torch.cat([to_unit_tensor(v) for v in videos], dim=0)
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(np.ascontiguousarray(videos))
    if not isinstance(videos, torch.Tensor):
        raise TypeError(f"unsupported video type {type(videos).__name__}")
    if videos.dtype == torch.uint8:
        if videos.ndim == 4:
            videos = videos[None]
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be (N, F, H, W, 3), got {tuple(videos.shape)}")
        return videos.permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)
    if videos.ndim == 4:
        videos = videos[None]
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"float videos must be (N, F, 3, H, W) in [-1, 1], got {tuple(videos.shape)}")
    return videos.float()


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript I3D detector (e.g. ``i3d_torchscript.pt``).

    Security: a TorchScript file is a program, not just weights -- loading and running it executes the code it
    contains. Only pass a file from a source you trust. This is the one place the project calls torch.jit.load;
    everything the project ships is safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D detector not found: {path}")
    return torch.jit.load(str(path), map_location=device).eval()


def i3d_preprocess(videos: Any) -> torch.Tensor:
    """Videos -> (N, 3, T, 224, 224) in [-1, 1]: bilinear resize of every frame to 224x224 (no crop), as the
    reference TF FVD code's ``preprocess`` does."""
    x = to_unit_tensor(videos)
    n, f, c, h, w = x.shape
    y = F.interpolate(x.reshape(n * f, c, h, w), size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    return y.reshape(n, f, c, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4).clamp(-1, 1).contiguous()


@torch.no_grad()
def i3d_features(detector: Any, videos: Any, batch_size: int = 4) -> np.ndarray:
    """I3D features (N, D) of ``videos``, called with :data:`I3D_KWARGS`."""
    x = to_unit_tensor(videos)
    device = next(iter(detector.parameters()), torch.empty(0)).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        batch = i3d_preprocess(x[i : i + batch_size]).to(device)
        feats = detector(batch, **I3D_KWARGS)
        out.append(feats.detach().double().cpu().reshape(batch.shape[0], -1).numpy())
    return np.concatenate(out, axis=0)


def fvd(real: Any, generated: Any, detector: Any, batch_size: int = 4) -> float:
    """Fréchet Video Distance between two sets of videos in the features of a TorchScript I3D."""
    return frechet_distance_features(i3d_features(detector, real, batch_size),
                                     i3d_features(detector, generated, batch_size))
