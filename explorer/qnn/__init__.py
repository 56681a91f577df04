"""Measuring a stage's UNet (one NFE, batch 1) on a phone NPU or the host CPU: the library behind
``scripts/qnn_runner.py``.

Every backend starts from the same artefact (``explorer.export``'s ONNX model of the stage's UNet) and ends in the
same record schema (``explorer.latency``):

- ``jobs``: what is measured (:class:`Job`), the steps a backend runs (:class:`Step`) and the inputs it feeds;
- ``ai_hub``, ``qnn_sdk``, ``ort_cpu``: the three backends (Qualcomm AI Hub, the local QNN SDK + a phone over adb,
  onnxruntime on this CPU), each a plan of steps that ``--dry-run`` prints and a real run executes;
- ``profiles``: parsers of what the backends report, and failure classification (oom / failed);
- ``reference``: ``--compare``'s torch side;
- ``records``: latency records from what a backend measured;
- ``driver``: prerequisites, plans, execution (interleaved onnxruntime rounds for several stages).
"""

from __future__ import annotations

from explorer.qnn.driver import (
    check_prerequisites,
    execute,
    execute_ort_interleaved,
    full_plan,
    measure,
    new_run_id,
    plan_lines,
    record_from_profile,
    resolve_stages,
)
from explorer.qnn.jobs import (
    BACKENDS,
    DEFAULT_DEVICE,
    NPU_PRECISIONS,
    Job,
    MeasurementFailed,
    Step,
    Unavailable,
    make_inputs,
    make_job,
)
from explorer.qnn.profiles import classify_failure, parse_ai_hub_profile, parse_ort_profile, parse_qnn_profile_viewer

__all__ = [
    "BACKENDS", "DEFAULT_DEVICE", "NPU_PRECISIONS", "Job", "MeasurementFailed", "Step", "Unavailable",
    "check_prerequisites", "classify_failure", "execute", "execute_ort_interleaved", "full_plan", "make_inputs",
    "make_job", "measure", "new_run_id", "parse_ai_hub_profile", "parse_ort_profile", "parse_qnn_profile_viewer",
    "plan_lines", "record_from_profile", "resolve_stages",
]
