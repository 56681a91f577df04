"""Parsing what the backends report: AI Hub profiles, qnn-profile-viewer text, onnxruntime profiles, failures.

Why separate: each parser is tested on recorded sample outputs (tests/fixtures/) and needs no token, SDK or phone;
``--from-profile`` turns an already downloaded profile into a record with these alone.
"""

from __future__ import annotations

import re
from typing import Any

from explorer import latency as lat

# Signs of running out of memory in AI Hub failure messages and qnn-net-run logs.
OOM_PATTERNS: tuple[str, ...] = (
    "out of memory", "outofmemory", "oom", "mem_alloc", "insufficient memory", "enomem", "bad_alloc",
    "failed to allocate", "memory allocation failed", "not enough memory", "exceeds available memory",
)


def classify_failure(text: str) -> str:
    """'oom' when a failure message says the device ran out of memory, else 'failed'."""
    low = (text or "").lower()
    for pattern in OOM_PATTERNS:
        if pattern == "oom":
            if re.search(r"\boom\b", low):
                return "oom"
        elif pattern in low:
            return "oom"
    return "failed"


def parse_ai_hub_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """AI Hub's ``download_profile()`` dict (or its JSON file) -> record fields.

    Times are microseconds: ``execution_summary.all_inference_times`` (every profiled run) gives median/min/max;
    without it, ``estimated_inference_time`` is the one number. Peak memory is bytes:
    ``inference_memory_peak_range`` (low, high), else ``estimated_inference_peak_memory``. Layers per compute unit
    come from ``execution_detail[].compute_unit``.
    """
    summary = profile.get("execution_summary")
    if not isinstance(summary, dict) or "estimated_inference_time" not in summary:
        raise ValueError("not an AI Hub profile: no execution_summary.estimated_inference_time")
    est_us = summary["estimated_inference_time"]
    times = [t / 1000.0 for t in summary.get("all_inference_times") or [] if isinstance(t, (int, float)) and t > 0]
    out: dict[str, Any] = lat.summarize_ms(times) if times else {
        "median_ms": est_us / 1000.0, "min_ms": est_us / 1000.0, "max_ms": est_us / 1000.0, "runs": 1}
    out["estimated_ms"] = est_us / 1000.0
    peak = summary.get("inference_memory_peak_range")
    if isinstance(peak, (list, tuple)) and len(peak) == 2 and all(isinstance(v, (int, float)) for v in peak):
        out["peak_memory"] = [peak[0] / 2**20, peak[1] / 2**20]
    elif isinstance(summary.get("estimated_inference_peak_memory"), (int, float)):
        v = summary["estimated_inference_peak_memory"] / 2**20
        out["peak_memory"] = [v, v]
    else:
        out["peak_memory"] = None
    load = summary.get("first_load_time")
    out["first_load_ms"] = load / 1000.0 if isinstance(load, (int, float)) and load > 0 else None
    units: dict[str, int] = {}
    for layer in profile.get("execution_detail") or []:
        unit = str(layer.get("compute_unit", "UNKNOWN"))
        units[unit] = units.get(unit, 0) + 1
    out["compute_units"] = units or None
    out["compute_unit"] = "+".join(u for u in ("NPU", "GPU", "CPU") if units.get(u)) or "NPU"
    return out


_STATS_HEADER = re.compile(r"^\s*Execute Stats \((Average|Min|Max)\):\s*$")
_NETRUN = re.compile(r"^\s*NetRun:\s*([0-9.]+)\s*us\s*$")
_ACCEL = re.compile(r"^\s*Backend \(Accelerator \(execute\) time\):\s*([0-9.]+)\s*us\s*$")
_INIT = re.compile(r"^\s*Init Stats:")
_VERSION = re.compile(r"^\s*Backend\s+v(\S+)\s*$")


def parse_qnn_profile_viewer(text: str) -> dict[str, Any]:
    """qnn-profile-viewer's text output (of a ``qnn-net-run --profiling_level basic`` log) -> record fields.

    Reads the NetRun time of the "Execute Stats (Average)", "(Min)" and "(Max)" sections (microseconds) and the
    accelerator time; the viewer reports no median, so ``median_ms`` holds the average (the record notes it).
    """
    section: str | None = None
    in_init = False
    netrun: dict[str, float] = {}
    accel: dict[str, float] = {}
    init_us: float | None = None
    version: str | None = None
    for line in text.splitlines():
        m = _VERSION.match(line)
        if m and version is None:
            version = m.group(1)
            continue
        m = _STATS_HEADER.match(line)
        if m:
            section, in_init = m.group(1).lower(), False
            continue
        if _INIT.match(line):
            section, in_init = None, True
            continue
        if line.strip().endswith("Stats:") or line.strip().startswith("Execute Stats (Overall)"):
            section, in_init = None, False
            continue
        m = _NETRUN.match(line)
        if m:
            if section and section not in netrun:
                netrun[section] = float(m.group(1))
            elif in_init and init_us is None:
                init_us = float(m.group(1))
            continue
        m = _ACCEL.match(line)
        if m and section and section not in accel:
            accel[section] = float(m.group(1))
    if "average" not in netrun:
        raise ValueError("no 'Execute Stats (Average)' NetRun time in the qnn-profile-viewer output")
    avg = netrun["average"] / 1000.0
    return {
        "median_ms": avg,
        "mean_ms": avg,
        "min_ms": netrun.get("min", netrun["average"]) / 1000.0,
        "max_ms": netrun.get("max", netrun["average"]) / 1000.0,
        "accelerator_ms": {k: v / 1000.0 for k, v in accel.items()},
        "first_load_ms": init_us / 1000.0 if init_us else None,
        "backend_version": version,
    }


def parse_ort_profile(events: list[dict[str, Any]]) -> dict[str, Any]:
    """onnxruntime's profile (``SessionOptions.enable_profiling`` JSON, chrome-trace events; ``dur`` in us).

    ``model_run`` events give one time per run; ``*_kernel_time`` node events give time per op type (summed over
    runs, divided by the run count).
    """
    runs = [e["dur"] / 1000.0 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        raise ValueError("no model_run events in the onnxruntime profile")
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = str((e.get("args") or {}).get("op_name", "?"))
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1000.0
    out: dict[str, Any] = lat.summarize_ms(runs)
    peaks = [int(e["args"]["mem_in_use_peak"]) for e in events
             if str((e.get("args") or {}).get("mem_in_use_peak", "")).isdigit()]
    out["peak_memory"] = [max(peaks) / 2**20] * 2 if peaks else None  # ORT arena in use: activations
    out["ms_per_op_type"] = {k: round(v / len(runs), 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}
    return out
