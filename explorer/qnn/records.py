"""Latency records from what a QNN runner backend measured (or how it failed), in ``explorer.latency``'s schema.

Why here and not in each backend: one place decides the device, runtime, precision and source columns of every
backend, so records of the phone and of the CPU read alike in the app's Latency tab.
"""

from __future__ import annotations

import argparse
from typing import Any

from explorer import latency as lat
from explorer.qnn.ai_hub import KNOWN_CHIPSETS, compile_options, device_spec
from explorer.qnn.jobs import Job
from explorer.qnn.profiles import parse_ai_hub_profile


def base_record(job: Job, args: argparse.Namespace, run_id: str, weights: str | None) -> dict[str, Any]:
    return dict(stage=job.stage, scale=job.scale, resolution=f"{job.width}x{job.height}", frames=job.frames,
                date=lat.now_iso(), command=args.command, run_id=run_id, weights=weights)


def record_from_state(backend: str, job: Job, args: argparse.Namespace, state: dict[str, Any], run_id: str,
                      status: str = "passed", error: str = "") -> lat.LatencyRecord:
    """Turn what a backend measured (or how it failed) into a record."""
    weights = state.get("weights")
    notes: list[str] = []
    fields_: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if backend == "qai-hub":
        import_version = package_version("qai-hub")
        device = state.get("device_name") or (args.device if not args.chipset else device_spec(args)[1])
        fields_.update(device=device, chipset=state.get("chipset") or KNOWN_CHIPSETS.get(device),
                       os=f"Android {state['device_os']}" if state.get("device_os") else "Android",
                       runtime="qnn_context_binary (Qualcomm AI Hub)",
                       runtime_version=f"qai-hub {import_version}" if import_version else None,
                       precision=args.precision, compute_unit="NPU",
                       source="measured here: Qualcomm AI Hub profile job (scripts/qnn_runner.py --backend qai-hub)")
        if "profile" in state:
            parsed = parse_ai_hub_profile(state["profile"])
            fields_.update({k: parsed[k] for k in ("median_ms", "min_ms", "max_ms", "runs", "peak_memory",
                                                   "first_load_ms", "compute_units", "compute_unit")})
            extra["ai_hub_estimated_ms"] = parsed["estimated_ms"]
        extra["jobs"] = state.get("urls")
        notes.append(f"compile options: {compile_options(args.precision, args.compile_options)}")
        if args.precision == "w8a16":
            notes.append(f"calibration: {args.calibration or f'{args.calibration_samples} random input sets'}")
    elif backend == "qnn-sdk":
        info = state.get("device_info") or {}
        fields_.update(device=info.get("model") or "Android phone over adb",
                       chipset=info.get("soc") or None, os=f"Android {info['release']}" if info.get("release")
                       else "Android", runtime="QNN HTP (qnn-net-run, context binary)",
                       runtime_version=(f"QNN {state['qnn_profile']['backend_version']}" if state.get(
                           "qnn_profile", {}).get("backend_version") else state.get("sdk_version")),
                       precision=args.precision, compute_unit="NPU",
                       source="measured here: qnn-net-run --profiling_level basic on the phone "
                              "(scripts/qnn_runner.py --backend qnn-sdk)")
        if "qnn_profile" in state:
            parsed = state["qnn_profile"]
            fields_.update(median_ms=parsed["median_ms"], min_ms=parsed["min_ms"], max_ms=parsed["max_ms"],
                           runs=args.warmup + args.runs, first_load_ms=parsed["first_load_ms"])
            extra["accelerator_ms"] = parsed["accelerator_ms"]
            notes.append("median_ms holds qnn-profile-viewer's average (it reports no median); average over "
                         f"{args.warmup + args.runs} inferences incl. {args.warmup} warm-up")
        notes.append(f"HTP {args.htp_arch}, soc_model {args.soc_model}")
    else:
        import onnxruntime as ort

        fields_.update(device=f"{lat.cpu_name()} ({args.threads} thread{'s' if args.threads != 1 else ''})",
                       os=lat.host_os(), runtime="onnxruntime (CPUExecutionProvider)",
                       runtime_version=f"onnxruntime {ort.__version__}", precision="fp32", compute_unit="CPU",
                       source="measured here: onnxruntime on the host CPU (scripts/qnn_runner.py --backend "
                              "onnxruntime)")
        fields_.update(state.get("stats") or {})
        if state.get("peak_memory"):
            fields_["peak_memory"] = state["peak_memory"]
            notes.append("peak memory = onnxruntime arena bytes in use (activations), from its profile")
        if state.get("ms_per_op_type"):
            extra["ms_per_op_type"] = state["ms_per_op_type"]
    if state.get("compare"):
        extra["vs_torch"] = state["compare"]
        if "rel_error" in state["compare"]:
            notes.append(f"relative error vs torch {state['compare']['rel_error']:.2e}")
    if error:
        notes.append(error[:500])
    if status == "passed" and fields_.get("median_ms") is None:
        status = "failed"
    return lat.LatencyRecord(status=status, notes="; ".join(notes), extra=extra,
                             **base_record(job, args, run_id, weights), **fields_)


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
