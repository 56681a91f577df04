"""Benchmark: how long the FLOPs explorer takes for one stage at full scale (target: under 3 s on 2 cores).

    python scripts/bench_flops.py [--stages svd,mobilevd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from explorer import flops, stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(stages.SLUGS))
    parser.add_argument("--scale", default="full")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    flops.stage_flops("svd-512", args.scale)  # warm-up: imports, first meta build
    print(f"{'stage':<22}{'TFLOPs':>9}{'median s':>10}{'max s':>8}")
    worst = 0.0
    for slug in args.stages.split(","):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = flops.stage_flops(slug, args.scale)
            times.append(time.perf_counter() - t0)
        worst = max(worst, statistics.median(times))
        print(f"{r.stage:<22}{r.tflops:>9.3f}{statistics.median(times):>10.2f}{max(times):>8.2f}")
    print(f"slowest stage median: {worst:.2f} s (target < 3 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
