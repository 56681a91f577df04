"""Generating one stage's clip for the app (the comparison engine): settings checked against limits, a result
cache, the mp4, every number of the clip labelled with its source, and the side-by-side of a comparison."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explorer.records import ESTIMATE, MEASURED, PAPER, read_metrics
from explorer.serving.catalog import NOT_FINETUNED, CatalogEntry, StageCatalog, reason_of
from explorer.serving.flops_cache import FlopsService, entry_flops
from explorer.serving.inputs import CheckedImage, safe_name
from explorer.serving.work import RequestCancelled

MAX_STAGES = 10  # stages per comparison (result cards)
MAX_STEPS = 500  # denoising steps per stage and request
MAX_QUEUE = 16  # requests waiting in the queue; more are refused ("queue is full") so memory stays bounded
MAX_OUTPUT_FILES = 256  # files kept in the app's output folder (oldest deleted first; examples are kept)


@dataclass
class StageRequest:
    key: str
    steps: int | None = None
    min_guidance: float | None = None
    max_guidance: float | None = None
    params: dict[str, Any] = field(default_factory=dict)  # zero-shot knobs


@dataclass
class Common:
    seed: int = 0
    motion_bucket_id: int = 127
    fps: int = 7
    noise_aug_strength: float = 0.02


@dataclass
class StageOutcome:
    """What one stage produced (or why not)."""

    key: str
    label: str
    kind: str
    note: str
    status: str  # 'done' | 'cached' | 'unavailable' | 'failed'
    reason: str = ""
    video: str | None = None
    frames: Any = None  # uint8 [F, H, W, 3]
    stats: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("frames")
        return d


class ResultCache:
    """LRU of stage outcomes keyed by (stage identity, image hash, seed, settings)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._data: OrderedDict[str, StageOutcome] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(identity: str, digest: str, settings: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps([identity, digest, settings], sort_keys=True, default=str).encode()
                              ).hexdigest()

    def get(self, key: str) -> StageOutcome | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                if hit.video and not Path(hit.video).is_file():
                    self._data.pop(key)
                    return None
            return hit

    def put(self, key: str, value: StageOutcome) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def identity_of(e: CatalogEntry, record: Any) -> str:
    """What makes an entry's outputs what they are: folder + weights mtime, placeholder seed, or base + transforms."""
    parts = [e.key, e.kind, e.scale]
    if e.folder:
        for sub in ("unet", ""):
            p = Path(e.folder) / sub
            for f in sorted(p.glob("*.safetensors")) if p.is_dir() else []:
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    if record is not None:
        parts.append(json.dumps([t.to_dict() for t in record.transforms], sort_keys=True, default=str))
    return "|".join(parts)


def stage_settings(record: Any, req: StageRequest, common: Common) -> dict[str, Any]:
    """The generation arguments of one stage: the request's overrides on top of the stage record's defaults."""
    steps = int(req.steps) if req.steps is not None else int(record.steps)
    ming = float(req.min_guidance) if req.min_guidance is not None else float(record.min_guidance)
    maxg = float(req.max_guidance) if req.max_guidance is not None else float(record.max_guidance)
    if steps < 1 or steps > MAX_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
    if not (math.isfinite(ming) and math.isfinite(maxg)) or ming < 0 or maxg > 30 or ming > maxg:
        raise ValueError(f"guidance must satisfy 0 <= min <= max <= 30, got {ming}..{maxg}")
    return {
        "width": int(record.width), "height": int(record.height), "num_frames": int(record.frames),
        "steps": steps, "min_guidance": ming, "max_guidance": maxg, "seed": int(common.seed),
        "motion_bucket_id": int(common.motion_bucket_id), "fps": int(common.fps),
        "noise_aug_strength": float(common.noise_aug_strength),
    }


def validate_common(common: Common) -> Common:
    if not 0 <= int(common.motion_bucket_id) <= 1023:
        raise ValueError(f"motion bucket must be in 0..1023, got {common.motion_bucket_id}")
    if not 1 <= int(common.fps) <= 60:
        raise ValueError(f"fps must be in 1..60, got {common.fps}")
    if not 0 <= float(common.noise_aug_strength) <= 1:
        raise ValueError(f"noise augmentation must be in 0..1, got {common.noise_aug_strength}")
    if not 0 <= int(common.seed) < 2**63:
        raise ValueError(f"seed must be in 0..2^63-1, got {common.seed}")
    return common


def _outcome_key(cache: ResultCache, e: CatalogEntry, record: Any, checked: CheckedImage, req: StageRequest,
                 settings: dict[str, Any]) -> str:
    identity = identity_of(e, record) + ("|" + json.dumps(req.params, sort_keys=True) if req.params else "")
    return cache.key(identity, checked.digest, settings)


def cached_outcome(catalog: StageCatalog, cache: ResultCache, checked: CheckedImage, req: StageRequest,
                   common: Common) -> StageOutcome | None:
    """What ``run_stage`` would return from the cache for these inputs, or None -- without loading a model or
    generating anything (so the app can show a cached example at once and leave the rest to Generate)."""
    try:
        e = catalog.entry(req.key)
    except KeyError:
        return None
    if e.key.startswith("base/") or not catalog.is_loaded(e.key):
        return None
    try:
        settings = stage_settings(e.record, req, common)
    except ValueError:
        return None
    return _cached_copy(cache, _outcome_key(cache, e, e.record, checked, req, settings))


def _cached_copy(cache: ResultCache, key: str) -> StageOutcome | None:
    hit = cache.get(key)
    if hit is None:
        return None
    out = copy.copy(hit)
    out.status = "cached"
    return out


def run_stage(
    catalog: StageCatalog,
    flops: FlopsService | None,
    cache: ResultCache,
    out_dir: Path,
    checked: CheckedImage,
    req: StageRequest,
    common: Common,
    progress: Callable[[int, int], Any] | None = None,
    generate_fn: Callable[..., Any] | None = None,
    pipe_record: tuple[Any, Any] | None = None,
) -> StageOutcome:
    """Generate (or fetch from the cache) one stage's clip, write its mp4 and collect its labelled numbers."""
    from explorer.pipeline import generate
    from explorer.video import write_mp4

    e = catalog.entry(req.key)
    label = e.label
    try:
        pipe, record = pipe_record if pipe_record is not None else catalog.pipeline(e.key, req.params)
    except (RuntimeError, KeyError, ValueError) as exc:
        return StageOutcome(e.key, label, e.kind, e.note, "unavailable", reason=reason_of(exc).split(": ", 1)[-1])
    note = record.extra.get("note", e.note) if isinstance(getattr(record, "extra", None), dict) else e.note
    try:
        settings = stage_settings(record, req, common)
    except ValueError as exc:
        return StageOutcome(e.key, label, e.kind, note, "failed", reason=str(exc))
    ckey = _outcome_key(cache, e, record, checked, req, settings)
    hit = _cached_copy(cache, ckey)
    if hit is not None:
        return hit
    runner = generate_fn or generate
    work = catalog.work

    def step_done(done: int, total: int) -> None:
        work.yield_to_interactive()  # a FLOP count someone waits for gets the cores first
        progress(done, total)  # type: ignore[misc]

    try:
        with work.foreground():
            result = runner(
                pipe, checked.image, width=settings["width"], height=settings["height"],
                num_frames=settings["num_frames"], steps=settings["steps"], min_guidance=settings["min_guidance"],
                max_guidance=settings["max_guidance"], seed=settings["seed"],
                motion_bucket_id=settings["motion_bucket_id"], fps=settings["fps"],
                noise_aug_strength=settings["noise_aug_strength"],
                progress=step_done if progress is not None else None,  # None: ZeroGPU runs it in another process
            )
    except RequestCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing stage must not take the others down
        traceback.print_exc()
        return StageOutcome(e.key, label, e.kind, note, "failed", reason=f"generation failed: {reason_of(exc)}")
    video = out_dir / f"{safe_name(e.key)}-{ckey[:12]}.mp4"
    try:
        write_mp4(result.frames, video, fps=settings["fps"])
    except Exception as exc:  # noqa: BLE001
        return StageOutcome(e.key, label, e.kind, note, "failed", reason=f"video encoding failed: {reason_of(exc)}")
    tf = (entry_flops(flops, catalog, e, settings["width"], settings["height"], settings["num_frames"], record)
          if flops is not None else {})  # None: a caller that shows no FLOPs (scripts/compare.py)
    # a model derived on the fly (re-pruned, zero-shot knobs) is not the stage folder evaluate.py measured
    stats = outcome_stats(e, record, result, tf, catalog, evaluated=pipe_record is None and not req.params)
    out = StageOutcome(e.key, label, e.kind, note, "done", video=str(video), frames=result.frames, stats=stats)
    cache.put(ckey, out)
    return out


def outcome_stats(e: CatalogEntry, record: Any, result: Any, tf: dict[str, Any], catalog: StageCatalog,
                  evaluated: bool = True) -> dict[str, Any]:
    """Every number of one generated clip, each as {'value', 'unit', 'source'}. The stage folder's quality metrics
    (metrics.json) are attached only when the clip came from that very model (``evaluated``)."""
    s = result.settings
    cfg = bool(s.get("cfg"))
    device = s.get("device", "cpu")
    run_src = f"{MEASURED} ({device}, {s.get('dtype')}, this run)"
    flop_src = f"{MEASURED} (explorer.flops: torch FLOP counter on the meta device)"
    scale = e.scale if e.scale != "custom" else "custom"
    stats: dict[str, Any] = {
        "nfe": {"value": result.nfe, "unit": f"UNet evaluations ({'CFG: 2 per step' if cfg else '1 per step'})",
                "source": f"{MEASURED} (UNet forward hook; a CFG batch of 2 counts 2)"},
        "steps": {"value": s.get("steps"), "unit": "denoising steps", "source": "setting"},
        "guidance": {"value": f"{s.get('min_guidance'):g} -> {s.get('max_guidance'):g}", "unit": "CFG ramp",
                     "source": "setting"},
        "size": {"value": f"{s.get('width')}x{s.get('height')}x{s.get('num_frames')}", "unit": "px x frames",
                 "source": "setting"},
        "tflops_nfe_gen": {"value": tf.get("gen"), "unit": f"TFLOPs per NFE ({scale}, at this size)",
                           "source": flop_src if tf.get("gen") is not None else tf.get("gen_error", "unavailable")},
        "tflops_nfe_full": {"value": tf.get("full"), "unit": "TFLOPs per NFE (full scale, paper size)",
                            "source": (flop_src + (f"; {tf['full_note']}" if tf.get("full_note") else ""))
                            if tf.get("full") is not None else tf.get("full_error", "unavailable")},
        "tflops_nfe_paper": {"value": tf.get("paper"), "unit": "TFLOPs per NFE (paper)",
                             "source": f"{PAPER} (Table 2)" if tf.get("paper") is not None else "not in the paper"},
        "tflops_clip_gen": {"value": result.nfe * tf["gen"] if tf.get("gen") is not None else None,
                            "unit": f"TFLOPs per clip ({scale}) = NFE x per-NFE",
                            "source": f"{MEASURED} (this run's NFE x counted per-NFE)"},
        "tflops_clip_full": {"value": result.nfe * tf["full"] if tf.get("full") is not None else None,
                             "unit": "TFLOPs per clip at full scale = this run's NFE x full per-NFE",
                             "source": f"{ESTIMATE} (assumes the same NFE at full scale)"},
        "wall_s": {"value": result.seconds, "unit": "s, whole pipeline call", "source": run_src},
        "unet_s": {"value": result.unet_seconds, "unit": "s inside UNet forwards", "source": run_src},
        "time_split": {"value": time_split(result.breakdown), "unit": "s per part of the call",
                       "source": f"{run_src}; the pipeline's steps timed one by one"},
        "wall_over_unet": {"value": result.seconds / result.unet_seconds if result.unet_seconds else None,
                           "unit": "x the time inside UNet forwards", "source": run_src},
        "peak_memory": {"value": result.peak_memory, "unit": "MB", "source": f"{MEASURED} ("
                           f"{s.get('peak_memory', 'peak memory')})"},
        "seed": {"value": result.seed, "unit": "", "source": "setting (CPU generator)"},
    }
    if e.kind == "trained" and e.scale in ("tiny", "micro") and record is not None:
        from explorer.pipeline import training_summary

        extra = record.extra or {}
        base = f"Base: {extra['base']}. " if extra.get("base") else ""
        stats["model"] = {"value": (f"{e.scale} model trained here ({record.width}x{record.height}, "
                                    f"{record.frames} frames; synthetic camera motion over 11 photographs): "
                                    f"{training_summary(extra.get('training'))}. {base}"
                                    "The real SVD loads with --base."),
                          "unit": "", "source": "setting (the stage folder's stage.json)"}
    metrics = read_metrics(Path(e.folder)) if evaluated and e.folder and e.kind == "trained" else None
    if metrics is not None and metrics.get("ok"):
        for name in ("fvd_proxy", "first_frame_psnr", "consecutive_psnr", "motion_spearman"):
            if metrics.get(name) is not None:
                stats[name] = {"value": metrics[name], "unit": f"on {metrics.get('clips')} test clips",
                               "source": f"{MEASURED} (scripts/evaluate.py, metrics.json)"}
    return stats


TIME_PARTS = {"unet": "UNet", "vae_decode": "VAE decode", "image_encoder": "image encoder",
              "vae_encode": "VAE encode", "postprocess": "postprocess", "other": "other"}


def time_split(breakdown: dict[str, float]) -> str | None:
    """'UNet 0.081 · VAE decode 0.150 · ...' (seconds), largest parts first; None when nothing was timed."""
    parts = [(breakdown.get(k, 0.0), name) for k, name in TIME_PARTS.items() if k in breakdown]
    if not parts:
        return None
    return " · ".join(f"{name} {sec:.3f}" for sec, name in sorted(parts, key=lambda p: -p[0]))


def prune_outputs(out_dir: Path, max_files: int = MAX_OUTPUT_FILES, keep: Sequence[str | Path] = ()) -> int:
    """Bound the output folder: delete the oldest files (by mtime) beyond ``max_files``; the bundled examples
    (``example-*``) and the paths in ``keep`` (this request's outputs) are never deleted. Returns how many
    files were deleted. A deleted video that is still in the result cache is regenerated on its next use."""
    kept = {str(Path(k)) for k in keep if k}
    files = []
    for f in Path(out_dir).iterdir() if Path(out_dir).is_dir() else []:
        if f.is_file() and not f.name.startswith("example-") and str(f) not in kept:
            try:
                files.append((f.stat().st_mtime_ns, f))
            except OSError:
                continue
    excess = len(files) + len(kept) - max(0, int(max_files))
    removed = 0
    for _, f in sorted(files)[: max(0, excess)]:
        try:
            f.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def compose(outcomes: Sequence[StageOutcome], out_dir: Path, fps: int, tag: str) -> tuple[str | None, str | None]:
    """The labelled side-by-side mp4 (H.264, yuv420p) and the frame-grid PNG of the finished stages."""
    from explorer.video import frame_grid, side_by_side

    done = [o for o in outcomes if o.frames is not None]
    if not done:
        return None, None
    labels = []
    for o in done:
        nfe = o.stats.get("nfe", {}).get("value")
        tf = o.stats.get("tflops_nfe_full", {}).get("value")
        extra = f" | {nfe} NFE" + (f" | {tf:.2f} TF/NFE full" if isinstance(tf, (int, float)) else "")
        flag = " (random weights)" if o.kind == "placeholder" else (" (not finetuned)" if NOT_FINETUNED in (
            o.note or "") else "")
        labels.append(f"{o.key}{flag}{extra}")
    sbs = out_dir / f"side_by_side-{tag}.mp4"
    grid = out_dir / f"frame_grid-{tag}.png"
    side_by_side([o.frames for o in done], labels, sbs, fps=fps, min_height=256,
                 columns=min(len(done), 4))
    frame_grid([o.frames for o in done], grid, labels=labels)
    return str(sbs), str(grid)


__all__ = ["MAX_OUTPUT_FILES", "MAX_QUEUE", "MAX_STAGES", "MAX_STEPS", "Common", "ResultCache", "StageOutcome",
           "StageRequest", "cached_outcome", "compose", "identity_of", "outcome_stats", "prune_outputs", "run_stage",
           "stage_settings", "validate_common"]
