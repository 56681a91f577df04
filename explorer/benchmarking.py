"""Per-NFE UNet latency in torch: candidates (stage x mode), synchronised timing in interleaved rounds, records.

The core of ``scripts/benchmark.py``. Why interleaved rounds with the svd-512 baseline always in the run: speedups
are ratios of numbers measured together (same process, same machine state), so slow drifts of a shared machine hit
all stages alike. The record schema, summaries and speedups are ``explorer.latency``'s; this module only measures.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer import latency as lat
from explorer import stages as registry
from explorer.export import INPUT_NAMES, export_inputs, load_stage_unet

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_stages(text: str) -> list[str]:
    """Canonical slugs, baseline first (always included: ratios are measured together)."""
    slugs = list(registry.SLUGS) if text.strip().lower() == "all" else [registry.resolve(s) for s in text.split(",")
                                                                        if s.strip()]
    ordered = [lat.BASELINE_STAGE] + [s for s in dict.fromkeys(slugs) if s != lat.BASELINE_STAGE]
    return ordered


def is_oom(exc: BaseException) -> bool:
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


def make_candidates(slugs: list[str], modes: list[str], scale: str, size: tuple[int, int] | None,
                    frames: int | None) -> list[Candidate]:
    """One candidate per stage and mode, at the stage's size for the scale (or ``size``) and its frame count."""
    cands = []
    for slug in slugs:
        stage = registry.get_stage(slug)
        width, height = size or stage.size("full" if scale == "full" else "tiny")
        for mode in modes:
            cands.append(Candidate(slug, mode, width, height, frames or stage.frames))
    return cands


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
    cand.status = "oom" if is_oom(exc) else "failed"
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


def new_run_id() -> str:
    """The benchmark run's id (``explorer.latency.new_run_id``)."""
    return lat.new_run_id("benchmark")


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
