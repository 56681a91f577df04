"""What the QNN runner measures: one job per stage (sizes, input shapes, work folder), the steps a backend runs,
and the inputs it feeds (example inputs, calibration sets, qnn-net-run .raw files).

Why one module: every backend (AI Hub, QNN SDK, onnxruntime) starts from the same ONNX export and the same inputs,
so a job means the same thing whichever backend measures it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer import stages as registry

BACKENDS: tuple[str, ...] = ("qai-hub", "qnn-sdk", "onnxruntime")
DEFAULT_DEVICE = "Samsung Galaxy S24 (Family)"
NPU_PRECISIONS: tuple[str, ...] = ("w8a16", "fp16")


class Unavailable(Exception):
    """A prerequisite (token, SDK, phone, package) is missing: a message for the user, exit code 2."""


class MeasurementFailed(Exception):
    """A backend ran but the model failed (status 'failed' or 'oom' in the record, exit code 1)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


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


def shapes_text(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k}={tuple(v)}" for k, v in shapes.items())


def export_step(job: Job, checkpoints: str | None) -> Step:
    ckpt = checkpoints or "''"
    text = (f"python -m explorer.export --stage {job.stage} --scale {job.scale} --out {job.onnx_folder.parent} "
            f"--checkpoints {ckpt} --no-check   # -> {job.onnx_folder}/ "
            f"(model.onnx + model.data; inputs {shapes_text(job.shapes)})")
    if job.given_onnx:
        return Step("local", f"use the given ONNX model {job.onnx_folder} (no export)")

    def run() -> dict[str, Any]:
        from explorer.export import export_stage

        summary = export_stage(job.stage, job.scale, job.onnx_folder.parent, checkpoints, width=job.width,
                               height=job.height, frames=job.frames, check=False)
        return summary

    return Step("local", text, action=run)


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
