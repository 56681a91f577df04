"""Latency records: ONE JSON schema for every latency number the project shows (phone NPU, GPU, CPU, paper).

Why one schema: the app's Latency tab, ``scripts/benchmark.py`` and ``scripts/qnn_runner.py`` must never disagree
about what a number means. Every record says what was timed (UNet only, one NFE, batch 1), where (device, chipset,
OS, runtime + version, precision, compute unit), how (median/min/max of ``runs`` warm runs, the command) and where
the number comes from (``source``: measured here, the paper, or an estimate). Rows follow Qualcomm AI Hub's shape:
one row per stage x component x device x runtime x precision; ms with 3 decimals (QNN profilers report
microseconds); peak memory as a range; status passed / oom / failed.

Files: ``checkpoints/latency/*.json``, each ``{"format": FORMAT, "records": [...]}``. ``paper.json`` holds the
paper's numbers (``python -m explorer.latency --write-paper``); the other files are measurements.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from explorer import stages as registry

FORMAT = "mobilevd-explorer/latency/1"
DEFAULT_DIR = Path("checkpoints/latency")
PAPER_FILE = "paper.json"
INCLUDES = "UNet only, one NFE, batch 1"
STATUSES: tuple[str, ...] = ("passed", "oom", "failed")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "w8a16", "w8a8", "int8", "not stated")
SOURCE_PREFIXES: tuple[str, ...] = ("measured here", "paper", "estimate")
BASELINE_STAGE = "svd-512"

# What the paper says about its devices (docs/paper.md §1): GPU model not stated, phone = Xiaomi 14 Pro.
PAPER_GPU_DEVICE = "GPU (model not stated by the paper; likely A100)"
PAPER_PHONE_DEVICE = "Xiaomi 14 Pro"
PAPER_PHONE_CHIPSET = "Snapdragon 8 Gen 3"


@dataclass
class LatencyRecord:
    """One latency result. ``median_ms``/``min_ms``/``max_ms`` are per UNet evaluation (NFE), batch 1.

    ``peak_memory`` is a ``[low, high]`` range in MiB (AI Hub reports a range; a single measured peak is
    ``[x, x]``), or None when the runtime does not report it. ``status`` 'oom' keeps the row visible: a phone
    that ran out of memory is a result, not a blank. ``run_id`` is shared by all records of one benchmark
    invocation, so speedups are ratios of numbers measured together (``speedup_vs_baseline`` = baseline median
    / this median, baseline = ``baseline_stage`` of the same run).
    """

    stage: str
    scale: str
    resolution: str  # "WxH" pixels of the video the UNet denoises
    frames: int
    device: str
    runtime: str
    precision: str
    compute_unit: str
    status: str
    source: str
    component: str = "unet"
    batch: int = 1
    nfe: int = 1
    chipset: str | None = None
    os: str | None = None
    runtime_version: str | None = None
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    runs: int | None = None
    peak_memory: list[float] | None = None
    includes: str = INCLUDES
    date: str | None = None
    command: str | None = None
    notes: str = ""
    weights: str | None = None  # "trained: <folder>" | "random (...)" | None for the paper
    run_id: str | None = None
    baseline_stage: str | None = None
    speedup_vs_baseline: float | None = None
    first_load_ms: float | None = None
    compute_units: dict[str, int] | None = None  # layers per compute unit (AI Hub profile)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:  # aliases (mobilevd) are stored under the canonical slug so rows of one stage group together
            self.stage = registry.resolve(self.stage)
        except ValueError:
            pass  # validate_record reports it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("median_ms", "min_ms", "max_ms", "first_load_ms"):
            if data[key] is not None:
                data[key] = round(float(data[key]), 3)
        if data["speedup_vs_baseline"] is not None:
            data["speedup_vs_baseline"] = round(float(data["speedup_vs_baseline"]), 3)
        if data["peak_memory"] is not None:
            data["peak_memory"] = [round(float(v), 3) for v in data["peak_memory"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyRecord:
        """Parse and validate one record; a ValueError lists every problem."""
        errors = validate_record(data)
        if errors:
            raise ValueError("invalid latency record: " + "; ".join(errors))
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        rec = cls(**kwargs)
        if unknown:
            rec.extra = {**rec.extra, "unknown": unknown}
        return rec

    def key(self) -> tuple[Any, ...]:
        """Identity of a row (AI Hub's shape); a newer record with the same key replaces an older one."""
        return (self.stage, self.scale, self.component, self.resolution, self.frames, self.batch, self.device,
                self.runtime, self.precision, self.compute_unit, self.source.split(":")[0])


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "stage": str, "scale": str, "component": str, "resolution": str, "frames": int, "batch": int, "nfe": int,
    "device": str, "runtime": str, "precision": str, "compute_unit": str, "status": str, "source": str,
    "includes": str,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "chipset": str, "os": str, "runtime_version": str, "median_ms": (int, float), "min_ms": (int, float),
    "max_ms": (int, float), "runs": int, "peak_memory": list, "date": str, "command": str, "notes": str,
    "weights": str, "run_id": str, "baseline_stage": str, "speedup_vs_baseline": (int, float),
    "first_load_ms": (int, float), "compute_units": dict, "extra": dict,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_record(data: Any) -> list[str]:
    """Every problem of a record dict (empty list = valid). Used by the loaders and the tests."""
    if not isinstance(data, dict):
        return [f"a record must be a JSON object, got {type(data).__name__}"]
    errors: list[str] = []
    for name, kind in _REQUIRED.items():
        if name not in data:
            errors.append(f"missing field {name!r}")
        elif not isinstance(data[name], kind) or isinstance(data[name], bool):
            errors.append(f"field {name!r} must be {getattr(kind, '__name__', kind)}, got {data[name]!r}")
    for name, kind in _OPTIONAL.items():
        value = data.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            errors.append(f"field {name!r} must be {kind} or null, got {value!r}")
    if errors:
        return errors
    try:
        registry.resolve(data["stage"])
    except ValueError as exc:
        errors.append(str(exc))
    if data["scale"] not in ("full", "tiny", "micro"):
        errors.append(f"scale must be full, tiny or micro, got {data['scale']!r}")
    if data["component"] != "unet":
        errors.append(f"component must be 'unet' (only the UNet is timed), got {data['component']!r}")
    parts = data["resolution"].lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        errors.append(f"resolution must look like 512x256, got {data['resolution']!r}")
    for name in ("frames", "batch", "nfe"):
        if data[name] < 1:
            errors.append(f"{name} must be >= 1, got {data[name]}")
    if data["nfe"] != 1:
        errors.append("nfe must be 1: every record is per UNet evaluation")
    if data["status"] not in STATUSES:
        errors.append(f"status must be one of {STATUSES}, got {data['status']!r}")
    if data["precision"] not in PRECISIONS:
        errors.append(f"precision must be one of {PRECISIONS}, got {data['precision']!r}")
    if not data["source"].startswith(SOURCE_PREFIXES):
        errors.append(f"source must start with one of {SOURCE_PREFIXES}, got {data['source']!r}")
    times = {k: data.get(k) for k in ("median_ms", "min_ms", "max_ms")}
    for k, v in times.items():
        if v is not None and (not _is_number(v) or v <= 0):
            errors.append(f"{k} must be a positive finite number, got {v!r}")
    if data["status"] == "passed":
        if times["median_ms"] is None:
            errors.append("a passed record needs median_ms")
        if not data["source"].startswith("paper"):
            if times["min_ms"] is None or times["max_ms"] is None:
                errors.append("a measured passed record needs min_ms and max_ms")
            if not data.get("runs"):
                errors.append("a measured passed record needs runs >= 1")
        if all(v is not None and _is_number(v) for v in times.values()):
            if not times["min_ms"] <= times["median_ms"] <= times["max_ms"]:
                errors.append(f"need min_ms <= median_ms <= max_ms, got {times}")
    mem = data.get("peak_memory")
    if mem is not None and (len(mem) != 2 or not all(_is_number(v) and v >= 0 for v in mem) or mem[0] > mem[1]):
        errors.append(f"peak_memory must be a [low, high] range in MiB, got {mem!r}")
    if data.get("runs") is not None and data["runs"] < 1:
        errors.append(f"runs must be >= 1, got {data['runs']}")
    return errors


# ----------------------------------------------------------------------------------------------------------
# Helpers for measuring code


def summarize_ms(times_ms: Sequence[float]) -> dict[str, float | int]:
    """median/min/max/runs of a list of per-run times in ms (the statistics every record carries)."""
    if not times_ms:
        raise ValueError("no timings to summarize")
    return {
        "median_ms": float(statistics.median(times_ms)),
        "min_ms": float(min(times_ms)),
        "max_ms": float(max(times_ms)),
        "runs": len(times_ms),
    }


def new_run_id(prefix: str) -> str:
    """One id shared by every record of a run (``<prefix>-<local time>-<6 hex>``): the app groups the
    ratios measured together by it, and ratios are only meaningful within a run."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def host_os() -> str:
    return f"{platform.system()} {platform.release()}"


def cpu_name() -> str:
    """The host CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a record, as a user would type it."""
    import shlex

    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py"):
        args[0] = os.path.relpath(args[0]) if os.path.isabs(args[0]) else args[0]
        args = ["python", *args]
    return " ".join(shlex.quote(a) for a in args)


def stage_resolution(slug: str, scale: str) -> str:
    width, height = registry.get_stage(slug).size("full" if scale == "full" else "tiny")
    return f"{width}x{height}"


def add_speedups(records: list[LatencyRecord], baseline: str = BASELINE_STAGE) -> None:
    """Set ``speedup_vs_baseline`` within each run_id: baseline median / record median (passed rows only)."""
    by_run: dict[str | None, list[LatencyRecord]] = {}
    for rec in records:
        by_run.setdefault(rec.run_id, []).append(rec)
    for run_id, group in by_run.items():
        if run_id is None:
            continue
        # one baseline per (runtime, precision, scale) inside the run
        for rec in group:
            base = [b for b in group if b.stage == baseline and b.status == "passed" and b.runtime == rec.runtime
                    and b.precision == rec.precision and b.scale == rec.scale and b.device == rec.device]
            if base and rec.status == "passed" and rec.median_ms:
                rec.baseline_stage = baseline
                rec.speedup_vs_baseline = float(base[0].median_ms) / float(rec.median_ms)


# ----------------------------------------------------------------------------------------------------------
# Files


def read_records(path: str | os.PathLike[str]) -> list[LatencyRecord]:
    """Records of one file (``{"format", "records"}`` or a bare list); a ValueError names the file and row."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read latency records from {path}: {exc}") from exc
    rows = data.get("records") if isinstance(data, dict) else data
    if isinstance(data, dict) and data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{path}: unknown format {data.get('format')!r}; expected {FORMAT}")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of records")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(LatencyRecord.from_dict(row))
        except ValueError as exc:
            raise ValueError(f"{path}, record {i}: {exc}") from exc
    return out


def load_records(where: str | os.PathLike[str] = DEFAULT_DIR, include_paper: bool = True) -> list[LatencyRecord]:
    """All records of a file or of every ``*.json`` in a folder (sorted by name); the app's Latency tab reads this.

    A missing folder gives the paper's records only (built in, so the app always has the reference rows).
    """
    where = Path(where)
    if where.is_file():
        return read_records(where)
    records: list[LatencyRecord] = []
    files = sorted(where.glob("*.json")) if where.is_dir() else []
    has_paper = any(f.name == PAPER_FILE for f in files)
    for f in files:
        if f.name == PAPER_FILE and not include_paper:
            continue
        records.extend(read_records(f))
    if include_paper and not has_paper:
        records = paper_records() + records
    return records


def write_records(path: str | os.PathLike[str], records: Iterable[LatencyRecord], merge: bool = True) -> Path:
    """Write records to ``path``; with ``merge``, rows already there with the same key are replaced, others kept.

    Atomic (temp file + rename) so an interrupted benchmark never leaves a truncated file the app cannot read.
    """
    path = Path(path)
    new = list(records)
    for rec in new:
        errors = validate_record(rec.to_dict())
        if errors:
            raise ValueError(f"refusing to write an invalid record for {rec.stage}: {'; '.join(errors)}")
    old: list[LatencyRecord] = read_records(path) if merge and path.is_file() else []
    new_keys = {r.key() for r in new}
    rows = [r for r in old if r.key() not in new_keys] + new
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {"format": FORMAT, "includes": INCLUDES, "records": [r.to_dict() for r in rows]}
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# The paper's numbers as records


def paper_records() -> list[LatencyRecord]:
    """Table 2's GPU ms and phone ms per stage as records (source 'paper'); phone OOM -> status 'oom'."""
    rows: list[LatencyRecord] = []
    ref = f"paper: {registry.PAPER}, Table 2"
    for stage in registry.STAGES:
        res = f"{stage.width}x{stage.height}"
        common = dict(stage=stage.slug, scale="full", resolution=res, frames=stage.frames, source=ref,
                      date=None, command=None, precision="not stated", runtime="not stated")
        if stage.paper.gpu_ms is not None:
            rows.append(LatencyRecord(
                device=PAPER_GPU_DEVICE, compute_unit="GPU", status="passed", median_ms=float(stage.paper.gpu_ms),
                notes="one number per stage as printed; statistic and runs not stated", **common))
        phone = stage.paper.phone_ms
        if phone == registry.OOM:
            rows.append(LatencyRecord(
                device=PAPER_PHONE_DEVICE, chipset=PAPER_PHONE_CHIPSET, os="Android", compute_unit="NPU",
                status="oom", notes="the paper reports out of memory on the phone", **common))
        elif phone is not None:
            rows.append(LatencyRecord(
                device=PAPER_PHONE_DEVICE, chipset=PAPER_PHONE_CHIPSET, os="Android", compute_unit="NPU",
                status="passed", median_ms=float(phone), notes="one number per stage as printed", **common))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Display


def format_table(records: Sequence[LatencyRecord]) -> str:
    """A plain-text table (stage, device, runtime, precision, median/min/max ms, speedup, status, source)."""
    head = ("stage", "scale", "res", "device", "runtime", "prec", "median ms", "min ms", "max ms", "x svd-512",
            "status", "source")
    rows = [head]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in records:
        speedup = "-" if r.speedup_vs_baseline is None else f"{r.speedup_vs_baseline:.2f}"
        rows.append((r.stage, r.scale, r.resolution, r.device[:28], r.runtime, r.precision, ms(r.median_ms),
                     ms(r.min_ms), ms(r.max_ms), speedup, r.status, r.source.split(":")[0]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({INCLUDES}; {registry.ACCOUNTING.split(';')[0]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Show or write latency records (" + INCLUDES + ").")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="records folder or file")
    parser.add_argument("--write-paper", action="store_true", help=f"(re)write <dir>/{PAPER_FILE}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.write_paper:
        path = write_records(Path(args.dir) / PAPER_FILE, paper_records(), merge=False)
        print(f"wrote {path}")
        return 0
    records = load_records(args.dir)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
    else:
        print(format_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
