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
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from explorer import latency as lat  # noqa: E402
from explorer import stages as registry  # noqa: E402
from explorer.export import INPUT_NAMES, export_inputs, load_stage_unet  # noqa: E402

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 512x256, got {text!r}") from exc
    return w, h


def parse_stages(text: str) -> list[str]:
    """Canonical slugs, baseline first (always included: ratios are measured together)."""
    slugs = list(registry.SLUGS) if text.strip().lower() == "all" else [registry.resolve(s) for s in text.split(",")
                                                                        if s.strip()]
    ordered = [lat.BASELINE_STAGE] + [s for s in dict.fromkeys(slugs) if s != lat.BASELINE_STAGE]
    return ordered


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cannot allocate memory" in text or isinstance(exc, MemoryError)


@dataclass
class Candidate:
    """One (stage, mode) under test: the callable, its inputs and what has been measured so far."""

    stage: str
    mode: str
    width: int
    height: int
    frames: int
    weights: str = ""
    fn: Any = None
    inputs: tuple[torch.Tensor, ...] = ()
    times_ms: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    status: str = "passed"
    error: str = ""
    fast_convs: int = 0


class Timer:
    """Times one call with the device's proper synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Any, args: tuple[torch.Tensor, ...]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0) * 1000.0


def build(cand: Candidate, scale: str, device: torch.device, dtype: torch.dtype, checkpoints: str | None,
          fast_convs: bool, unet_config: dict[str, Any] | None, compile_mode: str | None) -> None:
    """Load the stage's UNet, cast, (optionally) compile; fills ``cand.fn``/``cand.inputs``."""
    loaded = load_stage_unet(cand.stage, scale, checkpoints, device="cpu", unet_config=unet_config)
    unet = loaded.unet
    cand.weights = loaded.weights
    if device.type == "cpu" and fast_convs:
        from explorer.cpu_speed import use_fast_temporal_convs

        cand.fast_convs = use_fast_temporal_convs(unet)
    inputs = export_inputs(unet, scale, cand.width, cand.height, cand.frames)
    unet = unet.to(device=device) if dtype == torch.float32 else unet.to(device=device, dtype=dtype)
    cand.inputs = tuple(inputs[n].to(device=device, dtype=dtype) for n in INPUT_NAMES)

    def call(sample: torch.Tensor, timestep: torch.Tensor, ctx: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return unet(sample, timestep, ctx, ids, return_dict=False)[0]

    fn = torch.compile(call, mode=compile_mode) if cand.mode == "compile" else call

    def run(*args: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(*args)

    cand.fn = run


def _fail(cand: Candidate, exc: BaseException) -> None:
    cand.status = "oom" if _is_oom(exc) else "failed"
    cand.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    cand.fn, cand.inputs = None, ()


def measure(cands: list[Candidate], device: torch.device, warmup: int, runs: int, order: str,
            prepare: Any) -> None:
    """Warm up and time every candidate; interleaved rounds (default) or one candidate at a time."""
    timer = Timer(device)

    def warm(c: Candidate) -> None:
        try:
            prepare(c)
            for _ in range(max(1, warmup)):
                c.fn(*c.inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' numbers
            _fail(c, exc)

    def one(c: Candidate) -> None:
        if c.fn is None:
            return
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            c.times_ms.append(timer(c.fn, c.inputs))
            if device.type == "cuda":
                c.peak_bytes = max(c.peak_bytes, torch.cuda.max_memory_allocated(device))
        except Exception as exc:  # noqa: BLE001
            _fail(c, exc)

    def release(c: Candidate) -> None:
        c.fn, c.inputs = None, ()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if order == "sequential":
        for c in cands:
            warm(c)
            for _ in range(runs):
                one(c)
            release(c)
        return
    for c in cands:
        warm(c)
    for _ in range(runs):
        for c in cands:
            one(c)
    for c in cands:
        release(c)


def device_label(device: torch.device, threads: int) -> tuple[str, str | None]:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device), None
    return f"{lat.cpu_name()} ({threads} thread{'s' if threads != 1 else ''})", None


def to_records(cands: list[Candidate], args: argparse.Namespace, device: torch.device, run_id: str,
               command: str) -> list[lat.LatencyRecord]:
    import diffusers

    threads = torch.get_num_threads()
    name, chipset = device_label(device, threads)
    records = []
    for c in cands:
        runtime = "pytorch eager" if c.mode == "eager" else "pytorch torch.compile"
        notes = [f"diffusers {diffusers.__version__}"]
        if device.type == "cpu":
            notes.append(f"{threads} intra-op thread(s)")
            notes.append("exact CPU speed-up explorer.cpu_speed.use_fast_temporal_convs on (temporal Conv3d run as "
                         f"Conv2d; {c.fast_convs} layers in this stage)" if args.fast_convs else
                         "temporal Conv3d run natively (--no-fast-temporal-convs)")
        if args.order == "interleaved":
            notes.append("interleaved rounds over all stages of the run")
        if args.note:
            notes.append(args.note)
        if c.error:
            notes.append(c.error)
        stats: dict[str, Any] = lat.summarize_ms(c.times_ms) if c.times_ms and c.status == "passed" else {}
        if c.status == "passed" and not stats:
            c.status = "failed"
        peak = [c.peak_bytes / 2**20] * 2 if c.peak_bytes else None
        records.append(lat.LatencyRecord(
            stage=c.stage, scale=args.scale, resolution=f"{c.width}x{c.height}", frames=c.frames, device=name,
            chipset=chipset, os=lat.host_os(), runtime=runtime, runtime_version=f"torch {torch.__version__}",
            precision=args.dtype, compute_unit="GPU" if device.type == "cuda" else "CPU", status=c.status,
            source=f"measured here: scripts/benchmark.py ({c.mode}, {args.order} rounds)",
            peak_memory=peak, date=lat.now_iso(), command=command, notes="; ".join(notes), weights=c.weights,
            run_id=run_id, extra={"warmup": args.warmup, "machine": platform.machine()},
            **stats,
        ))
    lat.add_speedups(records)
    return records


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
    cands = []
    for slug in parse_stages(args.stages):
        stage = registry.get_stage(slug)
        width, height = args.size or stage.size("full" if args.scale == "full" else "tiny")
        for mode in modes:
            cands.append(Candidate(slug, mode, width, height, args.frames or stage.frames))

    def prepare(c: Candidate) -> None:
        build(c, args.scale, device, dtype, args.checkpoints or None, args.fast_convs, None, args.compile_mode)

    run_id = f"benchmark-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
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
