"""Per-NFE UNet latency of any stages (torch), with the svd-512 baseline measured in the same run.

    python scripts/benchmark.py --stages all --scale tiny --device cpu                 # this machine
    python scripts/benchmark.py --stages all --scale full --device cuda --dtype fp16 --mode both
    python scripts/benchmark.py --stages all --scale full --mode eager,ort --order paired --warmup 0 --runs 2

Why the baseline is always in the run: speedups are ratios of numbers measured together (same process, same
machine state, interleaved rounds), which is what the paper's 82 -> 45 ms claim is about; absolute ms of two
different runs are not comparable on a shared machine. ``--order paired`` keeps only svd-512 loaded beside one
stage at a time (full-scale models on a CPU that cannot hold them all). On the CPU the run also measures the
matmul peak (fp32, same threads), so each stage's achieved TFLOP/s is shown against it, and each stage's peak
memory (resident memory added by its weights and activations). ``--mode ort`` times onnxruntime (CPU, fp32) on
the same inputs.

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
from explorer.benchmarking import (
    DTYPES,
    MODES,
    Candidate,
    build,
    format_table,
    make_candidates,
    matmul_peak_tflops,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stages", default="all", help="comma-separated slugs or 'all' (svd-512 is always added)")
    parser.add_argument("--scale", default="tiny", choices=["full", "tiny", "micro"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--mode", default="eager", help="eager, compile, ort, both (= eager,compile) or a list")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--order", default="interleaved", choices=["interleaved", "sequential", "paired"])
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
    modes = ["eager", "compile"] if args.mode == "both" else [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--mode must be one of {', '.join(MODES)}, 'both' or a comma-separated list")
    args.matmul_peak = matmul_peak_tflops() if device.type == "cpu" else None
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
        print(format_table(records, args.matmul_peak))
    if not args.no_write:
        out = Path(args.out or lat.DEFAULT_DIR / f"{device.type}-{args.scale}.json")
        lat.write_records(out, records)
        print(f"wrote {len(records)} records to {out}", file=sys.stderr)
    return 0 if all(r.status == "passed" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
