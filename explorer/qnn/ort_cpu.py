"""Backend: onnxruntime on the host CPU (fp32): always available, same record format as the phone backends.

Why split into prepare / time once / finish: several stages are timed in interleaved rounds (one run of every
stage per round), so a busy machine's drifts hit all stages alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from explorer import latency as lat
from explorer.qnn import reference
from explorer.qnn.jobs import Job, Step, make_inputs, shapes_text
from explorer.qnn.profiles import parse_ort_profile


def plan_onnxruntime(job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    prof = job.work / "ort_profile"
    steps = [Step(
        "local", f"onnxruntime.InferenceSession({str(job.onnx_model)!r}, providers=['CPUExecutionProvider'], "
                  f"intra_op_num_threads={args.threads}{', enable_profiling=True' if args.ort_profile else ''}); "
                  f"{args.warmup} warm-up + {args.runs} timed session.run() on inputs {shapes_text(job.shapes)} "
                  "(perf_counter; with several stages, exported first and timed in interleaved rounds)",
        action=lambda: _ort_measure(job, args, state, str(prof) if args.ort_profile else None))]
    if args.compare if args.compare is not None else job.scale != "full":
        steps.append(Step("local", "compare the onnxruntime output with torch on the same inputs (relative error "
                                    "= max|ort - torch| / max|torch|)",
                          action=lambda: state.update(compare=reference.relative_error(
                              state["ort_output"], reference.torch_reference(job, args, make_inputs(job))))))
    return steps


def ort_prepare(job: Job, args: argparse.Namespace, state: dict[str, Any], profile_prefix: str | None) -> None:
    """Session, inputs and warm-up runs."""
    from explorer.export import ort_session

    if profile_prefix:
        Path(profile_prefix).parent.mkdir(parents=True, exist_ok=True)
    state["session"] = ort_session(job.onnx_model, args.threads, profile_prefix)
    state["feeds"] = make_inputs(job)
    state["times"] = []
    for _ in range(args.warmup):
        state["session"].run(None, state["feeds"])


def ort_time_once(state: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    out = state["session"].run(None, state["feeds"])
    state["times"].append((time.perf_counter() - t0) * 1000.0)
    state["ort_output"] = out[0]


def _ort_measure(job: Job, args: argparse.Namespace, state: dict[str, Any], profile_prefix: str | None) -> None:
    ort_prepare(job, args, state, profile_prefix)
    for _ in range(args.runs):
        ort_time_once(state)
    ort_finish(state, profile_prefix)


def ort_finish(state: dict[str, Any], profile_prefix: str | None) -> None:
    session = state.pop("session")
    state["stats"] = lat.summarize_ms(state.pop("times"))
    if profile_prefix:
        path = session.end_profiling()
        parsed = parse_ort_profile(json.loads(Path(path).read_text()))
        state["ms_per_op_type"] = dict(list(parsed["ms_per_op_type"].items())[:12])
        state["peak_memory"] = parsed["peak_memory"]
        state["ort_profile"] = path
