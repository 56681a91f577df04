"""Per-NFE UNet latency: candidates (stage x mode: torch eager, torch.compile, onnxruntime), synchronised timing
in interleaved or paired rounds, peak memory, achieved TFLOP/s, records.

The core of ``scripts/benchmark.py``. Why the svd-512 baseline is always in the run: speedups are ratios of numbers
measured together (same process, same machine state), so slow drifts of a shared machine hit all stages alike.
``interleaved`` holds every model at once; ``paired`` (for full-scale models on a machine that cannot hold them
all) keeps only the baseline loaded and alternates it with one stage at a time, and each stage's ratio uses the
baseline times of its own rounds. The record schema and summaries are ``explorer.latency``'s.
"""

from __future__ import annotations

import argparse
import gc
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer import latency as lat
from explorer import stages as registry
from explorer.export import INPUT_NAMES, export_inputs, load_stage_unet

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = ("eager", "compile", "ort")
RUNTIMES = {"eager": "pytorch eager", "compile": "pytorch torch.compile", "ort": "onnxruntime"}


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
    peak_bytes: int | None = None  # None: not measured (a CPU stage can add 0 bytes: freed memory reused)
    status: str = "passed"
    error: str = ""
    fast_convs: int = 0
    flops: float | None = None  # per NFE (2 x MAC), the project's one cost model
    rss_before_mb: float = 0.0  # CPU: the process's resident memory before the stage was built
    peak_rss_mb: float = 0.0  # CPU: the highest resident memory sampled during its build and calls
    baseline_ms: list[float] = field(default_factory=list)  # paired order: the baseline's times in its rounds
    tmp: str = ""  # onnxruntime: the exported model's temporary folder


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


def count_flops(cand: Candidate, scale: str, unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """FLOPs per NFE of the model under test: counted on it (small scales: one forward), or on the meta device
    from the stage's architecture at full scale (random weights, the documented kept blocks: the same model)."""
    from explorer.flops import count_unet_flops, stage_flops

    if scale == "full":
        return stage_flops(cand.stage, "full", cand.width, cand.height, cand.frames).tflops * 1e12
    return float(count_unet_flops(unet, inputs).flops)


def build(cand: Candidate, scale: str, device: torch.device, dtype: torch.dtype, checkpoints: str | None,
          fast_convs: bool, unet_config: dict[str, Any] | None, compile_mode: str | None) -> None:
    """Load the stage's UNet, cast, (optionally) compile or export it to onnxruntime; fills ``cand.fn`` /
    ``cand.inputs`` / ``cand.flops``."""
    loaded = load_stage_unet(cand.stage, scale, checkpoints, device="cpu", unet_config=unet_config)
    unet = loaded.unet
    cand.weights = loaded.weights
    inputs = export_inputs(unet, scale, cand.width, cand.height, cand.frames)
    if cand.flops is None:
        cand.flops = count_flops(cand, scale, unet, inputs)
    if cand.mode == "ort":
        model = _export_ort(cand, unet, inputs, device, dtype)
        del unet, loaded  # the torch model is freed before onnxruntime loads its copy
        gc.collect()
        _start_ort(cand, model, inputs)
        return
    if device.type == "cpu" and fast_convs:
        from explorer.cpu_speed import use_fast_temporal_convs

        cand.fast_convs = use_fast_temporal_convs(unet)
    unet = unet.to(device=device) if dtype == torch.float32 else unet.to(device=device, dtype=dtype)
    cand.inputs = tuple(inputs[n].to(device=device, dtype=dtype) for n in INPUT_NAMES)

    def call(sample: torch.Tensor, timestep: torch.Tensor, ctx: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return unet(sample, timestep, ctx, ids, return_dict=False)[0]

    fn = torch.compile(call, mode=compile_mode) if cand.mode == "compile" else call

    def run(*args: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(*args)

    cand.fn = run


def _export_ort(cand: Candidate, unet: torch.nn.Module, inputs: dict[str, torch.Tensor], device: torch.device,
                dtype: torch.dtype) -> Any:
    """Export one NFE to ONNX in a temporary folder (removed by ``release``); returns the model file."""
    from explorer.export import export_onnx

    if device.type != "cpu" or dtype != torch.float32:
        raise ValueError("the onnxruntime mode runs fp32 on the CPU (--device cpu --dtype fp32)")
    cand.tmp = tempfile.mkdtemp(prefix=f"bench-ort-{cand.stage}-")
    return export_onnx(unet, f"{cand.tmp}/unet.onnx", inputs).model


def _start_ort(cand: Candidate, model: Any, inputs: dict[str, torch.Tensor]) -> None:
    """An onnxruntime CPU session with torch's thread count, fed the same inputs as the torch candidates."""
    from explorer.export import ort_session

    session = ort_session(model, threads=torch.get_num_threads())
    feeds = {n: inputs[n].numpy() for n in INPUT_NAMES}
    cand.inputs = ()

    def run() -> Any:
        return session.run(None, feeds)

    cand.fn = run


def matmul_peak_tflops(size: int = 2048, repeats: int = 5) -> float:
    """This CPU's fp32 matmul throughput with torch's threads (best of ``repeats`` n x n products, 2 n^3 FLOPs):
    the ceiling a UNet evaluation's achieved TFLOP/s is read against, measured in the same run."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e12


def _fail(cand: Candidate, exc: BaseException) -> None:
    cand.status = "oom" if is_oom(exc) else "failed"
    cand.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    cand.fn, cand.inputs = None, ()


def measure(cands: list[Candidate], device: torch.device, warmup: int, runs: int, order: str,
            prepare: Any) -> None:
    """Warm up and time every candidate: ``interleaved`` rounds (default), ``sequential`` (one model at a time)
    or ``paired`` (per mode, its first candidate -- the baseline -- alternated with each other one at a time)."""
    from explorer.pipeline.generation import RssSampler

    timer = Timer(device)
    cpu = device.type == "cpu" and RssSampler().available

    def sampled(c: Candidate, work: Any) -> None:
        sampler = RssSampler() if cpu else None
        if sampler is not None:
            sampler.start()
        try:
            work()
        finally:
            if sampler is not None:
                sampler.stop()
                c.peak_rss_mb = max(c.peak_rss_mb, sampler.peak_mb)

    def warm(c: Candidate) -> None:
        try:
            if cpu:
                gc.collect()
                c.rss_before_mb = RssSampler.rss_mb()

            def work() -> None:
                prepare(c)
                for _ in range(warmup):
                    c.fn(*c.inputs)

            sampled(c, work)
            if device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' numbers
            _fail(c, exc)

    def one(c: Candidate) -> float | None:
        if c.fn is None:
            return None
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            took: list[float] = []
            sampled(c, lambda: took.append(timer(c.fn, c.inputs)))
            c.times_ms.append(took[0])
            if device.type == "cuda":
                c.peak_bytes = max(c.peak_bytes or 0, torch.cuda.max_memory_allocated(device))
            elif cpu:
                c.peak_bytes = int(max(0.0, c.peak_rss_mb - c.rss_before_mb) * 2**20)
            return took[0]
        except Exception as exc:  # noqa: BLE001
            _fail(c, exc)
            return None

    def release(c: Candidate) -> None:
        c.fn, c.inputs = None, ()
        if c.tmp:
            shutil.rmtree(c.tmp, ignore_errors=True)
            c.tmp = ""
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if order == "sequential":
        for c in cands:
            warm(c)
            for _ in range(runs):
                one(c)
            release(c)
        return
    if order == "paired":  # per mode: that mode's baseline (its first candidate) against each other stage
        for mode in dict.fromkeys(c.mode for c in cands):
            base, *others = [c for c in cands if c.mode == mode]
            warm(base)
            for c in others:
                warm(c)
                for _ in range(runs):
                    b = one(base)
                    if one(c) is not None and b is not None:
                        c.baseline_ms.append(b)
                release(c)
            release(base)
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
    matmul_peak = getattr(args, "matmul_peak", None)
    for c in cands:
        runtime = RUNTIMES[c.mode]
        version = f"torch {torch.__version__}"
        notes = [f"diffusers {diffusers.__version__}"]
        if c.mode == "ort":
            import onnxruntime

            version = f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider); exported with torch " \
                      f"{torch.__version__}"
        if device.type == "cpu":
            notes.append(f"{threads} intra-op thread(s)")
            if c.mode != "ort":
                notes.append("exact CPU speed-up explorer.cpu_speed.use_fast_temporal_convs on (temporal Conv3d "
                             f"run as Conv2d; {c.fast_convs} layers in this stage)" if args.fast_convs else
                             "temporal Conv3d run natively (--no-fast-temporal-convs)")
            notes.append("peak memory: resident memory added above the process before the stage was built "
                         "(weights + activations; sampled every 10 ms)")
        if args.order == "interleaved":
            notes.append("interleaved rounds over all stages of the run")
        elif args.order == "paired":
            notes.append("paired rounds: the baseline and this stage alternated; the ratio uses the baseline's "
                         "times of these rounds")
        if args.note:
            notes.append(args.note)
        if c.error:
            notes.append(c.error)
        stats: dict[str, Any] = lat.summarize_ms(c.times_ms) if c.times_ms and c.status == "passed" else {}
        if c.status == "passed" and not stats:
            c.status = "failed"
        peak = [c.peak_bytes / 2**20] * 2 if c.peak_bytes is not None else None
        records.append(lat.LatencyRecord(
            stage=c.stage, scale=args.scale, resolution=f"{c.width}x{c.height}", frames=c.frames, device=name,
            chipset=chipset, os=lat.host_os(), runtime=runtime,
            precision=args.dtype, compute_unit="GPU" if device.type == "cuda" else "CPU", status=c.status,
            source=f"measured here: scripts/benchmark.py ({c.mode}, {args.order} rounds)",
            peak_memory=peak, date=lat.now_iso(), command=command, notes="; ".join(notes), weights=c.weights,
            run_id=run_id, extra=_extra(c, args, stats, matmul_peak),
            runtime_version=version, **stats,
        ))
    lat.add_speedups(records)
    for c, rec in zip(cands, records, strict=True):
        if args.order == "paired" and c.baseline_ms and rec.median_ms:
            rec.baseline_stage = lat.BASELINE_STAGE
            rec.speedup_vs_baseline = statistics.median(c.baseline_ms) / float(rec.median_ms)
    return records


def _extra(c: Candidate, args: argparse.Namespace, stats: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """Warm-up count, machine, and the throughput: FLOPs per NFE, achieved TFLOP/s and its share of the matmul
    peak measured in the same run."""
    extra: dict[str, Any] = {"warmup": args.warmup, "machine": platform.machine()}
    if c.flops:
        extra["tflops_per_nfe"] = c.flops / 1e12
        if stats.get("median_ms"):
            achieved = c.flops / (stats["median_ms"] / 1e3) / 1e12
            extra["achieved_tflops_per_s"] = achieved
            if peak:
                extra["matmul_peak_tflops_per_s"] = peak
                extra["of_matmul_peak"] = achieved / peak
    if c.baseline_ms:
        extra["paired_baseline_ms"] = [round(t, 3) for t in c.baseline_ms]
    return extra


def format_table(records: list[lat.LatencyRecord], matmul_peak: float | None = None) -> str:
    """The run's table: ms (median, min, max), ratio to svd-512 and the paper's ratio, peak memory, achieved
    TFLOP/s and its share of the matmul peak; columns separated by two spaces so no two numbers run together."""
    base_gpu = registry.get_stage(lat.BASELINE_STAGE).paper.gpu_ms

    def num(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    head = ("stage", "runtime", "res", "median ms", "min ms", "max ms", "x svd-512", "paper x", "peak MB",
            "TFLOP/s", "of peak", "status")
    rows = [head]
    for r in records:
        paper = registry.get_stage(r.stage).paper.gpu_ms
        of_peak = r.extra.get("of_matmul_peak")
        rows.append((r.stage, r.runtime.replace("pytorch ", ""), r.resolution, num(r.median_ms), num(r.min_ms),
                     num(r.max_ms), num(r.speedup_vs_baseline, 2), num(base_gpu / paper if paper and base_gpu
                                                                       else None, 2),
                     num(r.peak_memory[0] if r.peak_memory else None, 0),
                     num(r.extra.get("achieved_tflops_per_s"), 3), "-" if of_peak is None else f"{of_peak:.0%}",
                     r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    foot = (f"({lat.INCLUDES}; 'x svd-512' = svd-512 median / stage median, measured in this run; 'paper x' uses "
            "the paper's GPU ms at full scale")
    if matmul_peak:
        foot += f"; matmul peak of this CPU in this run: {matmul_peak:.3f} TFLOP/s fp32"
    return "\n".join(lines) + "\n" + foot + ")"
