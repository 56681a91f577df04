"""Backend: Qualcomm AI Hub (compile to a QNN context binary, profile on a hosted phone, read the profile back).

Why a plan of steps: ``--dry-run`` prints exactly what would be submitted (no token needed) and a real run executes
the same steps, so the printed plan and the measurement cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from explorer.qnn import reference
from explorer.qnn.jobs import Job, MeasurementFailed, Step, Unavailable, calibration_data, make_inputs
from explorer.qnn.profiles import classify_failure

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
TOKEN_HELP = """Qualcomm AI Hub needs your API token, and none is configured on this machine.
  1. Sign in at https://aihub.qualcomm.com and copy the API token from Settings.
  2. pip install qai-hub && qai-hub configure --api_token YOUR_TOKEN
     (or: export QAI_HUB_API_TOKEN=YOUR_TOKEN)
  3. Run this command again.
See what would be submitted, without a token:  python scripts/qnn_runner.py ... --backend qai-hub --dry-run"""


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
    ref = reference.torch_reference(job, args, inputs)
    got = got.reshape(ref.shape) if got.size == ref.size else got
    state["compare"] = reference.relative_error(got, ref)
