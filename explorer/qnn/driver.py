"""Running the QNN runner's plan: prerequisites, the per-backend step lists, executing them, records.

Why a driver apart from the CLI: ``scripts/qnn_runner.py`` only parses flags and prints; tests call these
functions directly (for example several stages timed in interleaved onnxruntime rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from explorer import latency as lat
from explorer import stages as registry
from explorer.qnn import reference
from explorer.qnn.ai_hub import ai_hub_client, plan_qai_hub
from explorer.qnn.jobs import Job, MeasurementFailed, Step, export_step, make_inputs
from explorer.qnn.ort_cpu import ort_finish, ort_prepare, ort_time_once, plan_onnxruntime
from explorer.qnn.profiles import classify_failure, parse_ort_profile, parse_qnn_profile_viewer
from explorer.qnn.qnn_sdk import check_qnn_sdk, plan_qnn_sdk, run_shell
from explorer.qnn.records import package_version, record_from_state

PLANNERS: dict[str, Callable[[Job, argparse.Namespace, dict[str, Any]], list[Step]]] = {
    "qai-hub": plan_qai_hub, "qnn-sdk": plan_qnn_sdk, "onnxruntime": plan_onnxruntime,
}


def full_plan(backend: str, job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    return [export_step(job, args.checkpoints or None), *PLANNERS[backend](job, args, state)]


def plan_lines(backend: str, jobs: Sequence[Job], args: argparse.Namespace) -> list[str]:
    """--dry-run: the exact steps, per stage, with no token, SDK or phone needed (the lines to print)."""
    lines = [f"# dry run: backend {backend}, precision {args.precision}, scale {args.scale}; nothing is executed"]
    if backend == "qai-hub":
        lines.append(f"import qai_hub as hub   # client from ~/.qai_hub/client.ini or QAI_HUB_API_TOKEN "
                     f"(qai-hub {package_version('qai-hub') or 'not installed'})")
    for job in jobs:
        lines += ["", f"## {job.stage} ({job.scale}, {job.width}x{job.height} px, {job.frames} frames; "
                      f"{lat.INCLUDES}; work folder {job.work})"]
        for i, step in enumerate(full_plan(backend, job, args, {}), 1):
            lines.append(f"[{i}] {step.kind:<6} {step.text}")
    lines += ["", f"# records would be merged into {args.out_path}"]
    return lines


def resolve_stages(spec: str) -> list[str]:
    """Canonical slugs of ``--stage``: comma-separated slugs or aliases, or 'all'."""
    if spec.strip().lower() == "all":
        return list(registry.SLUGS)
    return [registry.resolve(s) for s in spec.split(",") if s.strip()]


def check_prerequisites(backend: str, args: argparse.Namespace) -> Any:
    """The AI Hub client (qai-hub) or None; :class:`Unavailable` when a token, SDK or phone is missing.

    Checked first: a missing token costs the user seconds, not an export."""
    client = ai_hub_client() if backend == "qai-hub" else None
    if backend == "qnn-sdk":
        check_qnn_sdk(args)
    return client


def new_run_id(backend: str) -> str:
    """The QNN runner's run id, named after its backend (``explorer.latency.new_run_id``)."""
    return lat.new_run_id(backend)


def measure(backend: str, jobs: Sequence[Job], args: argparse.Namespace, run_id: str, client: Any
            ) -> list[lat.LatencyRecord]:
    """Every job's record: several onnxruntime stages in interleaved rounds, otherwise one job after another."""
    if backend == "onnxruntime" and len(jobs) > 1:
        return execute_ort_interleaved(jobs, args, run_id)
    return [execute(backend, job, args, run_id, client) for job in jobs]


def execute(backend: str, job: Job, args: argparse.Namespace, run_id: str, client: Any) -> lat.LatencyRecord:
    state: dict[str, Any] = {"client": client}
    try:
        for step in full_plan(backend, job, args, state):
            print(f"[{backend}] {job.stage}: {step.text[:160]}", file=sys.stderr)
            if step.kind == "shell":
                run_shell(step)
            elif step.action is not None:
                result = step.action()
                if isinstance(result, dict) and "weights" in result:
                    state["weights"] = result["weights"]
        if job.given_onnx:
            state["weights"] = f"as in the given ONNX model {job.onnx_folder}"
        if backend == "qnn-sdk":
            q = job.work / "qnn"
            state["qnn_profile"] = parse_qnn_profile_viewer((q / "profile.txt").read_text())
            lines = (q / "device.txt").read_text().splitlines() if (q / "device.txt").exists() else []
            state["device_info"] = dict(zip(("model", "soc", "release"), [ln.strip() for ln in lines], strict=False))
            sdk = Path(os.environ.get("QNN_SDK_ROOT", ""))
            state["sdk_version"] = f"QNN SDK {sdk.name}" if sdk.name else None
        return record_from_state(backend, job, args, state, run_id)
    except MeasurementFailed as exc:
        return record_from_state(backend, job, args, state, run_id, exc.status, str(exc))


def execute_ort_interleaved(jobs: Sequence[Job], args: argparse.Namespace, run_id: str) -> list[lat.LatencyRecord]:
    """onnxruntime, several stages: export all, then timed rounds that run every stage once each (like
    scripts/benchmark.py), so a busy machine's drifts hit all stages alike and the ratios are measured together."""
    states: dict[str, dict[str, Any]] = {}
    failures: dict[str, tuple[str, str]] = {}
    for job in jobs:
        state: dict[str, Any] = {}
        states[job.stage] = state
        step = export_step(job, args.checkpoints or None)
        print(f"[onnxruntime] {job.stage}: {step.text[:160]}", file=sys.stderr)
        try:
            result = step.action() if step.action is not None else None
            state["weights"] = result["weights"] if isinstance(result, dict) else (
                f"as in the given ONNX model {job.onnx_folder}")
            ort_prepare(job, args, state, None)
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' numbers
            failures[job.stage] = (classify_failure(str(exc)), f"{type(exc).__name__}: {exc}")
            state.pop("session", None)
    print(f"[onnxruntime] {args.runs} interleaved rounds over {len(jobs) - len(failures)} stages", file=sys.stderr)
    for _ in range(args.runs):
        for job in jobs:
            if job.stage not in failures:
                ort_time_once(states[job.stage])
    records = []
    for job in jobs:
        state = states[job.stage]
        if job.stage in failures:
            records.append(record_from_state("onnxruntime", job, args, state, run_id, *failures[job.stage]))
            continue
        ort_finish(state, None)
        if args.compare if args.compare is not None else job.scale != "full":
            state["compare"] = reference.relative_error(state["ort_output"],
                                                        reference.torch_reference(job, args, make_inputs(job)))
        rec = record_from_state("onnxruntime", job, args, state, run_id)
        rec.notes = "; ".join(x for x in (rec.notes, "interleaved rounds over all stages of the run") if x)
        records.append(rec)
    return records


def record_from_profile(path: str, backend: str, job: Job, args: argparse.Namespace, run_id: str
                        ) -> lat.LatencyRecord:
    """--from-profile: a record from an existing profile file of ``backend``."""
    text = Path(path).read_text()
    state: dict[str, Any] = {"weights": args.weights_note or None}
    if backend == "qai-hub":
        state["profile"] = json.loads(text)
    elif backend == "qnn-sdk":
        state["qnn_profile"] = parse_qnn_profile_viewer(text)
    else:
        parsed = parse_ort_profile(json.loads(text))
        state["stats"] = {k: parsed[k] for k in ("median_ms", "min_ms", "max_ms", "runs")}
        state["ms_per_op_type"] = dict(list(parsed["ms_per_op_type"].items())[:12])
        state["peak_memory"] = parsed["peak_memory"]
    rec = record_from_state(backend, job, args, state, run_id)
    rec.notes = "; ".join(x for x in (rec.notes, f"parsed from {path}") if x)
    return rec
