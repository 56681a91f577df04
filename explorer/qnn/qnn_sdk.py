"""Backend: the local Qualcomm AI Engine Direct (QNN) SDK and a phone over adb.

Convert, build the model library and the HTP context binary on the host, push to the phone, run ``qnn-net-run
--profiling_level basic``, pull the profile and read it with qnn-profile-viewer. Why shell steps: ``--dry-run``
prints them as copy-pasteable lines, and a real run executes the very same argv.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explorer.qnn.jobs import Job, MeasurementFailed, Step, Unavailable, write_raw_inputs
from explorer.qnn.profiles import classify_failure

DEVICE_DIR = "/data/local/tmp/mobilevd"


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
