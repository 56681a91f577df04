"""Per-stage quality metrics on the fixed test eval set: FVD-proxy, first-frame PSNR, motion Spearman (+ FVD).

    python scripts/evaluate.py                                   # every stage folder under checkpoints/, N = 64
    python scripts/evaluate.py --stages svd,lowres-ft --clips 64 --json
    python scripts/evaluate.py --stages lowres-ft --steps-override lowres-ft=1     # recorded as lowres-ft@1step
    python scripts/evaluate.py --i3d i3d_torchscript.pt          # also real FVD (TorchScript: runs code, see --help)

For each stage folder present (missing ones are skipped with a note), the SAME N test clips
(``explorer.data.eval_clips('test', N, size=<stage resolution>, seed=--data-seed)``) are generated from their first
frames with the same seeds (clip i: ``--seed + i``), each clip's own motion bucket and fps, at the stage's resolution
and default steps. Real clips for the Fréchet distances are those same clips rendered at the stage's resolution.
Trivial baselines are measured beside the stages, at every evaluated resolution: ``baseline-static`` (the VAE round
trip of the conditioning image repeated) and ``baseline-untrained`` (a randomly initialised UNet of the stage's
architecture with the stage's shipped VAE / image encoder). Each stage's numbers are written to
``<stage folder>/metrics.json`` together with the baselines at its resolution. See docs/metrics.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from explorer import metrics as M  # noqa: E402
from explorer.evaluation import (  # noqa: E402
    Reference,
    bucket_sweep,
    build_reference,
    generate_set,
    round_trips,
    score,
)
from explorer.fvd_proxy import DEFAULT_DIR as PROXY_DIR  # noqa: E402
from explorer.fvd_proxy import WEIGHTS_FILE, load_proxy  # noqa: E402
from explorer.stages import SLUGS, resolve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = ROOT / "checkpoints"
BASELINES: tuple[str, ...] = ("baseline-static", "baseline-untrained")
BASELINE_UNTRAINED_STEPS = 10  # the random UNet's output is noise at any step count; 10 keeps it cheap
METRICS_FILE = "metrics.json"
METRICS_FORMAT = "mobilevd-explorer/metrics/1"
BASELINES_DIR = "baselines"  # <checkpoints>/baselines/metrics.json: the trivial baselines, a row each
MIN_CLIPS = 64  # the floor for reported numbers


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


def _steps_suffix(steps: int) -> str:
    return f"@{steps}step" if steps == 1 else f"@{steps}steps"


def parse_overrides(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--steps-override expects SLUG=N, got {item!r}")
        slug, n = item.split("=", 1)
        slug = slug.strip()
        key = slug if slug in BASELINES else resolve(slug)
        try:
            steps = int(n)
        except ValueError:
            raise SystemExit(f"--steps-override {item!r}: N must be an integer") from None
        if steps < 1:
            raise SystemExit(f"--steps-override {item!r}: N must be >= 1")
        out[key] = steps
    return out


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


def _finite(value: Any) -> Any:
    """JSON has no inf / nan: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
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
    tmp.write_text(json.dumps(_finite(out), indent=2) + "\n", encoding="utf-8")
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
    tmp.write_text(json.dumps(_finite({"format": METRICS_FORMAT, "rows": merged}), indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Per-stage quality metrics (FVD-proxy, first-frame PSNR, motion Spearman, optional FVD) on the "
        "fixed test eval set, with the trivial baselines; writes <stage folder>/metrics.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stages", default="all",
                   help="'all' or a comma list of slugs (aliases allowed). Missing stage folders are skipped with a "
                   "note. The baselines are measured at every evaluated resolution unless --no-baselines.")
    p.add_argument("--clips", type=int, default=MIN_CLIPS, help=f"N test clips (default {MIN_CLIPS}; the issue "
                   f"requires N >= {MIN_CLIPS} for reported numbers, smaller N is for tests)")
    p.add_argument("--json", action="store_true", help="print the JSON list of rows to stdout")
    p.add_argument("--checkpoints", default=str(DEFAULT_CHECKPOINTS), help="folder holding the stage folders")
    p.add_argument("--i3d", default=None, metavar="PATH",
                   help="TorchScript I3D detector (e.g. i3d_torchscript.pt as used by StyleGAN-V / fvd-comparison) "
                   "to also compute real FVD. SECURITY: a TorchScript file is executable code, loaded with "
                   "torch.jit.load and run; pass only a file from a source you trust.")
    p.add_argument("--steps-override", nargs="*", default=[], metavar="SLUG=N",
                   help="sample SLUG with N steps instead of its default; the row is named e.g. lowres-ft@1step "
                   "and stored under 'variants' in metrics.json")
    p.add_argument("--seed", type=int, default=0, help="generation seed of clip i is SEED + i")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the eval set (eval_clips); keep 0 to compare")
    p.add_argument("--proxy", default=str(PROXY_DIR), help="FVD-proxy network folder (safetensors + config.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-baselines", action="store_true", help="skip baseline-static / baseline-untrained")
    p.add_argument("--no-sweep", action="store_true", help="skip the bucket sweep (buckets 20 and 255 on one test "
                   "photograph and seed: does the motion bucket move the video?)")
    p.add_argument("--no-write", action="store_true", help="do not write metrics.json files")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    return p


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate; returns the rows (also written to metrics.json unless --no-write)."""
    from explorer.pipeline import load_stage

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clips < 2:
        raise SystemExit("--clips must be >= 2 (a covariance needs two samples)")
    if args.clips < MIN_CLIPS:
        print(f"note: --clips {args.clips} < {MIN_CLIPS}: fine for a smoke test, not for reported numbers",
              file=sys.stderr)
    ckpt = Path(args.checkpoints)
    slugs = select_stages(args.stages)
    overrides = parse_overrides(args.steps_override)
    want_baselines = not args.no_baselines
    proxy = load_proxy(args.proxy)
    proxy_sha = _sha(Path(args.proxy) / WEIGHTS_FILE)
    detector = M.load_i3d(args.i3d, args.device) if args.i3d else None
    command = "python scripts/evaluate.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else
                                                                              sys.argv[1:]))
    common = {
        "clips": args.clips, "seed": args.seed, "data_seed": args.data_seed, "source": "measured here",
        "command": command, "device": str(args.device), "torch_threads": torch.get_num_threads(),
        "host": platform.machine(), "fvd_proxy_weights": proxy_sha,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    refs: dict[tuple[int, int], Reference] = {}
    donors: dict[tuple[int, int], tuple[Path, Any, Any]] = {}  # resolution -> (folder, pipe, record)
    rows: list[dict[str, Any]] = []
    per_stage: dict[str, tuple[Path, dict[str, Any] | None, dict[str, dict[str, Any]], tuple[int, int]]] = {}

    def reference(width: int, height: int) -> Reference:
        if (width, height) not in refs:
            refs[(width, height)] = build_reference(width, height, args.clips, args.data_seed, proxy, detector)
        return refs[(width, height)]

    for slug in slugs:
        folder = ckpt / slug
        if not (folder / "stage.json").is_file():
            print(f"note: skipping {slug}: no stage folder at {folder}", file=sys.stderr)
            continue
        pipe, rec = load_stage(folder, device=args.device)
        size = (rec.width, rec.height)
        ref = reference(*size)
        steps = overrides.get(slug, rec.steps)
        name = slug if steps == rec.steps else slug + _steps_suffix(steps)
        t0 = time.perf_counter()
        videos, seconds, nfe = generate_set(
            pipe, ref, steps=steps, seed=args.seed, frames=rec.frames, min_guidance=rec.min_guidance,
            max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength,
            decode_chunk_size=rec.decode_chunk_size, desc=name)
        gen_s = time.perf_counter() - t0
        row = {"stage": name, "slug": slug, "nfe": nfe, "steps": steps, "cfg": rec.max_guidance > 1.0,
               "resolution": ref.resolution, "frames": rec.frames}
        row.update(score(videos, ref, pipe.vae, proxy, detector))
        if not args.no_sweep:
            row["bucket_sweep"] = bucket_sweep(
                pipe, *size, steps=steps, seed=args.seed, frames=rec.frames, min_guidance=rec.min_guidance,
                max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength)
        row.update(seconds_per_clip=round(float(np.mean(seconds)), 4), eval_seconds=round(gen_s, 1),
                   fvd_proxy_real_floor=round(ref.real_floor, 4), real_motion_spearman=round(ref.real_spearman, 4),
                   **common)
        rows.append(row)
        entry = per_stage.setdefault(slug, (folder, None, {}, size))
        if steps == rec.steps:
            per_stage[slug] = (folder, row, entry[2], size)
        else:
            entry[2][name] = row
        donors.setdefault(size, (folder, pipe, rec))

    baseline_rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
    if want_baselines and not donors:
        print("note: no stage folder found: the baselines need a stage's VAE and image encoder; skipped",
              file=sys.stderr)
    for size, (folder, pipe, rec) in donors.items() if want_baselines else ():
        ref = reference(*size)
        base_common = {"resolution": ref.resolution, "frames": rec.frames, "components_from": folder.name}
        # baseline-static: the conditioning image's VAE round trip repeated (8-bit, as generated clips are)
        t0 = time.perf_counter()
        trips = round_trips(ref, pipe.vae)
        static = [np.repeat(np.round(np.clip(t, 0, 1) * 255).astype(np.uint8)[None], rec.frames, axis=0)
                  for t in trips]
        t_static = (time.perf_counter() - t0) / len(static)
        row = {"stage": "baseline-static", "slug": None, "nfe": 0, "steps": 0, "cfg": False, **base_common}
        row.update(score(static, ref, pipe.vae, proxy, detector))
        row.update(seconds_per_clip=round(t_static, 4), fvd_proxy_real_floor=round(ref.real_floor, 4),
                   real_motion_spearman=round(ref.real_spearman, 4), **common)
        out = [row]
        # baseline-untrained: random UNet, the stage's VAE / image encoder / scheduler
        steps = overrides.get("baseline-untrained", BASELINE_UNTRAINED_STEPS)
        upipe = untrained_pipeline(pipe, folder, seed=args.seed)
        videos, seconds, nfe = generate_set(
            upipe, ref, steps=steps, seed=args.seed, frames=rec.frames, min_guidance=rec.min_guidance,
            max_guidance=rec.max_guidance, noise_aug=rec.noise_aug_strength,
            decode_chunk_size=rec.decode_chunk_size, desc=f"baseline-untrained {ref.resolution}")
        row = {"stage": "baseline-untrained", "slug": None, "nfe": nfe, "steps": steps,
               "cfg": rec.max_guidance > 1.0, **base_common}
        row.update(score(videos, ref, pipe.vae, proxy, detector))
        row.update(seconds_per_clip=round(float(np.mean(seconds)), 4), fvd_proxy_real_floor=round(ref.real_floor, 4),
                   real_motion_spearman=round(ref.real_spearman, 4), **common)
        out.append(row)
        baseline_rows[size] = out
        rows.extend(out)

    if not args.no_write:
        for slug, (folder, row, variants, size) in per_stage.items():
            write_metrics(folder, slug, row, variants, baseline_rows.get(size, []))
        if baseline_rows:
            write_baselines(ckpt / BASELINES_DIR, [r for rs in baseline_rows.values() for r in rs])
    return [_finite(r) for r in rows]


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("stage", "res", "nfe", "clips", "fvd_proxy", "ff_psnr", "cons_psnr", "motion_rho", "b255/b20", "fvd",
            "s/clip")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        sweep = r.get("bucket_sweep") or {}
        vals = (r["stage"], r["resolution"], r["nfe"], r["clips"], r["fvd_proxy"], r["first_frame_psnr"],
                r.get("consecutive_psnr", "-"), r["motion_spearman"], sweep.get("ratio", "-"), r.get("fvd", "-"),
                r["seconds_per_clip"])
        lines.append(" | ".join(str(v) for v in vals))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = run(args, argv)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
