"""Scoring generated clips against the fixed test eval set: FVD-proxy, first-frame PSNR, motion Spearman (+ FVD).

The core of ``scripts/evaluate.py`` (per-stage metrics, the trivial baselines, ``metrics.json``) and of the ablation
runs (``explorer.training.ablations``): the SAME clips, conditioning images and seeds for everything that is
compared. See docs/metrics.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from explorer import data
from explorer import metrics as M
from explorer.fvd_proxy import WEIGHTS_FILE, FVDProxy, load_proxy
from explorer.stages import SLUGS, resolve

BASELINES: tuple[str, ...] = ("baseline-static", "baseline-untrained")
BASELINE_UNTRAINED_STEPS = 10  # the random UNet's output is noise at any step count; 10 keeps it cheap
METRICS_FILE = "metrics.json"
METRICS_FORMAT = "mobilevd-explorer/metrics/1"
BASELINES_DIR = "baselines"  # <checkpoints>/baselines/metrics.json: the trivial baselines, a row each
MIN_CLIPS = 64  # the floor for reported numbers


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
    real_motions: list[float]  # measured motion of each real clip, reference px per frame
    real_consecutive: list[float]  # motion-compensated consecutive-frame PSNR of each real clip (dB)
    i3d_features: np.ndarray | None = None
    round_trips: dict[str, list[np.ndarray]] = field(default_factory=dict)  # by VAE fingerprint

    @property
    def real_consecutive_psnr(self) -> float:
        return float(np.mean(self.real_consecutive))

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
    rho, real_motions = M.motion_spearman([c.motion_bucket_id for c in clips], [c.frames for c in clips])
    real_u8 = [np.stack([_u8(f) for f in c.frames]) for c in clips]
    real_consecutive = [M.consecutive_psnr(v) for v in real_u8]
    ref = Reference(width, height, clips, [_u8(c.image) for c in clips], real, feats, floor, rho,
                    list(real_motions), real_consecutive)
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
    buckets = [c.motion_bucket_id for c in ref.clips]
    rho, motions = M.motion_spearman(buckets, videos)
    consecutive = [M.consecutive_psnr(v) for v in videos]
    detail = [M.sharpness_and_fade(v, t) for v, t in zip(videos, trips, strict=True)]
    row: dict[str, Any] = {
        "fvd_proxy": round(M.frechet_distance_features(ref.proxy_features, gen_feats), 4),
        "first_frame_psnr": round(float(np.mean(psnrs)), 3),
        "first_frame_psnr_min": round(float(np.min(psnrs)), 3),
        "motion_spearman": round(rho, 4),
        "motion_measured_mean_ref_px": round(float(np.mean(motions)), 4),
        "consecutive_psnr": round(float(np.mean(consecutive)), 3),
        "consecutive_psnr_real": round(ref.real_consecutive_psnr, 3),
        # no blur, no fade (issue 13's floors): means over clips of explorer.metrics.sharpness_and_fade
        **{k: round(float(np.mean([d[k] for d in detail])), 4) for k in ("hf_kept_frame0", "hf_kept_median")},
        "std_drift_mean": round(float(np.mean([d["std_drift_max"] for d in detail])), 4),  # per clip: worst frame
        "std_drift_max": round(float(np.max([d["std_drift_max"] for d in detail])), 4),  # the worst clip
        "spread": spread(ref.proxy_features, gen_feats, psnrs, buckets, motions, consecutive),
        "by_motion": motion_bands(buckets, psnrs, consecutive, motions, ref.real_consecutive, ref.real_motions),
        # per test clip, in clip order (the same clips and seeds for every row): paired comparisons between rows
        "per_clip": {"first_frame_psnr": [round(float(v), 3) for v in psnrs],
                     "motion_ref_px": [round(float(v), 4) for v in motions],
                     "consecutive_psnr": [round(float(v), 3) for v in consecutive]},
    }
    if detector is not None:
        row["fvd"] = round(M.frechet_distance_features(ref.i3d_features, M.i3d_features(detector, videos)), 3)
    return row


def spread(real_features: np.ndarray, gen_features: np.ndarray, psnrs: list[float], buckets: list[float],
           motions: list[float], consecutive: list[float], seed: int = 0) -> dict[str, Any]:
    """95% bootstrap intervals over the test clips of a row's metrics (``explorer.metrics.bootstrap_interval``).

    Clips are resampled as pairs (generated clip i with its real clip i: the rows of a table share the test clips
    and seeds, and a difference between rows is a difference on the same clips), so the FVD-proxy interval is the
    distance between the resampled sets. Means and the Spearman are recomputed on each resample."""
    n = len(psnrs)
    if n < 2:
        return {"method": f"none: a bootstrap needs at least 2 clips, got {n}"}
    real, gen = np.asarray(real_features), np.asarray(gen_features)
    p, b, m, c = (np.asarray(v, np.float64) for v in (psnrs, buckets, motions, consecutive))
    stats: dict[str, Callable[[np.ndarray], float]] = {
        "fvd_proxy": lambda i: M.frechet_distance_eigh(real[i], gen[i]),
        "first_frame_psnr": lambda i: float(p[i].mean()),
        "motion_spearman": lambda i: M.spearman(b[i], m[i]),
        "consecutive_psnr": lambda i: float(c[i].mean()),
    }
    out: dict[str, Any] = {"method": f"bootstrap over {n} clips, {M.BOOTSTRAP_RESAMPLES} resamples, "
                                     f"{M.BOOTSTRAP_LEVEL:.0%} bias-corrected percentile interval, seed {seed}"}
    for name, fn in stats.items():
        low, high = M.bootstrap_interval(fn, n, seed=seed)
        out[name] = [round(low, 4), round(high, 4)]
    return out


MOTION_BANDS: tuple[tuple[int, int], ...] = ((0, 63), (64, 127), (128, 191), (192, 255))


def motion_bands(buckets: Sequence[float], psnrs: Sequence[float], consecutive: Sequence[float],
                 motions: Sequence[float], real_consecutive: Sequence[float], real_motions: Sequence[float],
                 bands: Sequence[tuple[int, int]] = MOTION_BANDS) -> list[dict[str, Any]]:
    """The row's metrics per band of requested motion bucket, beside the real clips of the same band.

    Why: a mean over all clips hides where a model fails. A model whose fast clips break up into boiling texture
    shows it here as consecutive-frame PSNR falling with the bucket, and one that barely moves as measured motion
    far below the real clips' -- while the Spearman, which only ranks, can still look good."""
    out = []
    b = np.asarray(buckets, np.float64)
    for lo, hi in bands:
        idx = np.flatnonzero((b >= lo) & (b <= hi))
        band: dict[str, Any] = {"buckets": f"{lo}-{hi}", "clips": int(idx.size)}
        if idx.size:
            for name, values in (("first_frame_psnr", psnrs), ("consecutive_psnr", consecutive),
                                 ("consecutive_psnr_real", real_consecutive), ("motion_ref_px", motions),
                                 ("motion_ref_px_real", real_motions)):
                band[name] = round(float(np.mean(np.asarray(values, np.float64)[idx])), 3)
        out.append(band)
    return out


def format_motion_bands(row: dict[str, Any]) -> str:
    """A small text table of ``row['by_motion']`` (generated vs real, per bucket band)."""
    head = ("buckets", "clips", "ff_psnr", "cons_psnr", "cons_real", "motion", "motion_real")
    lines = [f"{row['stage']} @ {row['resolution']}: per motion-bucket band (motion in reference px per frame)",
             " | ".join(head), " | ".join("---" for _ in head)]
    for band in row.get("by_motion") or []:
        lines.append(" | ".join(str(band.get(k, "-")) for k in ("buckets", "clips", "first_frame_psnr",
                                                                 "consecutive_psnr", "consecutive_psnr_real",
                                                                 "motion_ref_px", "motion_ref_px_real")))
    return "\n".join(lines)


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


# ----------------------------------------------------------------------------------------------------------
# Per-stage evaluation runs (scripts/evaluate.py)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"


def untrained_pipeline(pipe: Any, folder: Path, seed: int) -> Any:
    """A pipeline with a randomly initialised UNet built from the stage's ``unet/config.json`` (plus its recorded
    transforms) and the stage's own VAE, image encoder, feature extractor and scheduler."""
    from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    from explorer.models import build_unet
    from explorer.pipeline import read_stage_record

    own = folder / "unet" / "config.json"  # absent when the stage references another stage's UNet (svd-512)
    cfg = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else dict(pipe.unet.config)
    params = inspect.signature(UNetSpatioTemporalConditionModel.__init__).parameters
    cfg = {k: v for k, v in cfg.items() if k in params and not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        unet = build_unet(cfg, device="cpu", seed=seed)
    transforms = read_stage_record(folder).transforms
    if transforms:
        from explorer.transforms import apply_transforms

        unet = apply_transforms(unet, list(transforms))
    unet = unet.to(device=pipe.unet.device).eval()
    if pipe.unet.dtype != unet.dtype:
        unet = unet.to(dtype=pipe.unet.dtype)
    new = StableVideoDiffusionPipeline(unet=unet, vae=pipe.vae, image_encoder=pipe.image_encoder,
                                       feature_extractor=pipe.feature_extractor, scheduler=pipe.scheduler)
    new.set_progress_bar_config(disable=True)
    return new


def steps_suffix(steps: int) -> str:
    return f"@{steps}step" if steps == 1 else f"@{steps}steps"


def select_stages(spec: str) -> list[str]:
    """Registry slugs to evaluate, in path order (baseline names are accepted and ignored: the baselines are
    always measured unless --no-baselines)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names or names == ["all"]:
        return list(SLUGS)
    slugs: list[str] = []
    for name in names:
        if name in BASELINES or name == "baselines":
            continue
        slug = resolve(name)
        if slug not in slugs:
            slugs.append(slug)
    order = {s: i for i, s in enumerate(SLUGS)}
    return sorted(slugs, key=order.__getitem__)


def json_safe(value: Any) -> Any:
    """JSON has no inf / nan: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_metrics(folder: Path, slug: str, row: dict[str, Any] | None, variants: dict[str, dict[str, Any]],
                  baselines: list[dict[str, Any]]) -> Path:
    """Merge this run's numbers into ``<folder>/metrics.json`` (atomic): the default-steps row at the top level,
    step-override rows under ``variants``, the baselines at the stage's resolution under ``baselines``."""
    path = folder / METRICS_FILE
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
    if row is not None:
        out = dict(row)
    else:
        out = {k: v for k, v in old.items() if k not in ("variants", "baselines", "format")}
        out.setdefault("stage", slug)
    out["format"] = METRICS_FORMAT
    merged = dict(old.get("variants") or {})
    merged.update(variants)
    out["variants"] = merged
    out["baselines"] = baselines if baselines else list(old.get("baselines") or [])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(out), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_baselines(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """The trivial baselines as rows of their own: ``<checkpoints>/baselines/metrics.json`` holds one row per
    baseline and resolution (``baseline-static@128x64``, ...), merged with the rows of earlier runs (atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METRICS_FILE
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("rows") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            old = {}
    merged = {**old, **{f"{r['stage']}@{r['resolution']}": r for r in rows}}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe({"format": METRICS_FORMAT, "rows": merged}), indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class EvalRun:
    """What every row of one evaluation run shares: scorer networks, seeds, step overrides, the columns written into
    every row, and the reference set of each resolution (built once, on first use)."""

    clips: int
    seed: int
    data_seed: int
    device: str
    proxy: FVDProxy
    detector: Any
    overrides: dict[str, int]
    common: dict[str, Any]
    sweep: bool = True
    refs: dict[tuple[int, int], Reference] = field(default_factory=dict)

    def reference(self, width: int, height: int) -> Reference:
        if (width, height) not in self.refs:
            self.refs[(width, height)] = build_reference(width, height, self.clips, self.data_seed, self.proxy,
                                                         self.detector)
        return self.refs[(width, height)]


def evaluate_stage(run: EvalRun, slug: str, pipe: Any, rec: Any) -> dict[str, Any]:
    """One stage's row: its clips at its resolution and default steps (or ``--steps-override``), scored."""
    size = (rec.width, rec.height)
    ref = run.reference(*size)
    steps = run.overrides.get(slug, rec.steps)
    name = slug if steps == rec.steps else slug + steps_suffix(steps)
    t0 = time.perf_counter()
    videos, seconds, nfe = generate_set(
        pipe, ref, steps=steps, seed=run.seed, frames=rec.frames, min_guidance=rec.min_guidance,
        max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength,
        decode_chunk_size=rec.decode_chunk_size, desc=name)
    gen_s = time.perf_counter() - t0
    row = {"stage": name, "slug": slug, "nfe": nfe, "steps": steps, "cfg": rec.max_guidance > 1.0,
           "resolution": ref.resolution, "frames": rec.frames}
    row.update(score(videos, ref, pipe.vae, run.proxy, run.detector))
    if run.sweep:
        row["bucket_sweep"] = bucket_sweep(
            pipe, *size, steps=steps, seed=run.seed, frames=rec.frames, min_guidance=rec.min_guidance,
            max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength)
    row.update(seconds_per_clip=round(float(np.mean(seconds)), 4), eval_seconds=round(gen_s, 1),
               fvd_proxy_real_floor=round(ref.real_floor, 4), real_motion_spearman=round(ref.real_spearman, 4),
               **run.common)
    return row


def evaluate_baselines(run: EvalRun, folder: Path, pipe: Any, rec: Any) -> list[dict[str, Any]]:
    """The trivial baselines at a stage's resolution, with that stage's VAE / image encoder / scheduler:
    ``baseline-static`` (the conditioning image's VAE round trip repeated) and ``baseline-untrained`` (random UNet)."""
    ref = run.reference(rec.width, rec.height)
    base_common = {"resolution": ref.resolution, "frames": rec.frames, "components_from": folder.name}
    # baseline-static: the conditioning image's VAE round trip repeated (8-bit, as generated clips are)
    t0 = time.perf_counter()
    trips = round_trips(ref, pipe.vae)
    static = [np.repeat(np.round(np.clip(t, 0, 1) * 255).astype(np.uint8)[None], rec.frames, axis=0)
              for t in trips]
    t_static = (time.perf_counter() - t0) / len(static)
    row = {"stage": "baseline-static", "slug": None, "nfe": 0, "steps": 0, "cfg": False, **base_common}
    row.update(score(static, ref, pipe.vae, run.proxy, run.detector))
    row.update(seconds_per_clip=round(t_static, 4), fvd_proxy_real_floor=round(ref.real_floor, 4),
               real_motion_spearman=round(ref.real_spearman, 4), **run.common)
    out = [row]
    # baseline-untrained: random UNet, the stage's VAE / image encoder / scheduler
    steps = run.overrides.get("baseline-untrained", BASELINE_UNTRAINED_STEPS)
    upipe = untrained_pipeline(pipe, folder, seed=run.seed)
    videos, seconds, nfe = generate_set(
        upipe, ref, steps=steps, seed=run.seed, frames=rec.frames, min_guidance=rec.min_guidance,
        max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength,
        decode_chunk_size=rec.decode_chunk_size, desc=f"baseline-untrained {ref.resolution}")
    row = {"stage": "baseline-untrained", "slug": None, "nfe": nfe, "steps": steps,
           "cfg": rec.max_guidance > 1.0, **base_common}
    row.update(score(videos, ref, pipe.vae, run.proxy, run.detector))
    row.update(seconds_per_clip=round(float(np.mean(seconds)), 4), fvd_proxy_real_floor=round(ref.real_floor, 4),
               real_motion_spearman=round(ref.real_spearman, 4), **run.common)
    out.append(row)
    return out


def evaluate(checkpoints: str | Path, slugs: Sequence[str], overrides: dict[str, int], *, clips: int, seed: int,
             data_seed: int, proxy_dir: str | Path, i3d: str | None, device: str, baselines: bool = True,
             sweep: bool = True, write: bool = True, command: str = "") -> list[dict[str, Any]]:
    """Evaluate the stage folders ``<checkpoints>/<slug>`` present (missing ones are skipped with a note) and the
    trivial baselines at every evaluated resolution; rows are also merged into the metrics.json files if ``write``.
    """
    from explorer.pipeline import load_stage

    ckpt = Path(checkpoints)
    proxy = load_proxy(proxy_dir)
    proxy_sha = _sha(Path(proxy_dir) / WEIGHTS_FILE)
    detector = M.load_i3d(i3d, device) if i3d else None
    common = {
        "clips": clips, "seed": seed, "data_seed": data_seed, "source": "measured here",
        "command": command, "device": str(device), "torch_threads": torch.get_num_threads(),
        "host": platform.machine(), "fvd_proxy_weights": proxy_sha,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    run = EvalRun(clips, seed, data_seed, device, proxy, detector, overrides, common, sweep=sweep)
    donors: dict[tuple[int, int], tuple[Path, Any, Any]] = {}  # resolution -> (folder, pipe, record)
    rows: list[dict[str, Any]] = []
    per_stage: dict[str, tuple[Path, dict[str, Any] | None, dict[str, dict[str, Any]], tuple[int, int]]] = {}
    for slug in slugs:
        folder = ckpt / slug
        if not (folder / "stage.json").is_file():
            print(f"note: skipping {slug}: no stage folder at {folder}", file=sys.stderr)
            continue
        pipe, rec = load_stage(folder, device=device)
        size = (rec.width, rec.height)
        row = evaluate_stage(run, slug, pipe, rec)
        rows.append(row)
        entry = per_stage.setdefault(slug, (folder, None, {}, size))
        if row["steps"] == rec.steps:
            per_stage[slug] = (folder, row, entry[2], size)
        else:
            entry[2][row["stage"]] = row
        donors.setdefault(size, (folder, pipe, rec))

    baseline_rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
    if baselines and not donors:
        print("note: no stage folder found: the baselines need a stage's VAE and image encoder; skipped",
              file=sys.stderr)
    for size, (folder, pipe, rec) in donors.items() if baselines else ():
        baseline_rows[size] = evaluate_baselines(run, folder, pipe, rec)
        rows.extend(baseline_rows[size])

    if write:
        for slug, (folder, row, variants, size) in per_stage.items():
            write_metrics(folder, slug, row, variants, baseline_rows.get(size, []))
        if baseline_rows:
            write_baselines(ckpt / BASELINES_DIR, [r for rs in baseline_rows.values() for r in rs])
    return [json_safe(r) for r in rows]
