"""Benchmark: how long the app's "Count FLOPs" takes while another client's generation runs (issue 15 bug 4).

    python scripts/bench_app_flops.py                      # svd (50 steps with CFG) generating, counts at full scale
    python scripts/bench_app_flops.py --generate lowres-ft --stages mobilevd,svd --size 768x432

Each round counts ``--stages`` at one fresh size (never cached: the service's disk cache is a temporary folder)
with nothing else running, then at the transposed size (the same cost) while a generation of ``--generate`` runs
in a thread of the same process through the app's own ``run_stage``, and prints both times and their ratio, with
the seconds the generation paused for the counts. Counting runs in its own process; the generation yields the cores
between denoising steps while a count runs (``WorkLock.interactive``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from explorer.data import photo_path
from explorer.serving import (
    Common,
    FlopsService,
    ResultCache,
    StageCatalog,
    StageRequest,
    WorkLock,
    check_image,
    run_stage,
)


def _count(service: FlopsService, stages: list[str], width: int, height: int) -> float:
    start = time.perf_counter()
    for slug in stages:
        service.stage(slug, "full", width, height)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--generate", default="svd", help="stage generating meanwhile (its default steps)")
    p.add_argument("--stages", default="mobilevd,svd", help="what one Count FLOPs click counts (stage, diff side)")
    p.add_argument("--size", default="768x432", help="full-scale pixel size WxH (multiples of 64 both ways)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    work = WorkLock()
    catalog = StageCatalog(args.checkpoints, None, "off", "tiny", work=work)
    service = FlopsService(work, cache_dir=tempfile.mkdtemp(prefix="bench-app-flops-"))
    out_dir = Path(tempfile.mkdtemp(prefix="bench-app-flops-out-"))
    checked = check_image(str(photo_path("chelsea")))
    catalog.pipeline(args.generate)  # loaded before timing, as in an app that has started
    service.stage(stages[0], "full", 256, 128)  # start the counting process
    idle, busy, paused = [], [], []
    for r in range(args.rounds):
        w, h = width + 64 * r, height + 64 * r  # a fresh size each round (not cached)
        idle.append(_count(service, stages, w, h))
        step_times: list[float] = []

        def generation(seed: int = r, step_times: list[float] = step_times) -> None:
            def cb(done: int, total: int) -> None:
                step_times.append(time.perf_counter())

            run_stage(catalog, service, ResultCache(), out_dir, checked, StageRequest(args.generate),
                      Common(seed=seed), progress=cb)

        thread = threading.Thread(target=generation, daemon=True)
        thread.start()
        while len(step_times) < 3 and thread.is_alive():  # under way
            time.sleep(0.05)
        t0 = time.perf_counter()
        busy.append(_count(service, stages, h, w))  # transposed: same cost, not cached
        t1 = time.perf_counter()
        during = [t for t in step_times if t0 <= t <= t1]
        gaps = [b - a for a, b in zip(step_times, step_times[1:], strict=False)]
        paused.append(max(gaps) if gaps else 0.0)
        still_running = thread.is_alive()
        thread.join()
        print(f"round {r + 1}: {'+'.join(stages)} at {w}x{h}: idle {idle[-1]:.2f} s; at {h}x{w} during a "
              f"{args.generate} generation: {busy[-1]:.2f} s ({len(during)} denoising steps ran meanwhile; longest "
              f"gap between steps {paused[-1]:.2f} s; generation still running after the count: {still_running})")
    ratio = statistics.median(busy) / statistics.median(idle)
    print(f"median: idle {statistics.median(idle):.2f} s, during generation {statistics.median(busy):.2f} s, "
          f"ratio {ratio:.2f}x (target: under 5 s during generation)")
    service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
