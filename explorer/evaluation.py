"""Scoring generated clips against the fixed test eval set: FVD-proxy, first-frame PSNR, motion Spearman (+ FVD).

The core of ``scripts/evaluate.py`` (per-stage metrics) and of the ablation runs
(``explorer.training.ablations``): the SAME clips, conditioning images and seeds for everything that is compared.
See docs/metrics.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from explorer import data
from explorer import metrics as M
from explorer.fvd_proxy import FVDProxy


@dataclass
class Reference:
    """Everything computed once per resolution: clips, real features, conditioning images, real motion."""

    width: int
    height: int
    clips: list[data.Clip]
    images: list[np.ndarray]  # uint8 (H, W, 3) first frames = conditioning images
    real: torch.Tensor  # (N, F, 3, H, W) in [-1, 1]
    proxy_features: np.ndarray
    real_floor: float  # FVD-proxy between the set and the same design rendered with another data seed
    real_spearman: float  # Spearman of the requested bucket vs motion measured on the real clips
    real_consecutive_psnr: float  # motion-compensated consecutive-frame PSNR of the real clips (dB)
    i3d_features: np.ndarray | None = None
    round_trips: dict[str, list[np.ndarray]] = field(default_factory=dict)  # by VAE fingerprint

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


def _u8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    return frame.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def build_reference(width: int, height: int, n: int, data_seed: int, proxy: FVDProxy, detector: Any) -> Reference:
    clips = data.eval_clips("test", n, (width, height), seed=data_seed)
    real = torch.stack([c.frames for c in clips])
    other = torch.stack([c.frames for c in data.eval_clips("test", n, (width, height), seed=data_seed + 1)])
    feats = proxy.features(real)
    floor = M.frechet_distance_features(feats, proxy.features(other))
    rho, _ = M.motion_spearman([c.motion_bucket_id for c in clips], [c.frames for c in clips])
    real_u8 = [np.stack([_u8(f) for f in c.frames]) for c in clips]
    cpsnr = float(np.mean([M.consecutive_psnr(v) for v in real_u8]))
    ref = Reference(width, height, clips, [_u8(c.image) for c in clips], real, feats, floor, rho, cpsnr)
    if detector is not None:
        ref.i3d_features = M.i3d_features(detector, real)
    return ref


def _vae_fingerprint(vae: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def round_trips(ref: Reference, vae: torch.nn.Module) -> list[np.ndarray]:
    key = _vae_fingerprint(vae)
    if key not in ref.round_trips:
        ref.round_trips[key] = [M.vae_round_trip(vae, img, ref.width, ref.height) for img in ref.images]
    return ref.round_trips[key]


def score(videos: list[np.ndarray], ref: Reference, vae: torch.nn.Module, proxy: FVDProxy,
          detector: Any) -> dict[str, Any]:
    """The metrics of one set of generated videos (uint8 (F, H, W, 3) each) against a reference."""
    gen_feats = proxy.features(videos)
    trips = round_trips(ref, vae)
    psnrs = [M.first_frame_psnr(v, t) for v, t in zip(videos, trips, strict=True)]
    rho, motions = M.motion_spearman([c.motion_bucket_id for c in ref.clips], videos)
    row: dict[str, Any] = {
        "fvd_proxy": round(M.frechet_distance_features(ref.proxy_features, gen_feats), 4),
        "first_frame_psnr": round(float(np.mean(psnrs)), 3),
        "first_frame_psnr_min": round(float(np.min(psnrs)), 3),
        "motion_spearman": round(rho, 4),
        "motion_measured_mean_ref_px": round(float(np.mean(motions)), 4),
        "consecutive_psnr": round(float(np.mean([M.consecutive_psnr(v) for v in videos])), 3),
        "consecutive_psnr_real": round(ref.real_consecutive_psnr, 3),
    }
    if detector is not None:
        row["fvd"] = round(M.frechet_distance_features(ref.i3d_features, M.i3d_features(detector, videos)), 3)
    return row


BUCKET_SWEEP: tuple[int, int] = (20, 255)
SWEEP_PHOTO = "chelsea"


def bucket_sweep(pipe: Any, width: int, height: int, *, steps: int, seed: int, frames: int, min_guidance: float,
                 max_guidance: float, noise_aug: float, buckets: tuple[int, ...] = BUCKET_SWEEP,
                 photo: str = SWEEP_PHOTO, fps: int = 7) -> dict[str, Any]:
    """Does the motion bucket move the video? One test photograph, one seed, the same settings at each bucket;
    measured global motion (reference px per frame) per bucket and the ratio last / first."""
    from explorer.pipeline import generate

    image = data.test_images()[photo]
    motion = {}
    for b in buckets:
        res = generate(pipe, image, width=width, height=height, num_frames=frames, steps=steps,
                       min_guidance=min_guidance, max_guidance=max_guidance, seed=seed, motion_bucket_id=b, fps=fps,
                       noise_aug_strength=noise_aug)
        motion[str(b)] = round(M.global_motion(res.frames), 4)
    lo, hi = motion[str(buckets[0])], motion[str(buckets[-1])]
    ratio = hi / lo if lo > 0 else (float("inf") if hi > 0 else 1.0)
    return {"photo": photo, "seed": seed, "fps": fps, "motion_ref_px": motion, "ratio": round(ratio, 3)}


def generate_set(pipe: Any, ref: Reference, *, steps: int, seed: int, frames: int, min_guidance: float,
                 max_guidance: float, noise_aug: float, decode_chunk_size: int | None, desc: str
                 ) -> tuple[list[np.ndarray], list[float], int]:
    """Generate one clip per reference clip (same image, seed + i, the clip's bucket and fps)."""
    from explorer.pipeline import generate

    videos, seconds, nfe = [], [], 0
    for i, (clip, image) in enumerate(tqdm(list(zip(ref.clips, ref.images, strict=True)), desc=desc, leave=False)):
        res = generate(pipe, image, width=ref.width, height=ref.height, num_frames=frames, steps=steps,
                       min_guidance=min_guidance, max_guidance=max_guidance, seed=seed + i,
                       motion_bucket_id=int(clip.motion_bucket_id), fps=int(clip.fps),
                       noise_aug_strength=noise_aug, decode_chunk_size=decode_chunk_size)
        videos.append(res.frames)
        seconds.append(res.seconds)
        nfe = res.nfe
    return videos, seconds, nfe
