"""Throughput of the synthetic clip generator (clips/s), in-process and through DataLoader workers.

Why: on a 2-core CPU, data generation competes with the model for the same cores; this tells the training
script whether the data can keep up. Usage: ``python scripts/bench_data.py [--clips N] [--workers 0,2]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from explorer import data


def bench(size: tuple[int, int], n: int, render_threads: int | None) -> float:
    """Clips per second of make_clip in this process, after a warm-up that fills the photo cache."""
    data.RENDER_THREADS = render_threads
    for i in range(3):
        data.make_clip("train", i, size)
    t = time.perf_counter()
    for i in range(n):
        data.make_clip("train", 1000 + i, size)
    return n / (time.perf_counter() - t)


def bench_loader(size: tuple[int, int], n: int, workers: int, batch: int = 8) -> float:
    """Clips per second through a DataLoader over ClipStream (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(data.ClipStream("train", size, start=5000), batch_size=batch,
                                         num_workers=workers)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    got = 0
    while got < n:
        got += next(it)["frames"].shape[0]
    return got / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    args = ap.parse_args()
    for size in (data.LOWRES, data.BASE):
        tag = f"{size[0]}x{size[1]}"
        for rt in (1, None):
            label = "1 render thread (default)" if rt == 1 else f"torch's {torch.get_num_threads()} threads"
            print(f"{tag}  make_clip, {label}: {bench(size, args.clips, rt):7.1f} clips/s")
        data.RENDER_THREADS = 1
        for w in (int(x) for x in args.workers.split(",")):
            print(f"{tag}  DataLoader(ClipStream), {w} worker(s), batch 8: "
                  f"{bench_loader(size, args.clips, w):7.1f} clips/s")
    size = data.BASE
    t = time.perf_counter()
    for i in range(args.clips):
        data.make_image("train", i, size)
    print(f"{size[0]}x{size[1]}  make_image: {args.clips / (time.perf_counter() - t):7.1f} images/s")


if __name__ == "__main__":
    main()
