"""End-to-end generation time of tiny stages (image encoder + VAE encode + UNet x NFE + VAE decode), same run.

    python scripts/bench_generate.py                                   # svd, lowres-ft, mobilevd; 3 rounds
    python scripts/bench_generate.py --stages svd,mobilevd --runs 5 --threads 2 --json runs/bench_generate.json

Why one run: the issues' targets are ratios and budgets on this shared 2-core CPU, so every stage is timed in the
same process, in interleaved rounds (each round generates once with every stage), after one untimed warm-up
generation each. Reported per stage: median seconds per clip, NFE, median UNet seconds per NFE, the speed-up
over ``svd`` (median svd seconds / median stage seconds), end to end over UNet time, and where the time goes
(median seconds of image encoder, VAE encode, UNet, VAE decode, postprocessing, the rest). Targets checked
(printed, not asserted):
  - tiny svd, 50 NFE with CFG (its default), end to end < 60 s;
  - one tiny UNet evaluation at low resolution (lowres-ft) < 0.3 s;
  - tiny mobilevd end to end >= 20x faster than tiny svd;
  - tiny mobilevd end to end <= 2.5x its UNet time.
Same seed and image for every stage (a bundled test photograph unless --image).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from explorer import data
from explorer import stages as registry
from explorer.compare import missing_stages
from explorer.pipeline import generate, load_image, load_stage

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"svd_seconds_max": 60.0, "lowres_unet_seconds_max": 0.3, "mobilevd_speedup_min": 20.0,
           "mobilevd_wall_over_unet_max": 2.5}
PARTS = ("image_encoder", "vae_encode", "unet", "vae_decode", "postprocess", "other")


def test_photo() -> object:
    """The first test-split photograph (never seen in training)."""
    return load_image(data.load_photo(data.photos("test")[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stages", default="svd,lowres-ft,mobilevd")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--image", help="conditioning image (default: a bundled test photograph)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        slugs = list(dict.fromkeys(registry.resolve(s) for s in args.stages.split(",") if s.strip()))
        image = load_image(args.image) if args.image else test_photo()
    except ValueError as exc:
        print(f"bench_generate: {exc}", file=sys.stderr)
        return 2
    root = Path(args.checkpoints)
    if missing := missing_stages(root, slugs):
        print(f"bench_generate: no trained stage folder for {', '.join(missing)} under {root}", file=sys.stderr)
        return 2
    pipes = {s: load_stage(root / s)[0] for s in slugs}
    times: dict[str, list] = {s: [] for s in slugs}
    for s in slugs:  # warm-up
        generate(pipes[s], image, seed=args.seed)
    for _ in range(args.runs):
        for s in slugs:
            r = generate(pipes[s], image, seed=args.seed)
            times[s].append((r.seconds, r.unet_seconds, r.nfe, r.breakdown))
    rows = []
    for s in slugs:
        secs = statistics.median(t[0] for t in times[s])
        nfe = times[s][0][2]
        per_nfe = statistics.median(t[1] / t[2] for t in times[s])
        split = {p: statistics.median(t[3].get(p, 0.0) for t in times[s]) for p in PARTS}
        rows.append({"stage": s, "nfe": nfe, "seconds": secs, "unet_seconds_per_nfe": per_nfe,
                     "wall_over_unet": statistics.median(t[0] / t[1] for t in times[s]), "breakdown": split,
                     "all_seconds": [t[0] for t in times[s]]})
    base = next((r["seconds"] for r in rows if r["stage"] == "svd"), None)
    for r in rows:
        r["speedup_vs_svd"] = base / r["seconds"] if base else None
    print(f"end to end on {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"median of {args.runs} interleaved rounds (same image and seed)")
    print(f"{'stage':>20} {'NFE':>4} {'s/clip':>8} {'UNet s/NFE':>11} {'speed-up vs svd':>16} {'wall/UNet':>10}")
    for r in rows:
        sp = f"{r['speedup_vs_svd']:.1f}x" if r["speedup_vs_svd"] else "-"
        print(f"{r['stage']:>20} {r['nfe']:>4} {r['seconds']:>8.3f} {r['unet_seconds_per_nfe']:>11.3f} {sp:>16} "
              f"{r['wall_over_unet']:>9.2f}x")
    print("where the time goes (median s per clip): " + "  ".join(PARTS))
    for r in rows:
        print(f"{r['stage']:>20} " + " ".join(f"{r['breakdown'][p]:>{max(8, len(p))}.3f}" for p in PARTS))
    by = {r["stage"]: r for r in rows}
    checks = []
    if "svd" in by:
        checks.append(("tiny svd end to end < 60 s", by["svd"]["seconds"] < TARGETS["svd_seconds_max"]))
    if "lowres-ft" in by:
        checks.append(("one tiny low-res UNet evaluation < 0.3 s",
                       by["lowres-ft"]["unet_seconds_per_nfe"] < TARGETS["lowres_unet_seconds_max"]))
    if "svd" in by and "channel-funnels" in by:
        checks.append(("tiny mobilevd >= 20x faster than tiny svd",
                       by["channel-funnels"]["speedup_vs_svd"] >= TARGETS["mobilevd_speedup_min"]))
    if "channel-funnels" in by:
        checks.append(("tiny mobilevd end to end <= 2.5x its UNet time",
                       by["channel-funnels"]["wall_over_unet"] <= TARGETS["mobilevd_wall_over_unet_max"]))
    for name, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {name}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "targets": TARGETS, "checks": dict(checks),
                                               "threads": torch.get_num_threads(), "runs": args.runs,
                                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
