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
import sys
from pathlib import Path

from explorer import latency as lat
from explorer import qnn
from explorer.qnn import BACKENDS, DEFAULT_DEVICE, NPU_PRECISIONS


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
    slugs = qnn.resolve_stages(args.stages)
    if args.onnx and len(slugs) != 1:
        print("--onnx takes exactly one --stage", file=sys.stderr)
        return 2
    if args.from_profile and len(slugs) != 1:
        print("--from-profile takes exactly one --stage", file=sys.stderr)
        return 2
    client = None
    if not args.dry_run and not args.from_profile:
        try:  # prerequisites first: a missing token costs the user seconds, not an export
            client = qnn.check_prerequisites(args.backend, args)
        except qnn.Unavailable as exc:
            print(str(exc), file=sys.stderr)
            return 2
    jobs = [qnn.make_job(s, args.scale, Path(args.work_dir), args.onnx, args.size, args.frames) for s in slugs]
    if args.dry_run:
        print("\n".join(qnn.plan_lines(args.backend, jobs, args)))
        return 0
    run_id = qnn.new_run_id(args.backend)
    if args.from_profile:
        records = [qnn.record_from_profile(args.from_profile, args.backend, jobs[0], args, run_id)]
    else:
        try:
            records = qnn.measure(args.backend, jobs, args, run_id, client)
        except qnn.Unavailable as exc:
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
