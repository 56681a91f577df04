"""Defensive readers of the records other tools write (stage metrics, latency, ablations, learned gates), and
the source labels every number shown to a user carries.

A record is read field by field and a bad file becomes a reason string, never an exception: the files are
written by scripts, by hand or by older versions of this code, and the app must still start.

Sources. Every number the app shows carries one of three labels: ``measured here`` (produced on this machine
by this code: generation timings, the FLOP counter, scripts/evaluate.py, scripts/benchmark.py), ``paper``
(MobileVD, arXiv 2412.07583, the table named; docs/paper.md) or ``estimate`` (derived by a stated rule, e.g. a
full-scale per-clip cost from this run's NFE).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer import stages as registry
from explorer.transforms.pruning_rules import scale_for_count, temporal_block_count

MEASURED = "measured here"
PAPER = "paper"
ESTIMATE = "estimate"
ACCOUNTING = (
    "per NFE (one UNet evaluation), batch 1, UNet only (no VAE, no image encoder), FLOPs = 2 x MAC; "
    "per clip = NFE x per-NFE, a classifier-free-guidance batch of 2 counts 2 NFE"
)
GATES_FILES = ("gates.json", "gates_history.json", "gate_history.json")


def read_json(path: str | Path) -> tuple[Any, str | None]:
    """(data, None) or (None, reason): a missing or bad file is a reason, never an exception."""
    p = Path(path)
    try:
        if not p.is_file():
            return None, f"missing file {p}"
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        return None, f"cannot read {p}: {exc}"
    try:
        return json.loads(text), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"bad JSON in {p}: {exc}"


def _num(value: Any) -> float | None:
    """A finite float or None (records are written by others: strings, nulls and NaNs happen)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``<stage folder>/metrics.json`` -> {'ok', 'stage', 'nfe', 'clips', 'fvd_proxy', 'first_frame_psnr',
    'consecutive_psnr', 'motion_spearman', 'fvd', 'baselines', 'reason', 'file'} (None when absent)."""
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None
    data, err = read_json(path)
    if err is not None:
        return {"ok": False, "reason": err, "file": str(path)}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return {"ok": False, "reason": f"{path}: expected a JSON object", "file": str(path)}
    out: dict[str, Any] = {"ok": True, "file": str(path), "stage": str(data.get("stage", Path(folder).name))}
    for name in ("nfe", "clips", "fvd_proxy", "first_frame_psnr", "consecutive_psnr", "motion_spearman", "fvd"):
        out[name] = _num(data.get(name))
    if out["fvd_proxy"] is None:
        out["ok"], out["reason"] = False, f"{path}: no numeric 'fvd_proxy'"
    baselines = []
    for b in data.get("baselines") or []:
        if isinstance(b, dict) and _num(b.get("fvd_proxy")) is not None:
            res = b.get("resolution") or (f"{b['width']}x{b['height']}" if b.get("width") and b.get("height")
                                          else "size not recorded")
            baselines.append({"stage": str(b.get("stage", "baseline")), "fvd_proxy": _num(b.get("fvd_proxy")),
                              "resolution": str(res)})
    out["baselines"] = baselines
    return out


def all_metrics(checkpoints: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(metrics rows of every stage folder, problems)."""
    rows, problems = [], []
    for slug in registry.SLUGS:
        m = read_metrics(checkpoints / slug)
        if m is None:
            continue
        if m.get("ok"):
            rows.append({**m, "stage": slug})
        else:
            problems.append(m.get("reason", f"{slug}: unreadable metrics"))
    return rows, problems


LATENCY_FIELDS = ("stage", "scale", "resolution", "device", "chipset", "runtime", "precision", "compute_unit",
                  "median_ms", "min_ms", "max_ms", "runs", "first_load_ms", "speedup_vs_baseline", "baseline_stage",
                  "peak_memory", "status", "source")


def _latency_row(rec: dict[str, Any], file: str) -> dict[str, Any]:
    """One record (explorer.latency's format, read field by field so that older/newer files still show)."""
    row: dict[str, Any] = {k: rec.get(k) for k in LATENCY_FIELDS}
    for k in ("median_ms", "min_ms", "max_ms", "first_load_ms", "speedup_vs_baseline", "runs"):
        row[k] = _num(rec.get(k))
    try:
        row["stage"] = registry.resolve(str(rec.get("stage")))
    except ValueError:
        row["stage"] = str(rec.get("stage"))
    status = str(rec.get("status") or "").lower()
    row["status"] = status if status in ("passed", "oom", "failed") else (status or "unknown")
    pm = rec.get("peak_memory", rec.get("peak_memory_mb"))
    if isinstance(pm, dict):
        lo, hi = _num(pm.get("min_mb", pm.get("min"))), _num(pm.get("max_mb", pm.get("max")))
        row["peak_memory"] = f"{lo:g}-{hi:g} MB" if lo is not None and hi is not None else json.dumps(pm)
    elif isinstance(pm, (list, tuple)) and len(pm) == 2 and all(_num(v) is not None for v in pm):
        lo, hi = (_num(v) for v in pm)
        row["peak_memory"] = f"{lo:g} MB" if lo == hi else f"{lo:g}-{hi:g} MB"
    elif pm is not None:
        row["peak_memory"] = f"{_num(pm):g} MB" if _num(pm) is not None else str(pm)
    src = str(rec.get("source") or "")
    row["source"] = src or ESTIMATE + " (record gives no source)"
    row["includes"] = str(rec.get("includes") or "UNet only, per NFE")
    row["file"] = file
    return row


def read_latency(checkpoints: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of ``<checkpoints>/latency/*.json`` (a record, a list of records, or {'records': [...]})."""
    folder = Path(checkpoints) / "latency"
    if not folder.is_dir():
        return [], [f"no latency records yet ({folder} does not exist)"]
    found, problems = _record_files(folder, "stage")
    return [_latency_row(rec, path.name) for path, rec in found], problems


def _record_files(folder: Path, required: str) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(path, record) of every record in ``folder/*.json`` (a record, a list, or {'records': [...]}) that has a
    ``required`` field, and a problem line for every file or record that cannot be used."""
    found: list[tuple[Path, dict[str, Any]]] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")):
        data, err = read_json(path)
        if err is not None:
            problems.append(err)
            continue
        recs = data.get("records") if isinstance(data, dict) and "records" in data else data
        recs = recs if isinstance(recs, list) else [recs]
        for i, rec in enumerate(recs):
            if not isinstance(rec, dict) or not rec.get(required):
                problems.append(f"{path} record {i}: not an object with a '{required}'")
                continue
            found.append((path, rec))
    return found, problems


def paper_latency_rows() -> list[dict[str, Any]]:
    """The paper's per-NFE GPU and phone latencies (Table 2) in the latency-record shape (used when no
    ``paper`` record file is present)."""
    rows = []
    for s in registry.STAGES:
        p = s.paper
        common = {"stage": s.slug, "scale": "full", "precision": "not stated", "peak_memory": None,
                  "includes": "UNet only, per NFE, batch 1", "file": ""}
        if p.gpu_ms is not None:
            rows.append({**common, "device": "GPU (not stated; likely A100)", "chipset": "", "runtime": "not stated",
                         "compute_unit": "GPU", "median_ms": float(p.gpu_ms), "min_ms": None, "max_ms": None,
                         "status": "passed", "source": f"{PAPER} (Table 2)"})
        phone = p.phone_ms
        rows.append({**common, "device": "Xiaomi 14 Pro", "chipset": "Snapdragon 8 Gen 3", "runtime": "not stated",
                     "compute_unit": "NPU", "median_ms": float(phone) if isinstance(phone, (int, float)) else None,
                     "min_ms": None, "max_ms": None,
                     "status": "oom" if phone == registry.OOM else ("passed" if phone is not None else "unknown"),
                     "source": f"{PAPER} (Table 2)"})
    return rows


def read_ablations(checkpoints: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Project ablation records ``<checkpoints>/ablations/*.json`` (format in docs/app.md)."""
    folder = Path(checkpoints) / "ablations"
    rows: list[dict[str, Any]] = []
    if not folder.is_dir():
        return rows, [f"no project ablation records yet ({folder} does not exist)"]
    found, problems = _record_files(folder, "label")
    for path, rec in found:
        rows.append({
            "table": str(rec.get("table") or ""), "label": str(rec["label"]),
            "config": rec.get("config") if isinstance(rec.get("config"), dict) else {},
            "fvd_proxy": _num(rec.get("fvd_proxy")), "tflops": _num(rec.get("tflops")),
            "first_frame_psnr": _num(rec.get("first_frame_psnr")),
            "motion_spearman": _num(rec.get("motion_spearman")),
            "fvd_proxy_ci": _interval((rec.get("spread") or {}).get("fvd_proxy")
                                      if isinstance(rec.get("spread"), dict) else None),
            "first_frame_psnr_ci": _interval((rec.get("spread") or {}).get("first_frame_psnr")
                                             if isinstance(rec.get("spread"), dict) else None),
            "per_clip_psnr": _floats((rec.get("per_clip") or {}).get("first_frame_psnr")
                                     if isinstance(rec.get("per_clip"), dict) else None),
            "source": str(rec.get("source") or f"{MEASURED} ({path.name})"), "file": path.name,
        })
    return rows, problems


def _interval(value: Any) -> tuple[float, float] | None:
    """A recorded (low, high) interval, or None when absent or malformed (records from before spreads)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = (_num(v) for v in value)
    return (low, high) if low is not None and high is not None and low <= high else None


def distinguishable(rows: Sequence[dict[str, Any]], key: str = "fvd_proxy") -> dict[str, Any]:
    """Which project rows of one table differ from the best (lowest ``key``) by more than the spread.

    Returns {'best': label | None, 'beyond': [labels whose interval does not overlap the best's],
    'within': [labels that overlap it], 'no_spread': [labels recorded without an interval]}."""
    from explorer.metrics import intervals_overlap

    scored = [r for r in rows if r.get(key) is not None]
    out: dict[str, Any] = {"best": None, "beyond": [], "within": [], "no_spread": []}
    if not scored:
        return out
    best = min(scored, key=lambda r: r[key])
    out["best"] = best["label"]
    for r in scored:
        if r is best:
            continue
        overlap = intervals_overlap(best.get(f"{key}_ci"), r.get(f"{key}_ci"))
        out["no_spread" if overlap is None else "within" if overlap else "beyond"].append(r["label"])
    return out


ABLATION_TABLES: dict[str, str] = {
    "Table 3": "temporal vs spatial multiscaling",
    "Table 4": "coupled singular initialisation (CSI) vs He, by fun-factor",
    "Table 5": "width reduction: funnels vs alternatives",
    "Table 6": "temporal block pruning: learned gates vs L1 on blend weights",
    "One-step": "one-step sampling with and without the adversarial stage",
}


def ablation_comparison(table: str, project: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's rows of ``table`` joined by label with the project's records of the same table (a row may
    exist on one side only: e.g. the paper's 80% gates, the project's 50%). Paper FVD is UCF-101 FVD at 25 fps;
    the project's FVD-proxy is its own metric: compare orderings, never values."""
    rows: dict[str, dict[str, Any]] = {}
    for r in registry.ablation_rows(table):
        rows[r.label] = {"label": r.label, "paper_fvd": r.fvd_25fps, "paper_tflops": r.tflops,
                         "paper_phone_ms": r.phone_ms if isinstance(r.phone_ms, (int, float)) else None,
                         "paper_source": r.source}
    for p in project:
        if p.get("table") != table:
            continue
        row = rows.setdefault(p["label"], {"label": p["label"], "paper_fvd": None, "paper_tflops": None,
                                           "paper_phone_ms": None, "paper_source": None})
        row.update({"fvd_proxy": p.get("fvd_proxy"), "fvd_proxy_ci": p.get("fvd_proxy_ci"),
                    "first_frame_psnr": p.get("first_frame_psnr"), "first_frame_psnr_ci": p.get("first_frame_psnr_ci"),
                    "motion_spearman": p.get("motion_spearman"), "tflops": p.get("tflops"),
                    "source": p.get("source"), "per_clip_psnr": p.get("per_clip_psnr")})
    _paired_to_first(list(rows.values()))
    return list(rows.values())


def _paired_to_first(rows: list[dict[str, Any]]) -> None:
    """``psnr_vs_first``: each project row's first-frame PSNR less the table's first project row's, on the same
    clips, with its paired 95% interval (None without per-clip values, or on different clips)."""
    from explorer.metrics import paired_difference

    scored = [r for r in rows if r.get("per_clip_psnr")]
    for r in rows:
        r["psnr_vs_first"] = None
    if not scored:
        return
    first = scored[0]
    for r in scored[1:]:
        if len(r["per_clip_psnr"]) == len(first["per_clip_psnr"]):
            mean, low, high = paired_difference(r["per_clip_psnr"], first["per_clip_psnr"])
            r["psnr_vs_first"] = {"vs": first["label"], "mean": mean, "ci": (low, high)}


@dataclass
class GatesRecord:
    """Learned gates of the temporal-pruning stage, as read from a gates file (docs/app.md)."""

    ok: bool
    reason: str = ""
    file: str | None = None
    n: int | None = None
    importance: list[float] | None = None
    probabilities: list[float] | None = None
    kept: list[int] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # [{'step', 'probabilities'|'importance'}]
    scale: str | None = None  # the UNet scale the indices refer to ('full', 'tiny', 'micro', or the record's)
    total: int | None = None  # temporal blocks of that unpruned UNet (full SVD 38, tiny 33)
    blocks: list[dict[str, Any]] | None = None  # TemporalBlockInfo.to_dict() per block, when the file has them
    pruned_fraction: float | None = None
    scheme: str | None = None


def _floats(values: Any, length: int | None = None) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    out = [_num(v) for v in values]
    if any(v is None for v in out) or (length is not None and len(out) != length):
        return None
    return [float(v) for v in out]  # type: ignore[arg-type]


def _first(data: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if data.get(k) is not None:
            return data[k]
    return None


IMPORTANCE_KEYS = ("importance", "importances", "q")
PROBABILITY_KEYS = ("probabilities", "probability", "p")


def _gate_blocks(raw: Any) -> list[dict[str, Any]] | None:
    """The file's block list if every entry is an object with index = position, kind, level and side."""
    if not isinstance(raw, list) or not raw:
        return None
    for i, b in enumerate(raw):
        if not isinstance(b, dict) or b.get("index") != i:
            return None
        level_ok = b.get("level") == "mid" or isinstance(b.get("level"), int)
        if not (level_ok and b.get("kind") in ("resnet", "transformer") and b.get("side") in ("down", "mid", "up")):
            return None
    return [dict(b) for b in raw]


def read_gates(checkpoints: Path, total: int | None = None) -> GatesRecord:
    """The gates record of ``<checkpoints>/temporal-pruning/`` (or its stage.json ``extra.gates``).

    Reads the file the training code writes (``explorer.training.path``: kept, n, total, pruned_fraction,
    importance, probability, blocks, history, scheme) and the hand-written format of docs/app.md. The number
    of temporal blocks is ``total`` when given (the file must agree), else the file's ``total``, its ``blocks``,
    the stage's scale (stage.json) or the length of its importance/probability list, in that order.
    """
    from explorer.models import UNET_CONFIGS

    folder = Path(checkpoints) / "temporal-pruning"
    data: Any = None
    file = None
    for name in GATES_FILES:
        if (folder / name).exists():
            file = str(folder / name)
            data, err = read_json(folder / name)
            if err is not None:
                return GatesRecord(False, err, file)
            break
    stage_rec, _ = read_json(folder / "stage.json") if (folder / "stage.json").is_file() else (None, None)
    stage_rec = stage_rec if isinstance(stage_rec, dict) else {}
    if data is None and isinstance((stage_rec.get("extra") or {}).get("gates"), dict):
        data, file = stage_rec["extra"]["gates"], str(folder / "stage.json")
    if data is None:
        return GatesRecord(False, f"no gates file in {folder} (expected one of {', '.join(GATES_FILES)})")
    if not isinstance(data, dict):
        return GatesRecord(False, f"{file}: expected a JSON object", file)
    scale = str(data.get("scale") or stage_rec.get("scale") or "") or None
    raw_imp, raw_prob = _first(data, *IMPORTANCE_KEYS), _first(data, *PROBABILITY_KEYS)
    blocks = _gate_blocks(data.get("blocks"))
    if data.get("blocks") is not None and blocks is None:
        return GatesRecord(False, f"{file}: 'blocks' must list one object per temporal block (index = position, "
                                  "kind, level, side)", file)
    file_total = data.get("total")
    if file_total is not None and not (isinstance(file_total, int) and file_total > 0):
        return GatesRecord(False, f"{file}: 'total' must be a positive whole number", file)
    found = [("the file's 'total'", file_total), ("the file's 'blocks'", len(blocks) if blocks else None)]
    if scale in UNET_CONFIGS:
        found.append((f"the {scale} UNet", temporal_block_count(scale)))
    if total is not None:
        found.insert(0, ("expected", int(total)))
    known = [(what, v) for what, v in found if v is not None]
    if not known:
        lengths = {len(v) for v in (raw_imp, raw_prob) if isinstance(v, list) and v}
        if len(lengths) == 1 and scale_for_count(next(iter(lengths))) is not None:
            known = [("the importance/probability lists", lengths.pop())]
    if not known:
        return GatesRecord(False, f"{file}: cannot tell the number of temporal blocks: give 'total' or 'blocks', or "
                                  "'importance'/'probabilities' as long as a known UNet's block count "
                                  f"({temporal_block_count('full')} full SVD, {temporal_block_count('tiny')} tiny)",
                           file)
    total = known[0][1]
    clash = [f"{what} = {v}" for what, v in known if v != total]
    if clash:
        return GatesRecord(False, f"{file}: {known[0][0]} = {total} temporal blocks, but {', '.join(clash)}", file)
    imp = _floats(raw_imp, total)
    prob = _floats(raw_prob, total)
    for name, raw, val in (("importance", raw_imp, imp), ("probabilities", raw_prob, prob)):
        if raw is not None and val is None:
            return GatesRecord(False, f"{file}: '{name}' must be {total} finite numbers", file)
    kept_raw = _first(data, "kept", "kept_blocks")
    kept = None
    if kept_raw is not None:
        if not (isinstance(kept_raw, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                   and 0 <= i < total for i in kept_raw)):
            return GatesRecord(False, f"{file}: 'kept' must be block indices in 0..{total - 1}", file)
        kept = sorted(set(kept_raw)) or None
    if imp is None and prob is None and kept is None:
        return GatesRecord(False, f"{file}: needs 'importance' or 'probabilities' ({total} numbers) or 'kept'", file)
    n = data.get("n")
    n = int(n) if isinstance(n, int) and 0 < n <= total else (len(kept) if kept else None)
    frac = _num(data.get("pruned_fraction"))
    if n is None and frac is not None and 0 <= frac < 1:
        n = registry.kept_count(total, frac)
    if prob is None and imp is not None and n:
        import torch

        from explorer.transforms.temporal_gates import project_capped_simplex

        prob = project_capped_simplex(torch.sigmoid(torch.tensor(imp, dtype=torch.float64)), float(n)).tolist()
    if kept is None and n:
        ranking = imp if imp is not None else prob
        order = sorted(range(total), key=lambda i: (-ranking[i], i))  # type: ignore[index]
        kept = sorted(order[:n])
    history = []
    for h in data.get("history") or []:
        if not isinstance(h, dict):
            continue
        step = _num(h.get("step"))
        hp = _floats(_first(h, *PROBABILITY_KEYS), total)
        hi = _floats(_first(h, *IMPORTANCE_KEYS), total)
        if step is not None and (hp is not None or hi is not None):
            history.append({"step": step, "probabilities": hp, "importance": hi})
    if scale is None:
        scale = scale_for_count(total)
    scheme = data.get("scheme")
    return GatesRecord(True, "", file, n, imp, prob, kept, history, scale, total, blocks,
                       frac if frac is not None and 0 <= frac < 1 else None,
                       str(scheme) if isinstance(scheme, str) else None)


__all__ = [
    "ABLATION_TABLES", "ACCOUNTING", "ESTIMATE", "GATES_FILES", "GatesRecord", "LATENCY_FIELDS", "MEASURED", "PAPER",
    "ablation_comparison", "all_metrics", "distinguishable", "paper_latency_rows", "read_ablations", "read_gates",
    "read_json", "read_latency", "read_metrics",
]
