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
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from explorer.evaluation import BASELINES, MIN_CLIPS, evaluate, format_motion_bands, select_stages
from explorer.fvd_proxy import DEFAULT_DIR as PROXY_DIR
from explorer.stages import resolve

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = ROOT / "checkpoints"


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
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clips < 2:
        raise SystemExit("--clips must be >= 2 (a covariance needs two samples)")
    if args.clips < MIN_CLIPS:
        print(f"note: --clips {args.clips} < {MIN_CLIPS}: fine for a smoke test, not for reported numbers",
              file=sys.stderr)
    slugs = select_stages(args.stages)
    overrides = parse_overrides(args.steps_override)
    command = "python scripts/evaluate.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else
                                                                              sys.argv[1:]))
    return evaluate(args.checkpoints, slugs, overrides, clips=args.clips, seed=args.seed, data_seed=args.data_seed,
                    proxy_dir=args.proxy, i3d=args.i3d, device=args.device, baselines=not args.no_baselines,
                    sweep=not args.no_sweep, write=not args.no_write, command=command)


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("stage", "res", "nfe", "clips", "fvd_proxy", "ff_psnr", "cons_psnr", "motion_rho", "b255/b20",
            "hf0", "hf_med", "std_drift", "fvd", "s/clip")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        sweep = r.get("bucket_sweep") or {}
        vals = (r["stage"], r["resolution"], r["nfe"], r["clips"], r["fvd_proxy"], r["first_frame_psnr"],
                r.get("consecutive_psnr", "-"), r["motion_spearman"], sweep.get("ratio", "-"),
                r.get("hf_kept_frame0", "-"), r.get("hf_kept_median", "-"), r.get("std_drift_mean", "-"),
                r.get("fvd", "-"), r["seconds_per_clip"])
        lines.append(" | ".join(str(v) for v in vals))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = run(args, argv)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        for row in rows:
            if row.get("by_motion"):
                print("\n" + format_motion_bands(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
