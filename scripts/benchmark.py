"""Per-NFE UNet latency of any stages (torch), with the svd-512 baseline measured in the same run.

    python scripts/benchmark.py --stages all --scale tiny --device cpu                 # this machine
    python scripts/benchmark.py --stages all --scale full --device cuda --dtype fp16 --mode both

Why the baseline is always in the run: speedups are ratios of numbers measured together (same process, same
machine state, interleaved rounds), which is what the paper's 82 -> 45 ms claim is about; absolute ms of two
different runs are not comparable on a shared machine.

Timing: ``--warmup`` untimed evaluations per stage (the first also triggers ``torch.compile``), then ``--runs``
timed rounds; in each round every stage is evaluated once (``--order interleaved``, default) so slow drifts of the
machine hit all stages alike; ``--order sequential`` holds one model at a time (for GPUs short of memory). On CUDA
every evaluation is bracketed by CUDA events and ``torch.cuda.synchronize()``; on the CPU by ``perf_counter``.
On the CPU, temporal Conv3d layers run as the exact Conv2d of ``explorer.cpu_speed.use_fast_temporal_convs``
(same maths, several times faster on CPUs; recorded in every record's notes; ``--no-fast-temporal-convs`` = off).

Weights: a trained ``checkpoints/<stage>`` folder when present at that scale, random weights otherwise (latency
does not depend on values); every record says which. Records (``explorer.latency``) are merged into ``--out``
(default ``checkpoints/latency/<cpu|cuda>-<scale>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging

from explorer import latency as lat
from explorer import stages as registry
from explorer.benchmarking import (
    DTYPES,
    Candidate,
    build,
    make_candidates,
    measure,
    new_run_id,
    parse_stages,
    to_records,
)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 512x256, got {text!r}") from exc
    return w, h


def print_table(records: list[lat.LatencyRecord]) -> None:
    head = f"{'stage':<20}{'mode':<15}{'res':>10}{'median ms':>11}{'min':>9}{'max':>9}{'x svd-512':>10}" \
           f"{'paper GPU':>10}{'paper x':>8}{'status':>8}"
    print(head)
    print("-" * len(head))
    base_gpu = registry.get_stage(lat.BASELINE_STAGE).paper.gpu_ms

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in records:
        paper = registry.get_stage(r.stage).paper.gpu_ms
        ratio = "-" if r.speedup_vs_baseline is None else f"{r.speedup_vs_baseline:.2f}"
        pratio = "-" if not paper or not base_gpu else f"{base_gpu / paper:.2f}"
        print(f"{r.stage:<20}{r.runtime.replace('pytorch ', ''):<15}{r.resolution:>10}{f(r.median_ms):>11}"
              f"{f(r.min_ms):>9}{f(r.max_ms):>9}{ratio:>10}{('-' if paper is None else f'{paper:g}'):>10}"
              f"{pratio:>8}{r.status:>8}")
    print(f"({lat.INCLUDES}; 'x svd-512' = svd-512 median / stage median, measured in this run; paper ratios use "
          "the paper's GPU ms at full scale)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stages", default="all", help="comma-separated slugs or 'all' (svd-512 is always added)")
    parser.add_argument("--scale", default="tiny", choices=["full", "tiny", "micro"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--mode", default="eager", choices=["eager", "compile", "both"])
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--order", default="interleaved", choices=["interleaved", "sequential"])
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch's default)")
    parser.add_argument("--size", type=parse_size, help="override every stage's size, WxH pixels")
    parser.add_argument("--frames", type=int, help="override the frame count (default: the stage's, 14)")
    parser.add_argument("--checkpoints", default="checkpoints", help="stage folders ('' = random weights)")
    parser.add_argument("--no-fast-temporal-convs", action="store_true")
    parser.add_argument("--out", help="records file (default checkpoints/latency/<cpu|cuda>-<scale>.json)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--note", default="", help="free text added to every record's notes")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args(argv)
    args.fast_convs = not args.no_fast_temporal_convs
    diffusers_logging.set_verbosity_error()  # its fp16-cast advice does not apply to a benchmark

    if args.runs < 1:
        parser.error("--runs must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine; use --device cpu", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    modes = ["eager", "compile"] if args.mode == "both" else [args.mode]
    cands = make_candidates(parse_stages(args.stages), modes, args.scale, args.size, args.frames)

    def prepare(c: Candidate) -> None:
        build(c, args.scale, device, dtype, args.checkpoints or None, args.fast_convs, None, args.compile_mode)

    run_id = new_run_id()
    measure(cands, device, args.warmup, args.runs, args.order, prepare)
    records = to_records(cands, args, device, run_id, lat.command_line(["scripts/benchmark.py", *(
        argv if argv is not None else sys.argv[1:])]))
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
    else:
        print_table(records)
    if not args.no_write:
        out = Path(args.out or lat.DEFAULT_DIR / f"{device.type}-{args.scale}.json")
        lat.write_records(out, records)
        print(f"wrote {len(records)} records to {out}", file=sys.stderr)
    return 0 if all(r.status == "passed" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
