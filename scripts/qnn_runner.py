"""Measure a stage's UNet (one NFE, batch 1) on a phone NPU or the host CPU, in one command; writes latency records.

    python scripts/qnn_runner.py --stage mobilevd --backend qai-hub                 # AI Hub, Snapdragon 8 Gen 3 phone
    python scripts/qnn_runner.py --stage mobilevd --backend qnn-sdk                 # QNN SDK + your phone over adb
    python scripts/qnn_runner.py --stage mobilevd --scale tiny --backend onnxruntime  # this CPU, always available
    python scripts/qnn_runner.py --stage mobilevd --backend qai-hub --dry-run       # print what would be submitted

Every backend starts from the same artefact, ``explorer.export``'s ONNX model of the stage's UNet (static shapes,
real weights from ``checkpoints/<stage>`` when present, random otherwise) and ends in the same record schema
(``explorer.latency``):

- ``qai-hub`` (Qualcomm AI Hub; needs your API token: ``pip install qai-hub && qai-hub configure --api_token ...``
  or ``QAI_HUB_API_TOKEN``): compile job to a QNN context binary (``--target_runtime qnn_context_binary``;
  w8a16 = ``--quantize_full_type w8a16 --quantize_io`` with calibration data, as Qualcomm's published diffusion
  models; fp16 = ``--quantize_full_type float16``), profile job on the device (default "Samsung Galaxy S24
  (Family)", Snapdragon 8 Gen 3 like the paper's Xiaomi 14 Pro), profile read back (microseconds -> ms, peak
  memory range, layers per compute unit); ``--compare`` also runs an inference job and compares with torch.
- ``qnn-sdk`` (Qualcomm AI Engine Direct SDK at ``$QNN_SDK_ROOT`` + a phone over ``adb``): qnn-onnx-converter,
  qnn-model-lib-generator, qnn-context-binary-generator (HTP, v75 / SM8650 by default), push, ``qnn-net-run
  --profiling_level basic``, pull, qnn-profile-viewer, parse.
- ``onnxruntime``: the host CPU (fp32), same record format; for non-full scales the output is checked against torch.

``--dry-run`` prints exactly what each backend would run or submit, needing no token, SDK or phone. ``--from-profile
FILE`` turns an already downloaded profile (AI Hub profile JSON, qnn-profile-viewer output, onnxruntime profile
JSON) into a record. Exit codes: 0 = measured, 1 = the measurement failed or ran out of memory (the record says
so), 2 = a prerequisite is missing (token, SDK, phone), with a message instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import latency as lat  # noqa: E402
from explorer import stages as registry  # noqa: E402

BACKENDS: tuple[str, ...] = ("qai-hub", "qnn-sdk", "onnxruntime")
DEFAULT_DEVICE = "Samsung Galaxy S24 (Family)"
# Chipsets of AI Hub device names the runner knows (the record's chipset column); others come from the device.
KNOWN_CHIPSETS: dict[str, str] = {
    "Samsung Galaxy S24 (Family)": "Snapdragon 8 Gen 3",
    "Samsung Galaxy S24": "Snapdragon 8 Gen 3",
    "Samsung Galaxy S24 Ultra": "Snapdragon 8 Gen 3",
    "Snapdragon 8 Gen 3 QRD": "Snapdragon 8 Gen 3",
    "Samsung Galaxy S23 (Family)": "Snapdragon 8 Gen 2",
    "Samsung Galaxy S25 (Family)": "Snapdragon 8 Elite",
}
CHIPSET_ATTRIBUTE_NAMES: dict[str, str] = {
    "qualcomm-snapdragon-8gen3": "Snapdragon 8 Gen 3",
    "qualcomm-snapdragon-8gen2": "Snapdragon 8 Gen 2",
    "qualcomm-snapdragon-8-elite": "Snapdragon 8 Elite",
}
COMPILE_PRECISION_OPTIONS: dict[str, str] = {
    "w8a16": "--quantize_full_type w8a16 --quantize_io",
    "fp16": "--quantize_full_type float16",
}
NPU_PRECISIONS: tuple[str, ...] = ("w8a16", "fp16")
DEVICE_DIR = "/data/local/tmp/mobilevd"
# Signs of running out of memory in AI Hub failure messages and qnn-net-run logs.
OOM_PATTERNS: tuple[str, ...] = (
    "out of memory", "outofmemory", "oom", "mem_alloc", "insufficient memory", "enomem", "bad_alloc",
    "failed to allocate", "memory allocation failed", "not enough memory", "exceeds available memory",
)
TOKEN_HELP = """Qualcomm AI Hub needs your API token, and none is configured on this machine.
  1. Sign in at https://aihub.qualcomm.com and copy the API token from Settings.
  2. pip install qai-hub && qai-hub configure --api_token YOUR_TOKEN
     (or: export QAI_HUB_API_TOKEN=YOUR_TOKEN)
  3. Run this command again.
See what would be submitted, without a token:  python scripts/qnn_runner.py ... --backend qai-hub --dry-run"""


class Unavailable(Exception):
    """A prerequisite (token, SDK, phone, package) is missing: a message for the user, exit code 2."""


# ----------------------------------------------------------------------------------------------------------
# What is measured


@dataclass
class Job:
    """One stage to measure: sizes, shapes and where its files go."""

    stage: str
    scale: str
    width: int
    height: int
    frames: int
    shapes: dict[str, tuple[int, ...]]
    work: Path  # outputs/qnn/<stage>-<scale>/
    onnx_folder: Path  # <work>/<stage>-<scale>.onnx (AI Hub uploads this folder)
    given_onnx: bool = False

    @property
    def onnx_model(self) -> Path:
        """The model file inside the export folder (or the given single .onnx file)."""
        if self.given_onnx and self.onnx_folder.is_file():
            return self.onnx_folder
        return self.onnx_folder / "model.onnx"

    @property
    def name(self) -> str:
        return f"mobilevd-explorer {self.stage} {self.scale} {self.width}x{self.height}x{self.frames}"


@dataclass
class Step:
    """One thing a backend does: printed verbatim by --dry-run, executed by a real run."""

    kind: str  # "local" (Python on this machine), "shell" (argv), "submit" (AI Hub API call)
    text: str
    argv: list[str] | None = None
    action: Callable[[], Any] | None = field(default=None, repr=False)
    capture: Path | None = None  # shell: write stdout here


def make_job(slug: str, scale: str, work_root: Path, onnx: str | None, size: tuple[int, int] | None,
             frames: int | None) -> Job:
    from explorer.export import input_shapes
    from explorer.models import unet_config

    stage = registry.get_stage(slug)
    width, height = size or stage.size("full" if scale == "full" else "tiny")
    frames = frames or stage.frames
    cfg = unet_config(scale)
    shapes = input_shapes(cfg, scale, width, height, frames)
    work = work_root / f"{stage.slug}-{scale}"
    folder = Path(onnx) if onnx else work / f"{stage.slug}-{scale}.onnx"
    return Job(stage.slug, scale, width, height, frames, shapes, work, folder, given_onnx=bool(onnx))


def _shapes_text(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k}={tuple(v)}" for k, v in shapes.items())


def export_step(job: Job, checkpoints: str | None) -> Step:
    ckpt = checkpoints or "''"
    text = (f"python -m explorer.export --stage {job.stage} --scale {job.scale} --out {job.onnx_folder.parent} "
            f"--checkpoints {ckpt} --no-check   # -> {job.onnx_folder}/ "
            f"(model.onnx + model.data; inputs {_shapes_text(job.shapes)})")
    if job.given_onnx:
        return Step("local", f"use the given ONNX model {job.onnx_folder} (no export)")

    def run() -> dict[str, Any]:
        from explorer.export import export_stage

        summary = export_stage(job.stage, job.scale, job.onnx_folder.parent, checkpoints, width=job.width,
                               height=job.height, frames=job.frames, check=False)
        return summary

    return Step("local", text, action=run)


# ----------------------------------------------------------------------------------------------------------
# Parsing what the backends report (tested on recorded sample outputs in tests/fixtures/)


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


# ----------------------------------------------------------------------------------------------------------
# Inputs / calibration data


def make_inputs(job: Job, seed: int = 0) -> dict[str, Any]:
    """Deterministic example inputs in the export's order and shapes (numpy float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, shape in job.shapes.items():
        if name == "timestep":
            out[name] = np.full(shape, 1.638, dtype=np.float32)  # c_noise = 0.25 ln 700: the one-step evaluation
        elif name == "added_time_ids":
            out[name] = np.tile(np.array([[6.0, 127.0, 0.02]], dtype=np.float32), (shape[0], 1))
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def calibration_data(job: Job, samples: int, path: str | None) -> dict[str, list[Any]]:
    """AI Hub calibration entries ``{input: [array, ...]}``: from an .npz (arrays stacked on axis 0) or random.

    Random calibration is fine for latency; for accuracy pass real UNet inputs (``--calibration FILE.npz``).
    """
    import numpy as np

    if path:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in job.shapes if n not in data]
            if missing:
                raise Unavailable(f"calibration file {path} lacks inputs {missing}; it needs {list(job.shapes)}")
            return {n: [data[n][i].reshape(job.shapes[n]).astype(np.float32) for i in range(len(data[n]))]
                    for n in job.shapes}
    entries: dict[str, list[Any]] = {n: [] for n in job.shapes}
    for i in range(samples):
        for n, arr in make_inputs(job, seed=1000 + i).items():
            entries[n].append(arr)
    return entries


def write_raw_inputs(job: Job, folder: Path, lines: int, samples: int = 1, calib: str | None = None,
                     absolute: bool = False) -> Path:
    """Float32 .raw files + a qnn-net-run input list (``name:=path`` per input, one line per inference).

    Paths are relative to the folder's parent (the phone's working folder) or ``absolute`` (host-side
    calibration lists for qnn-onnx-converter).
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = calibration_data(job, samples, calib)
    rows = []
    for i in range(len(next(iter(entries.values())))):
        parts = []
        for name, arrays in entries.items():
            file = folder / f"{name}_{i}.raw"
            arrays[i].astype("float32").tofile(file)
            parts.append(f"{name}:={file.resolve() if absolute else f'{folder.name}/{file.name}'}")
        rows.append(" ".join(parts))
    listing = folder / "input_list.txt"
    listing.write_text("\n".join(rows[i % len(rows)] for i in range(lines)) + "\n")
    return listing


# ----------------------------------------------------------------------------------------------------------
# Backend: Qualcomm AI Hub


def ai_hub_client() -> Any:
    """An AI Hub client, or :class:`Unavailable` with the token instructions (checked before any work)."""
    try:
        import qai_hub as hub
    except ImportError as exc:
        raise Unavailable("the qai-hub package is not installed: pip install qai-hub\n\n" + TOKEN_HELP) from exc
    token = os.environ.get("QAI_HUB_API_TOKEN", "").strip()
    if token:
        return hub.Client(config=hub.ClientConfig(api_token=token))
    ini = Path(os.path.expanduser(os.environ.get("QAIHUB_CLIENT_INI", "~/.qai_hub/client.ini")))
    if not ini.is_file() or "api_token" not in ini.read_text(errors="ignore"):
        raise Unavailable(TOKEN_HELP)
    return hub.Client()


def device_spec(args: argparse.Namespace) -> tuple[str, str]:
    """(python expression, human label) of the AI Hub device: a name, or a chipset attribute."""
    if args.chipset:
        attr = args.chipset if args.chipset.startswith("chipset:") else f"chipset:{args.chipset}"
        return f"hub.Device(attributes={attr!r})", attr
    return f"hub.Device({args.device!r})", args.device


def compile_options(precision: str, extra: str = "") -> str:
    return " ".join(x for x in ("--target_runtime qnn_context_binary", COMPILE_PRECISION_OPTIONS[precision], extra)
                    if x)


def profile_call() -> str:
    """AI Hub's profiling entry point: ``submit_inference_job(..., profile=True)`` from qai-hub 0.56 on (where
    ``submit_profile_job`` is deprecated), ``submit_profile_job`` before (and when qai-hub is not installed)."""
    try:
        import inspect

        import qai_hub as hub

        if "profile" in inspect.signature(hub.submit_inference_job).parameters:
            return "submit_inference_job"
    except Exception:  # noqa: BLE001 - not installed or an unexpected version: the long-standing call
        pass
    return "submit_profile_job"


def plan_qai_hub(job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    dev_expr, _ = device_spec(args)
    options = compile_options(args.precision, args.compile_options)
    calib, origin = "", ""
    if args.precision == "w8a16":
        origin = f"from {args.calibration}" if args.calibration else "random"
        entries = ", ".join(f"{n!r}: [{args.calibration_samples} x float32 {tuple(s)}]" for n, s in job.shapes.items())
        calib = f", calibration_data={{{entries}}}"
    profile_opts = f"--max_profiler_iterations {args.runs}"
    steps = [
        Step("submit", f"compile_job = hub.submit_compile_job(model={str(job.onnx_folder)!r}, device={dev_expr}, "
                       f"name={job.name!r}, options={options!r}{calib})"
                       + (f"   # calibration data: {origin}" if calib else ""),
             action=lambda: _hub_compile(job, args, state, options)),
        Step("submit", "target_model = compile_job.get_target_model()   # waits for the compile job",
             action=lambda: _hub_target(state)),
        Step("submit", f"profile_job = hub.{profile_call()}(model=target_model, device={dev_expr}, "
                       f"name={job.name!r}, options={profile_opts!r}"
                       f"{', profile=True' if profile_call() == 'submit_inference_job' else ''})",
             action=lambda: _hub_profile(job, args, state, profile_opts)),
        Step("submit", f"profile = profile_job.download_profile()   # -> {job.work / 'ai_hub_profile.json'}",
             action=lambda: _hub_download(job, state)),
    ]
    if args.compare:
        steps.append(Step(
            "submit", f"inference_job = hub.submit_inference_job(model=target_model, device={dev_expr}, "
                      f"inputs={{{', '.join(f'{n!r}: [1 x float32 {tuple(s)}]' for n, s in job.shapes.items())}}}); "
                      "outputs = inference_job.download_output_data()   # compared with torch",
            action=lambda: _hub_compare(job, args, state)))
    return steps


def _hub_compile(job: Job, args: argparse.Namespace, state: dict[str, Any], options: str) -> None:
    import qai_hub as hub

    client = state["client"]
    device = hub.Device(attributes=device_spec(args)[1]) if args.chipset else hub.Device(args.device)
    state["device"] = device
    kwargs: dict[str, Any] = {}
    if args.precision == "w8a16":
        kwargs["calibration_data"] = calibration_data(job, args.calibration_samples, args.calibration)
    state["compile_job"] = client.submit_compile_job(model=str(job.onnx_folder), device=device, name=job.name,
                                                     options=options, **kwargs)


def _job_failure(job_obj: Any) -> tuple[str, str]:
    status = job_obj.get_status()
    message = getattr(status, "message", "") or str(status)
    return classify_failure(message), message


def _hub_target(state: dict[str, Any]) -> None:
    target = state["compile_job"].get_target_model()
    if target is None:
        status, message = _job_failure(state["compile_job"])
        raise MeasurementFailed(status, f"AI Hub compile job failed: {message} ({state['compile_job'].url})")
    state["target"] = target


def _hub_profile(job: Job, args: argparse.Namespace, state: dict[str, Any], options: str) -> None:
    client = state["client"]
    if profile_call() == "submit_inference_job":
        state["profile_job"] = client.submit_inference_job(model=state["target"], device=state["device"],
                                                           name=job.name, options=options, profile=True)
    else:
        state["profile_job"] = client.submit_profile_job(model=state["target"], device=state["device"],
                                                         name=job.name, options=options)


def _hub_download(job: Job, state: dict[str, Any]) -> None:
    profile_job = state["profile_job"]
    profile = profile_job.download_profile()
    if not profile:
        status, message = _job_failure(profile_job)
        raise MeasurementFailed(status, f"AI Hub profile job failed: {message} ({profile_job.url})")
    job.work.mkdir(parents=True, exist_ok=True)
    (job.work / "ai_hub_profile.json").write_text(json.dumps(profile, indent=1, default=list))
    state["profile"] = json.loads(json.dumps(profile, default=list))
    dev = getattr(profile_job, "device", None)
    if dev is not None:
        state["device_name"] = getattr(dev, "name", None)
        state["device_os"] = getattr(dev, "os", None)
        attrs = list(getattr(dev, "attributes", []) or [])
        chip = next((a.split(":", 1)[1] for a in attrs if a.startswith("chipset:") and "-" in a), None)
        state["chipset"] = CHIPSET_ATTRIBUTE_NAMES.get(chip or "", chip)
    state["urls"] = {"compile": state["compile_job"].url, "profile": profile_job.url}


def _hub_compare(job: Job, args: argparse.Namespace, state: dict[str, Any]) -> None:
    import numpy as np

    inputs = make_inputs(job)
    inf = state["client"].submit_inference_job(model=state["target"], device=state["device"], name=job.name,
                                               inputs={k: [v] for k, v in inputs.items()})
    outputs = inf.download_output_data()
    if not outputs:
        state["compare"] = {"error": f"inference job failed: {_job_failure(inf)[1]}"}
        return
    got = np.asarray(next(iter(outputs.values()))[0], dtype=np.float64)
    ref = torch_reference(job, args, inputs)
    got = got.reshape(ref.shape) if got.size == ref.size else got
    state["compare"] = relative_error(got, ref)


class MeasurementFailed(Exception):
    """A backend ran but the model failed (status 'failed' or 'oom' in the record, exit code 1)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def torch_reference(job: Job, args: argparse.Namespace, inputs: dict[str, Any]) -> Any:
    """The torch output of the same UNet on the same inputs (for --compare)."""
    import torch

    from explorer.export import INPUT_NAMES, UNetForExport, load_stage_unet

    loaded = load_stage_unet(job.stage, job.scale, args.checkpoints or None)
    with torch.no_grad():
        out = UNetForExport(loaded.unet)(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))
    return out.double().numpy()


def relative_error(got: Any, ref: Any) -> dict[str, float]:
    import numpy as np

    diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    scale = float(np.abs(ref).max()) or 1.0
    return {"rel_error": float(diff.max() / scale), "mean_abs_error": float(diff.mean())}


# ----------------------------------------------------------------------------------------------------------
# Backend: local QNN SDK + phone over adb


def htp_configs(job: Job, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The HTP backend-extension config for qnn-context-binary-generator (SoC, arch, fp16 relaxed precision)."""
    graph: dict[str, Any] = {"graph_names": ["unet"], "vtcm_mb": 0, "O": 3}
    if args.precision == "fp16":
        graph["fp16_relaxed_precision"] = 1
    htp = {"graphs": [graph], "devices": [{"soc_model": args.soc_model, "dsp_arch": args.htp_arch}]}
    ext = {"backend_extensions": {"shared_library_path": "libQnnHtpNetRunExtensions.so",
                                  "config_file_path": str(job.work / "qnn" / "htp_config.json")}}
    return {"htp_config.json": htp, "htp_backend_extensions.json": ext}


def plan_qnn_sdk(job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    sdk = os.environ.get("QNN_SDK_ROOT", "$QNN_SDK_ROOT")
    host_bin = f"{sdk}/bin/x86_64-linux-clang"
    q = job.work / "qnn"
    arch = args.htp_arch  # e.g. v75 (Snapdragon 8 Gen 3)
    dev = f"{DEVICE_DIR}/{job.stage}-{job.scale}"
    adb = ["adb", *(["-s", args.serial] if args.serial else [])]
    convert = [f"{host_bin}/qnn-onnx-converter", "--input_network", str(job.onnx_model),
               "--output_path", str(q / "unet.cpp")]
    if args.precision == "w8a16":
        convert += ["--input_list", str(q / "calib" / "input_list.txt"), "--act_bitwidth", "16",
                    "--weights_bitwidth", "8", "--bias_bitwidth", "32", "--use_per_channel_quantization"]
    else:
        convert += ["--float_bitwidth", "16"]
    configs = htp_configs(job, args)

    def write_configs() -> None:
        q.mkdir(parents=True, exist_ok=True)
        for name, content in configs.items():
            (q / name).write_text(json.dumps(content, indent=1))

    run_cmd = (f"cd {dev} && export LD_LIBRARY_PATH={dev} ADSP_LIBRARY_PATH={dev} && ./qnn-net-run "
               f"--backend libQnnHtp.so --retrieve_context unet_ctx.bin --input_list inputs/input_list.txt "
               f"--profiling_level basic --perf_profile burst --output_dir output")
    steps = []
    if args.precision == "w8a16":
        steps.append(Step("local", f"write {args.calibration_samples} calibration input sets (float32 .raw) and "
                                    f"{q / 'calib' / 'input_list.txt'}",
                          action=lambda: write_raw_inputs(job, q / "calib", args.calibration_samples,
                                                          args.calibration_samples, args.calibration,
                                                          absolute=True)))
    steps += [
        Step("shell", "", argv=convert),
        Step("shell", "", argv=[f"{host_bin}/qnn-model-lib-generator", "-c", str(q / "unet.cpp"), "-b",
                                str(q / "unet.bin"), "-t", "x86_64-linux-clang", "-o", str(q / "lib")]),
        Step("local", f"write {q / 'htp_config.json'} = {json.dumps(configs['htp_config.json'])} and "
                       f"{q / 'htp_backend_extensions.json'}", action=write_configs),
        Step("shell", "", argv=[f"{host_bin}/qnn-context-binary-generator", "--backend",
                                f"{sdk}/lib/x86_64-linux-clang/libQnnHtp.so", "--model",
                                str(q / "lib" / "x86_64-linux-clang" / "libunet.so"), "--binary_file", "unet_ctx",
                                "--output_dir", str(q / "ctx"), "--config_file",
                                str(q / "htp_backend_extensions.json")]),
        Step("local", f"write one input set (float32 .raw) and {q / 'inputs' / 'input_list.txt'} with "
                       f"{args.warmup + args.runs} lines ({args.warmup} warm-up + {args.runs} timed inferences)",
             action=lambda: write_raw_inputs(job, q / "inputs", args.warmup + args.runs)),
        Step("shell", "", argv=[*adb, "shell", f"rm -rf {dev} && mkdir -p {dev}"]),
        Step("shell", "", argv=[*adb, "push", f"{sdk}/bin/aarch64-android/qnn-net-run", f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", f"{sdk}/lib/aarch64-android/libQnnHtp.so", f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", f"{sdk}/lib/aarch64-android/libQnnHtp{arch.upper()}Stub.so",
                                f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", f"{sdk}/lib/aarch64-android/libQnnHtpNetRunExtensions.so",
                                f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", f"{sdk}/lib/hexagon-{arch}/unsigned/libQnnHtp{arch.upper()}Skel.so",
                                f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", str(q / "ctx" / "unet_ctx.bin"), f"{dev}/"]),
        Step("shell", "", argv=[*adb, "push", str(q / "inputs"), f"{dev}/inputs"]),
        Step("shell", "", argv=[*adb, "shell", run_cmd], capture=q / "qnn-net-run.log"),
        Step("shell", "", argv=[*adb, "pull", f"{dev}/output/qnn-profiling-data_0.log", str(q) + "/"]),
        Step("shell", "", argv=[f"{host_bin}/qnn-profile-viewer", "--input_log",
                                str(q / "qnn-profiling-data_0.log")], capture=q / "profile.txt"),
        Step("shell", "", argv=[*adb, "shell", "getprop ro.product.model; getprop ro.soc.model; "
                                               "getprop ro.build.version.release"], capture=q / "device.txt"),
    ]
    for s in steps:
        if s.kind == "shell" and not s.text:
            s.text = shell_text(s.argv or []) + (f"   > {s.capture}" if s.capture else "")
    return steps


def check_qnn_sdk(args: argparse.Namespace) -> None:
    """Raise :class:`Unavailable` unless the SDK and one phone are there (checked before any work)."""
    root = os.environ.get("QNN_SDK_ROOT")
    if not root or not Path(root, "bin", "x86_64-linux-clang", "qnn-onnx-converter").exists():
        raise Unavailable(
            "the qnn-sdk backend needs the Qualcomm AI Engine Direct (QNN / QAIRT) SDK: set QNN_SDK_ROOT to its "
            f"folder (now: {root or 'unset'}) and source $QNN_SDK_ROOT/bin/envsetup.sh.\n"
            "See what would run:  python scripts/qnn_runner.py ... --backend qnn-sdk --dry-run")
    if shutil.which("adb") is None:
        raise Unavailable("the qnn-sdk backend needs adb on PATH and a phone with USB debugging enabled")
    out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout
    phones = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]
    if not phones or (args.serial and args.serial not in phones):
        raise Unavailable(f"no phone found by 'adb devices' (wanted {args.serial or 'any'}); connect one with "
                          "USB debugging on")


def shell_text(argv: Sequence[str]) -> str:
    """argv as a copy-pasteable shell line; an unexpanded $QNN_SDK_ROOT stays expandable (double quotes)."""
    return " ".join(f'"{a}"' if a.startswith("$QNN_SDK_ROOT") else shlex.quote(a) for a in argv)


def run_shell(step: Step) -> str:
    proc = subprocess.run(step.argv or [], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if step.capture is not None:
        step.capture.parent.mkdir(parents=True, exist_ok=True)
        step.capture.write_text(proc.stdout)
    if proc.returncode != 0:
        raise MeasurementFailed(classify_failure(text), f"command failed ({proc.returncode}): {step.text}\n"
                                                        f"{text[-2000:]}")
    return text


# ----------------------------------------------------------------------------------------------------------
# Backend: onnxruntime on the host CPU


def plan_onnxruntime(job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    prof = job.work / "ort_profile"
    steps = [Step(
        "local", f"onnxruntime.InferenceSession({str(job.onnx_model)!r}, providers=['CPUExecutionProvider'], "
                  f"intra_op_num_threads={args.threads}{', enable_profiling=True' if args.ort_profile else ''}); "
                  f"{args.warmup} warm-up + {args.runs} timed session.run() on inputs {_shapes_text(job.shapes)} "
                  "(perf_counter; with several stages, exported first and timed in interleaved rounds)",
        action=lambda: _ort_measure(job, args, state, str(prof) if args.ort_profile else None))]
    if args.compare if args.compare is not None else job.scale != "full":
        steps.append(Step("local", "compare the onnxruntime output with torch on the same inputs (relative error "
                                    "= max|ort - torch| / max|torch|)",
                          action=lambda: state.update(compare=relative_error(
                              state["ort_output"], torch_reference(job, args, make_inputs(job))))))
    return steps


def _ort_prepare(job: Job, args: argparse.Namespace, state: dict[str, Any], profile_prefix: str | None) -> None:
    """Session, inputs and warm-up runs."""
    from explorer.export import ort_session

    if profile_prefix:
        Path(profile_prefix).parent.mkdir(parents=True, exist_ok=True)
    state["session"] = ort_session(job.onnx_model, args.threads, profile_prefix)
    state["feeds"] = make_inputs(job)
    state["times"] = []
    for _ in range(args.warmup):
        state["session"].run(None, state["feeds"])


def _ort_time_once(state: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    out = state["session"].run(None, state["feeds"])
    state["times"].append((time.perf_counter() - t0) * 1000.0)
    state["ort_output"] = out[0]


def _ort_measure(job: Job, args: argparse.Namespace, state: dict[str, Any], profile_prefix: str | None) -> None:
    _ort_prepare(job, args, state, profile_prefix)
    for _ in range(args.runs):
        _ort_time_once(state)
    _ort_finish(state, profile_prefix)


def _ort_finish(state: dict[str, Any], profile_prefix: str | None) -> None:
    session = state.pop("session")
    state["stats"] = lat.summarize_ms(state.pop("times"))
    if profile_prefix:
        path = session.end_profiling()
        parsed = parse_ort_profile(json.loads(Path(path).read_text()))
        state["ms_per_op_type"] = dict(list(parsed["ms_per_op_type"].items())[:12])
        state["peak_memory"] = parsed["peak_memory"]
        state["ort_profile"] = path


# ----------------------------------------------------------------------------------------------------------
# Records


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
        import_version = _package_version("qai-hub")
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


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------
# Driver


PLANNERS: dict[str, Callable[[Job, argparse.Namespace, dict[str, Any]], list[Step]]] = {
    "qai-hub": plan_qai_hub, "qnn-sdk": plan_qnn_sdk, "onnxruntime": plan_onnxruntime,
}


def full_plan(backend: str, job: Job, args: argparse.Namespace, state: dict[str, Any]) -> list[Step]:
    return [export_step(job, args.checkpoints or None), *PLANNERS[backend](job, args, state)]


def print_plan(backend: str, jobs: Sequence[Job], args: argparse.Namespace) -> None:
    """--dry-run: the exact steps, per stage, with no token, SDK or phone needed."""
    print(f"# dry run: backend {backend}, precision {args.precision}, scale {args.scale}; nothing is executed")
    if backend == "qai-hub":
        print(f"import qai_hub as hub   # client from ~/.qai_hub/client.ini or QAI_HUB_API_TOKEN "
              f"(qai-hub {_package_version('qai-hub') or 'not installed'})")
    for job in jobs:
        print(f"\n## {job.stage} ({job.scale}, {job.width}x{job.height} px, {job.frames} frames; "
              f"{lat.INCLUDES}; work folder {job.work})")
        for i, step in enumerate(full_plan(backend, job, args, {}), 1):
            print(f"[{i}] {step.kind:<6} {step.text}")
    print(f"\n# records would be merged into {args.out_path}")


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
            _ort_prepare(job, args, state, None)
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' numbers
            failures[job.stage] = (classify_failure(str(exc)), f"{type(exc).__name__}: {exc}")
            state.pop("session", None)
    print(f"[onnxruntime] {args.runs} interleaved rounds over {len(jobs) - len(failures)} stages", file=sys.stderr)
    for _ in range(args.runs):
        for job in jobs:
            if job.stage not in failures:
                _ort_time_once(states[job.stage])
    records = []
    for job in jobs:
        state = states[job.stage]
        if job.stage in failures:
            records.append(record_from_state("onnxruntime", job, args, state, run_id, *failures[job.stage]))
            continue
        _ort_finish(state, None)
        if args.compare if args.compare is not None else job.scale != "full":
            state["compare"] = relative_error(state["ort_output"], torch_reference(job, args, make_inputs(job)))
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stage", "--stages", dest="stages", default="mobilevd",
                        help="stage slug(s), comma-separated, or 'all'")
    parser.add_argument("--backend", default="qai-hub", choices=BACKENDS)
    parser.add_argument("--scale", default="full", choices=["full", "tiny", "micro"])
    parser.add_argument("--precision", choices=["w8a16", "fp16", "fp32"],
                        help="w8a16 (default for the NPU backends) | fp16 | fp32 (onnxruntime only, its default)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="AI Hub device name (qai-hub)")
    parser.add_argument("--chipset", help="AI Hub chipset attribute instead of a device, e.g. "
                                          "qualcomm-snapdragon-8gen3")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (AI Hub: --max_profiler_iterations)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs (onnxruntime, qnn-sdk)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                        help="compare the output with torch (onnxruntime: default on below full scale; qai-hub: "
                             "runs an inference job)")
    parser.add_argument("--calibration", help=".npz with real UNet inputs (arrays stacked on axis 0) for w8a16")
    parser.add_argument("--calibration-samples", type=int, default=4, help="random calibration sets (w8a16)")
    parser.add_argument("--compile-options", default="", help="extra AI Hub compile options")
    parser.add_argument("--htp-arch", default="v75", help="qnn-sdk: Hexagon arch (v75 = Snapdragon 8 Gen 3)")
    parser.add_argument("--soc-model", type=int, default=57, help="qnn-sdk: QNN soc_model (57 = SM8650)")
    parser.add_argument("--serial", help="qnn-sdk: adb serial of the phone")
    parser.add_argument("--size", help="override the size, WxH pixels")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--onnx", help="use this exported model (folder <name>.onnx/ or a .onnx file); one stage")
    parser.add_argument("--checkpoints", default="checkpoints", help="stage folders ('' = random weights)")
    parser.add_argument("--work-dir", default="outputs/qnn")
    parser.add_argument("--ort-profile", action="store_true", help="onnxruntime: also record time per op type")
    parser.add_argument("--from-profile", help="make a record from an existing profile file of --backend")
    parser.add_argument("--weights-note", default="", help="with --from-profile: what weights the model had")
    parser.add_argument("--out", help="records file (default checkpoints/latency/<backend>-<scale>.json)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.precision is None:
        args.precision = "fp32" if args.backend == "onnxruntime" else "w8a16"
    if args.backend == "onnxruntime" and args.precision != "fp32":
        parser.error("the onnxruntime backend runs fp32 on the CPU; w8a16/fp16 are for qai-hub and qnn-sdk")
    if args.backend != "onnxruntime" and args.precision not in NPU_PRECISIONS:
        parser.error(f"{args.backend} takes --precision w8a16 or fp16")
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            parser.error(f"--size must look like 512x256, got {args.size!r}")
        args.size = (w, h)
    default_name = {"qai-hub": "ai-hub", "qnn-sdk": "phone-qnn", "onnxruntime": "cpu"}[args.backend]
    args.out_path = Path(args.out or lat.DEFAULT_DIR / f"{default_name}-{args.scale}.json")
    args.command = lat.command_line(["scripts/qnn_runner.py", *(argv if argv is not None else sys.argv[1:])])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slugs = list(registry.SLUGS) if args.stages.strip().lower() == "all" else [
        registry.resolve(s) for s in args.stages.split(",") if s.strip()]
    if args.onnx and len(slugs) != 1:
        print("--onnx takes exactly one --stage", file=sys.stderr)
        return 2
    if args.from_profile and len(slugs) != 1:
        print("--from-profile takes exactly one --stage", file=sys.stderr)
        return 2
    client = None
    if not args.dry_run and not args.from_profile:
        try:  # prerequisites first: a missing token costs the user seconds, not an export
            client = ai_hub_client() if args.backend == "qai-hub" else None
            if args.backend == "qnn-sdk":
                check_qnn_sdk(args)
        except Unavailable as exc:
            print(str(exc), file=sys.stderr)
            return 2
    jobs = [make_job(s, args.scale, Path(args.work_dir), args.onnx, args.size, args.frames) for s in slugs]
    if args.dry_run:
        print_plan(args.backend, jobs, args)
        return 0
    run_id = f"{args.backend}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if args.from_profile:
        records = [record_from_profile(args.from_profile, args.backend, jobs[0], args, run_id)]
    else:
        try:
            if args.backend == "onnxruntime" and len(jobs) > 1:
                records = execute_ort_interleaved(jobs, args, run_id)
            else:
                records = [execute(args.backend, job, args, run_id, client) for job in jobs]
        except Unavailable as exc:
            print(str(exc), file=sys.stderr)
            return 2
    lat.add_speedups(records)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
    else:
        print(lat.format_table(records))
    if not args.no_write:
        lat.write_records(args.out_path, records)
        print(f"wrote {len(records)} record(s) to {args.out_path}", file=sys.stderr)
    return 0 if all(r.status == "passed" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
