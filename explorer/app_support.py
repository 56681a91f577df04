"""UI-free support for the Gradio app (app/): which stages exist, loading them, cached FLOPs, cached generation,
and defensive readers of the records other tools write (metrics, latency, ablations, gate histories).

Why a separate module: the UI must hold no model logic, and everything here is testable without gradio.

Sources. Every number the app shows carries one of three labels: ``measured here`` (produced on this machine
by this code: generation timings, the FLOP counter, scripts/evaluate.py, scripts/benchmark.py), ``paper``
(MobileVD, arXiv 2412.07583, the table named) or ``estimate`` (derived by a stated rule, e.g. a full-scale
per-clip cost from this run's NFE). Accounting of every FLOPs number: per UNet evaluation (NFE), batch 1,
UNet only, FLOPs = 2 x MAC; per clip = NFE x per-NFE, where a classifier-free-guidance batch of 2 counts 2 NFE.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from explorer import stages as registry

ROOT = Path(__file__).resolve().parents[1]
MEASURED = "measured here"
PAPER = "paper"
ESTIMATE = "estimate"
PLACEHOLDER_NOTE = "untrained (random weights) — development placeholder"
NOT_FINETUNED = "not finetuned"
ACCOUNTING = (
    "per NFE (one UNet evaluation), batch 1, UNet only (no VAE, no image encoder), FLOPs = 2 x MAC; "
    "per clip = NFE x per-NFE, a classifier-free-guidance batch of 2 counts 2 NFE"
)
MIN_INPUT_SIDE = 32  # px: below this the crop/upscale is meaningless
MAX_STAGES = 10  # stages per comparison (result cards)
MAX_STEPS = 500  # denoising steps per stage and request
MAX_QUEUE = 16  # requests waiting in the queue; more are refused ("queue is full") so memory stays bounded
MAX_OUTPUT_FILES = 256  # files kept in the app's output folder (oldest deleted first; examples are kept)
GATES_FILES = ("gates.json", "gates_history.json", "gate_history.json")
# Random-weight builds seed torch's *global* CPU generator; two threads building at once (the background loader
# and a request) would interleave their draws and give different weights on every start. One build at a time,
# each from a fixed seed, makes placeholders (hence their videos) identical across requests and restarts.
SEEDED_BUILD = threading.Lock()

Kind = Literal["trained", "placeholder", "base", "zero-shot"]
Status = Literal["pending", "loading", "ready", "unavailable"]


# ----------------------------------------------------------------------------------------------------------
# Small helpers


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


def shorten(text: Any, limit: int = 80) -> str:
    """``text`` for an error message: at most ``limit`` characters (a request can carry megabytes)."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def safe_name(text: str) -> str:
    """A file-name-safe version of a stage key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def code_fingerprint() -> str:
    """Hash of the library code that decides FLOPs (and of torch/diffusers versions): the disk-cache key."""
    import diffusers
    import torch

    h = hashlib.sha256(f"{torch.__version__}|{diffusers.__version__}".encode())
    base = ROOT / "explorer"
    for rel in ("flops.py", "architecture.py", "models.py", "stages.py", "components.py"):
        p = base / rel
        if p.is_file():
            h.update(p.read_bytes())
    for p in sorted((base / "transforms").glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class RequestCancelled(Exception):
    """Raised from a generation's progress callback when its request was cancelled: stops the denoising loop
    at the next step so the model lock and memory are released (nothing is cached or written)."""


class WorkLock:
    """One lock for the torch work of this process (generation; FLOP counting only when it cannot run in its own
    process, see FlopsService), with foreground priority.

    Why: on a small CPU two generations at once are slower than one after the other, background work must yield
    to users, and torch's FLOP counter installs process-global module hooks that a concurrent model run would
    mix into its records.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiting = 0
        self._cond = threading.Condition()
        self._interactive = 0  # quick interactive work in flight elsewhere (FLOP counts in their own process)

    @contextmanager
    def interactive(self) -> Iterator[None]:
        """Mark a short interactive job (a FLOP count) as running: generations pause at their next denoising
        step until it ends (``yield_to_interactive``), so that on a small CPU the count gets the cores and
        answers in seconds instead of sharing them with a 50-step run."""
        with self._cond:
            self._interactive += 1
        try:
            yield
        finally:
            with self._cond:
                self._interactive -= 1
                self._cond.notify_all()

    def yield_to_interactive(self, max_wait: float = 20.0) -> float:
        """Called by a generation between denoising steps: wait (at most ``max_wait`` s) while interactive work
        runs; returns the seconds waited."""
        start = time.perf_counter()
        with self._cond:
            while self._interactive and time.perf_counter() - start < max_wait:
                self._cond.wait(timeout=0.25)
        return time.perf_counter() - start

    @contextmanager
    def foreground(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
        try:
            with self._lock:
                yield
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()

    def busy(self) -> bool:
        """Whether another thread holds the lock right now (a generation is running)."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    @contextmanager
    def background(self) -> Iterator[None]:
        with self._cond:
            while self._waiting:
                self._cond.wait(timeout=0.5)
        with self._lock:
            yield


# ----------------------------------------------------------------------------------------------------------
# Images


@dataclass
class CheckedImage:
    """A validated conditioning image (RGB) and what was done to it."""

    image: Any  # PIL.Image.Image, RGB
    digest: str  # sha256 of the decoded pixels: the cache key (independent of the file format)
    notes: list[str]
    original_size: tuple[int, int]
    original_mode: str


def image_path_of(value: Any) -> Any:
    """The file path inside a gradio payload (dict / FileData / str), or the value itself (array, PIL...)."""
    if value is None:
        return None
    if isinstance(value, dict):
        for key in ("path", "name"):
            if value.get(key):
                return value[key]
        if isinstance(value.get("url"), str) and value["url"].startswith("data:"):
            import base64

            try:
                return base64.b64decode(value["url"].split(",", 1)[1])
            except (ValueError, IndexError):
                return b""
        return None
    path = getattr(value, "path", None)
    return path if isinstance(path, str) else value


def confine_path(src: Any, roots: Sequence[str | Path] | None) -> Any:
    """``src`` unchanged when it is not a file path or lies inside one of ``roots``; otherwise refused.

    Requests name files by path (gradio's upload cache); a crafted request could name any file on the server
    (``/etc/passwd``, ``../../secret.png``). Paths are resolved (symlinks, ``..``) before the check."""
    from explorer.pipeline import ImageInputError

    if roots is None or not isinstance(src, (str, os.PathLike)):
        return src
    try:
        real = Path(src).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        raise ImageInputError("file is not inside the app's upload folder") from None
    for root in roots:
        try:
            real.relative_to(Path(root).resolve())
            return src
        except ValueError:
            continue
    raise ImageInputError("file is not inside the app's upload folder (upload the image instead of naming a "
                          "server path)")


def check_image(value: Any, roots: Sequence[str | Path] | None = None) -> CheckedImage:
    """Validate an uploaded image; raises ``explorer.pipeline.ImageInputError`` with a readable message.

    Refused: no image, not an image, corrupt/truncated, above the pixel limit (checked from the header), smaller
    than ``MIN_INPUT_SIDE`` px on a side. Accepted with a note: grayscale (replicated to RGB), transparency
    (composited over white), 16-bit, palette, EXIF rotation.
    """
    from PIL import Image

    from explorer.pipeline import MAX_INPUT_PIXELS, ImageInputError, load_image

    src = image_path_of(value)
    if src is None or (isinstance(src, str) and not src):
        raise ImageInputError("no image: upload one or pick an example")
    src = confine_path(src, roots)
    mode, size = "?", (0, 0)
    try:  # header only, to describe the original (load_image decodes and validates)
        if isinstance(src, (str, os.PathLike)):
            with Image.open(src) as im:
                mode, size = im.mode, im.size
        elif isinstance(src, (bytes, bytearray)):
            import io

            with Image.open(io.BytesIO(bytes(src))) as im:
                mode, size = im.mode, im.size
        elif isinstance(src, Image.Image):
            mode, size = src.mode, src.size
        elif isinstance(src, np.ndarray):
            size = (int(src.shape[1]), int(src.shape[0])) if src.ndim >= 2 else (0, 0)
            mode = {2: "L"}.get(src.ndim, "RGBA" if src.ndim == 3 and src.shape[-1] == 4 else "RGB")
    except Exception:  # noqa: BLE001 - load_image below gives the user-facing reason
        pass
    try:
        img = load_image(src, max_pixels=MAX_INPUT_PIXELS)
    except ImageInputError as exc:  # name the file, not the server's upload path
        if isinstance(src, (str, os.PathLike)):
            raise ImageInputError(str(exc).replace(str(src), Path(src).name)) from None
        raise
    w, h = img.size
    if min(w, h) < MIN_INPUT_SIDE:
        raise ImageInputError(f"image is too small: {w}x{h} px; need at least {MIN_INPUT_SIDE} px on each side")
    notes: list[str] = []
    if mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        notes.append(f"grayscale image (mode {mode}): replicated to 3 channels")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "A" in img.getbands()):
        notes.append(f"image has transparency (mode {mode}): composited over white")
    if mode == "P":
        notes.append("palette image: converted to RGB")
    if size != (0, 0) and size not in ((w, h), (h, w)):
        notes.append(f"decoded size {w}x{h} differs from the header {size[0]}x{size[1]}")
    elif size == (h, w) and w != h:
        notes.append("EXIF orientation applied")
    digest = hashlib.sha256(f"{w}x{h}".encode() + img.tobytes()).hexdigest()
    return CheckedImage(img, digest, notes, (w, h), mode)


def upscale_note(checked: CheckedImage, width: int, height: int) -> str | None:
    """A note when the image is enlarged a lot to cover the stage's size (detail is invented, not kept)."""
    w, h = checked.original_size
    factor = max(width / max(w, 1), height / max(h, 1))
    return f"upscaled {factor:.1f}x to cover {width}x{height}" if factor > 4 else None


# ----------------------------------------------------------------------------------------------------------
# Stage catalog


@dataclass
class Entry:
    """One model the app can run: a trained stage folder, a dev placeholder, or a --base variant."""

    key: str  # unique in the app: a registry slug, or 'base/<variant>'
    slug: str  # the registry stage whose architecture and paper numbers it follows
    title: str
    kind: Kind
    scale: str = "tiny"  # 'full' | 'tiny' | 'micro' | 'custom'
    status: Status = "pending"
    reason: str = ""
    folder: str | None = None
    note: str = ""
    load_seconds: float | None = None
    record: Any = None  # explorer.pipeline.StageRecord
    params: dict[str, Any] = field(default_factory=dict)  # zero-shot knobs (n, heuristic, r)

    @property
    def label(self) -> str:
        alias = " (mobilevd)" if self.slug == "channel-funnels" and not self.key.startswith("base/") else ""
        return f"{self.key}{alias}"

    def summary(self) -> dict[str, Any]:
        rec = self.record
        return {
            "key": self.key, "slug": self.slug, "title": self.title, "kind": self.kind, "scale": self.scale,
            "status": self.status, "reason": self.reason, "folder": self.folder, "note": self.note,
            "size": f"{rec.width}x{rec.height}" if rec is not None else None,
            "steps": rec.steps if rec is not None else None,
            "load_seconds": self.load_seconds,
        }


BASE_VARIANTS: tuple[tuple[str, str, str], ...] = (
    # key suffix, registry slug, title
    ("svd", "svd", "base SVD (pretrained weights)"),
    ("svd-512", "svd-512", "base SVD sampled at low resolution"),
    ("optimized-xattn", "optimized-xattn", "base + optimized cross-attention (exact rewrite)"),
    ("prune-zs", "temporal-pruning", "base + zero-shot temporal pruning"),
    ("funnels-zs", "channel-funnels", "base + zero-shot channel funnels (CSI)"),
)
HEURISTICS: tuple[str, ...] = ("blend", "structural")


def zero_shot_kept(unet: Any, n: int, heuristic: str = "blend") -> list[int]:
    """Kept temporal blocks for zero-shot pruning without trained gates (documented in docs/app.md).

    ``blend``: rank blocks by the weight the pretrained blend gives the temporal branch, (1 - a_i) with
    a_i = sigmoid(mix_factor) (``explorer.transforms.temporal_gates.temporal_weights``): a block the pretrained
    model barely mixes in is the cheapest to delete. Ties (e.g. untrained mixers, all equal) are broken by the
    structural order. ``structural``: ``default_kept_blocks`` (temporal attention at the finest levels first).
    """
    from explorer.transforms.temporal_gates import default_kept_blocks, temporal_blocks, temporal_weights

    infos = temporal_blocks(unet)
    n = max(0, min(int(n), len(infos)))
    if heuristic == "structural":
        return sorted(default_kept_blocks(unet, n))
    if heuristic != "blend":
        raise ValueError(f"unknown heuristic {heuristic!r}; expected one of {HEURISTICS}")
    rank = _structural_rank(unet)
    weights = {i: float(w.detach().float()) for i, w in temporal_weights(unet).items()}
    ranked = sorted(weights, key=lambda i: (-round(weights[i], 6), rank.get(i, i)))
    return sorted(ranked[:n])


def _structural_rank(unet: Any) -> dict[int, int]:
    """Rank of every block in the structural heuristic's order (0 = kept first)."""
    from explorer.transforms.temporal_gates import default_kept_blocks, temporal_blocks

    total = len(temporal_blocks(unet))
    rank: dict[int, int] = {}
    previous: set[int] = set()
    for n in range(1, total + 1):
        now = set(default_kept_blocks(unet, n))
        for i in now - previous:
            rank[i] = n - 1
        previous = now
    return rank


def pruned_fraction() -> float:
    """The temporal-pruning stage's pruned fraction (0.7, as the paper: 11 of SVD's 38 blocks kept)."""
    for t in registry.get_stage("temporal-pruning").transforms:
        if t.name == "temporal_pruning" and t.params.get("pruned_fraction") is not None:
            return float(t.params["pruned_fraction"])
    return 0.7


def default_kept(total: int) -> int:
    """Default number of temporal blocks kept out of ``total``: ``kept_count(total, pruned_fraction())``
    (38 -> 11, the tiny UNet's 33 -> 10)."""
    return registry.kept_count(int(total), pruned_fraction())


_BLOCK_COUNTS: dict[str, int] = {}


def temporal_block_count(scale: str = "full") -> int:
    """Temporal blocks of the unpruned UNet at ``scale`` (full and micro: 38; tiny: 33), built on the meta
    device once per scale."""
    if scale not in _BLOCK_COUNTS:
        from explorer.models import build_unet
        from explorer.transforms.temporal_gates import num_temporal_blocks

        _BLOCK_COUNTS[scale] = num_temporal_blocks(build_unet(scale, "meta"))
    return _BLOCK_COUNTS[scale]


def scale_for_count(total: int) -> str | None:
    """The named scale whose UNet has ``total`` temporal blocks (full preferred over micro: same layout)."""
    from explorer.models import UNET_CONFIGS

    for scale in ("full", "tiny", *sorted(UNET_CONFIGS)):
        if scale in UNET_CONFIGS and temporal_block_count(scale) == total:
            return scale
    return None


class StageCatalog:
    """Which stages exist and their pipelines, loaded lazily or in the background.

    Precedence per registry slug: a stage folder ``<checkpoints>/<slug>/`` (or an alias folder) -> that folder
    (``trained``; broken -> unavailable with the reason, never silently replaced); else, when placeholders are
    on, a random tiny stage built by the transforms (``placeholder``, clearly labelled); else unavailable.
    ``placeholders='auto'`` turns placeholders on only when no stage folder exists at all. ``base`` (hub id or
    local folder of a full SVD pipeline) adds the ``base/*`` entries, marked not finetuned where they are.
    """

    def __init__(
        self,
        checkpoints: str | Path | None = None,
        base: str | None = None,
        placeholders: str = "auto",
        placeholder_scale: str = "tiny",
        device: str | None = None,
        work: WorkLock | None = None,
        max_full: int = 2,
    ) -> None:
        import torch

        from explorer.hub import resolve_checkpoints

        # a local folder, or a hub repo (OWNER/NAME) fetched to the cache; an unusable value raises CheckpointsError
        self.checkpoints = resolve_checkpoints(checkpoints) if checkpoints else ROOT / "checkpoints"
        self.base = base
        self.placeholder_scale = placeholder_scale
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.work = work or WorkLock()
        self.max_full = max(1, max_full)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._meta_lock = threading.Lock()
        self._shared: dict[str, Any] | None = None  # placeholder components
        self._base_pipe: Any = None
        self._base_record: Any = None
        self._derived: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._thread: threading.Thread | None = None
        self.placeholders = self._placeholders_on(placeholders)
        self.discover()

    # -- discovery (JSON only: fast)
    def _placeholders_on(self, mode: str) -> bool:
        if mode not in ("auto", "all", "off"):
            raise ValueError(f"placeholders must be 'auto', 'all' or 'off', got {mode!r}")
        if mode != "auto":
            return mode == "all"
        return not any(self._folder_for(slug) for slug in registry.SLUGS)

    def _folder_for(self, slug: str) -> Path | None:
        stage = registry.get_stage(slug)
        for name in (slug, *stage.aliases):
            folder = self.checkpoints / name
            if folder.is_dir() and ((folder / "stage.json").is_file() or (folder / "model_index.json").is_file()):
                return folder
        return None

    def discover(self) -> None:
        """(Re)build the entry list from the checkpoints folder, the placeholder mode and ``base``."""
        from explorer.pipeline import StageLoadError, StageRecord, read_stage_record

        entries: OrderedDict[str, Entry] = OrderedDict()
        for stage in registry.STAGES:
            folder = self._folder_for(stage.slug)
            if folder is not None:
                entry = Entry(stage.slug, stage.slug, stage.title, "trained", folder=str(folder))
                try:
                    rec = read_stage_record(folder)
                    entry.record, entry.scale = rec, rec.scale
                    if registry.resolve(rec.slug) != stage.slug:
                        entry.status, entry.reason = "unavailable", (
                            f"{folder}/stage.json names stage {rec.slug!r}, not {stage.slug!r}")
                except (StageLoadError, ValueError) as exc:
                    entry.status, entry.reason = "unavailable", f"broken stage folder: {exc}"
            elif self.placeholders:
                rec = StageRecord.from_stage(stage.slug, self.placeholder_scale, extra={"placeholder": True})
                entry = Entry(stage.slug, stage.slug, stage.title, "placeholder", scale=self.placeholder_scale,
                              note=PLACEHOLDER_NOTE, record=rec)
            else:
                entry = Entry(stage.slug, stage.slug, stage.title, "trained", status="unavailable",
                              reason=f"no stage folder {self.checkpoints / stage.slug} (not trained yet)")
            old = self.entries.get(stage.slug)
            if old is not None and old.status in ("ready", "loading") and old.folder == entry.folder:
                entry = old
            entries[stage.slug] = entry
        if self.base:
            for suffix, slug, title in BASE_VARIANTS:
                key = f"base/{suffix}"
                note = NOT_FINETUNED if suffix in ("svd-512", "prune-zs", "funnels-zs") else ""
                if suffix == "optimized-xattn":
                    note = "exact rewrite of the base (no training needed)"
                old = self.entries.get(key)
                entries[key] = old if old is not None else Entry(
                    key, slug, title, "zero-shot" if suffix.endswith("-zs") else "base", scale="full",
                    note=note, folder=str(self.base))
        self.entries = entries

    def keys(self, ready_only: bool = False) -> list[str]:
        return [k for k, e in self.entries.items() if not ready_only or e.status == "ready"]

    def entry(self, key: str) -> Entry:
        key = key.strip()
        if key not in self.entries:
            try:
                key = registry.resolve(key)
            except ValueError:
                pass
        if key not in self.entries:
            raise KeyError(f"unknown stage {shorten(repr(key), 60)}; known: {', '.join(self.entries)}")
        return self.entries[key]

    def status_rows(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.entries.values()]

    def all_settled(self) -> bool:
        """Nothing is loading or waiting for the background loader (full-scale folders load on first use)."""
        return all(e.status in ("ready", "unavailable") or (e.status == "pending" and e.kind == "trained"
                                                             and e.scale == "full") for e in self.entries.values())

    # -- background loading
    def start_background(self) -> None:
        """Load every non-full-scale entry (and the --base pipeline) in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return

        def run() -> None:
            if self.base:
                try:
                    self._load_base()
                except Exception:  # noqa: BLE001 - recorded on the entries
                    pass
            for key, e in list(self.entries.items()):
                if e.status == "pending" and e.kind in ("trained", "placeholder") and e.scale != "full":
                    try:
                        self.pipeline(key, background=True)
                    except Exception:  # noqa: BLE001 - recorded on the entry
                        pass

        self._thread = threading.Thread(target=run, name="stage-loader", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background loader (tests); True when it finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _entry_lock(self, key: str) -> threading.Lock:
        with self._meta_lock:
            return self._locks.setdefault(key, threading.Lock())

    def pipeline(self, key: str, params: dict[str, Any] | None = None, background: bool = False) -> tuple[Any, Any]:
        """(pipeline, StageRecord) of an entry, loading it on first use. Raises ``RuntimeError`` with the reason
        when the entry is unavailable."""
        e = self.entry(key)
        if e.key.startswith("base/"):
            return self._base_variant(e, params or {})
        with self._entry_lock(e.key):
            if e.status == "unavailable":
                raise RuntimeError(f"{e.key} is unavailable: {e.reason}")
            if e.key in self._pipes:
                self._pipes.move_to_end(e.key)
                return self._pipes[e.key], e.record
            e.status = "loading"
            start = time.perf_counter()
            try:
                pipe = self._load_placeholder(e) if e.kind == "placeholder" else self._load_folder(e)
            except Exception as exc:  # noqa: BLE001 - any defect is a reason shown to the user
                e.status, e.reason = "unavailable", _reason(exc)
                raise RuntimeError(f"{e.key} is unavailable: {e.reason}") from exc
            e.load_seconds = time.perf_counter() - start
            e.status = "ready"
            self._pipes[e.key] = pipe
            self._evict_full()
            return pipe, e.record

    def is_loaded(self, key: str) -> bool:
        """Whether the entry's pipeline is in memory (``pipeline`` would return at once)."""
        return key in self._pipes

    def _evict_full(self) -> None:
        full = [k for k in self._pipes if self.entries.get(k) is not None and self.entries[k].scale == "full"]
        while len(full) > self.max_full:
            victim = full.pop(0)
            self._pipes.pop(victim, None)
            self.entries[victim].status = "pending"  # loads again on next use

    def _load_folder(self, e: Entry) -> Any:
        from explorer.pipeline import load_stage

        pipe, record = load_stage(e.folder, device=self.device, torch_dtype=self.dtype)
        e.record, e.scale = record, record.scale
        return pipe

    def _shared_components(self) -> dict[str, Any]:
        from explorer.components import build_components

        with self._meta_lock:
            if self._shared is None:
                with SEEDED_BUILD:
                    comps = build_components(self.placeholder_scale, seed=0, device=self.device, dtype=self.dtype)
                comps.pop("unet")
                self._shared = comps
            return self._shared

    def _load_placeholder(self, e: Entry) -> Any:
        import torch
        from diffusers import StableVideoDiffusionPipeline

        from explorer.architecture import build_stage_unet
        from explorer.components import build_scheduler

        shared = self._shared_components()
        with SEEDED_BUILD, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # transforms that add layers draw from the global generator too
            unet, info = build_stage_unet(e.slug, self.placeholder_scale, device="cpu", seed=0)
        if self.device != "cpu" or self.dtype != torch.float32:  # .to() with nothing to do makes diffusers warn
            unet = unet.to(device=self.device, dtype=self.dtype)
        unet = unet.eval()
        record = copy.deepcopy(e.record)
        record.transforms = tuple(registry.Transform.from_dict(t) for t in info["transforms"])
        e.record = record
        pipe = StableVideoDiffusionPipeline(
            unet=unet, vae=shared["vae"], image_encoder=shared["image_encoder"],
            feature_extractor=shared["feature_extractor"], scheduler=build_scheduler(),
        )
        pipe.set_progress_bar_config(disable=True)
        pipe._mobilevd_record = record  # read by explorer.pipeline.generate for defaults and labels
        return pipe

    # -- --base
    def _load_base(self) -> tuple[Any, Any]:
        from explorer.pipeline import load_stage

        with self._entry_lock("base"):
            if self._base_pipe is not None:
                return self._base_pipe, self._base_record
            base_entries = [e for e in self.entries.values() if e.key.startswith("base/")]
            if any(e.status == "unavailable" for e in base_entries):
                raise RuntimeError(f"the base pipeline is unavailable: {base_entries[0].reason}")
            for e in base_entries:
                e.status = "loading"
            start = time.perf_counter()
            try:
                pipe, record = load_stage(self.base, device=self.device, torch_dtype=self.dtype)
            except Exception as exc:  # noqa: BLE001
                for e in base_entries:
                    e.status, e.reason = "unavailable", f"cannot load --base {self.base}: {_reason(exc)}"
                raise RuntimeError(base_entries[0].reason) from exc
            seconds = time.perf_counter() - start
            self._base_pipe, self._base_record = pipe, record
            for e in base_entries:
                e.status, e.scale, e.load_seconds = "ready", record.scale, seconds
                e.record = self._variant_record(e, {})
            return pipe, record

    def base_temporal_blocks(self) -> int:
        """Temporal blocks of the --base UNet (38 for a full SVD pipeline): from the loaded UNet, else from the
        base folder's stage record / UNet config without loading weights, else full SVD's count."""
        from explorer.models import UNET_CONFIGS, build_unet
        from explorer.transforms.temporal_gates import num_temporal_blocks

        if self._base_pipe is not None:
            return num_temporal_blocks(self._base_pipe.unet)
        folder = Path(str(self.base)) if self.base else None
        if folder is not None and folder.is_dir():
            rec, _ = read_json(folder / "stage.json")
            scale = rec.get("scale") if isinstance(rec, dict) else None
            if scale in UNET_CONFIGS:
                return temporal_block_count(str(scale))
            cfg, _ = read_json(folder / "unet" / "config.json")
            if isinstance(cfg, dict):
                try:
                    from diffusers import UNetSpatioTemporalConditionModel

                    init = UNetSpatioTemporalConditionModel.extract_init_dict(cfg)[0]
                    return num_temporal_blocks(build_unet(init, "meta"))
                except Exception:  # noqa: BLE001 - fall back to full SVD's count
                    pass
        return temporal_block_count("full")

    def _variant_size(self, slug: str) -> tuple[int, int]:
        rec = self._base_record
        if rec.scale in ("full", "tiny"):
            return registry.get_stage(slug).size(rec.scale)
        return rec.width, rec.height  # custom/micro bases: keep the folder's own size

    def _variant_transforms(self, e: Entry, params: dict[str, Any]) -> list[registry.Transform]:
        suffix = e.key.split("/", 1)[1]
        if suffix in ("svd", "svd-512"):
            return []
        chain = [registry.Transform("optimized_cross_attention")]
        if suffix == "prune-zs":
            from explorer.transforms.temporal_gates import num_temporal_blocks

            total = num_temporal_blocks(self._base_pipe.unet)
            n = int(params.get("n", default_kept(total)))
            if not 1 <= n <= total:
                raise ValueError(f"zero-shot pruning keeps 1..{total} temporal blocks of this base, got {n}")
            heuristic = str(params.get("heuristic", "blend"))
            kept = zero_shot_kept(self._base_pipe.unet, n, heuristic)
            chain.append(registry.Transform("temporal_pruning", {"kept": n, "total": total, "blocks": kept}))
        elif suffix == "funnels-zs":
            r = float(params.get("r", 0.5))
            if not 0 < r <= 1:
                raise ValueError(f"fun-factor r must be in (0, 1], got {r}")
            chain.append(registry.Transform("channel_funnels", {"fun_factor": r, "init": "csi", "merged": True}))
        return chain

    def _variant_record(self, e: Entry, params: dict[str, Any]) -> Any:
        from explorer.pipeline import StageRecord

        base = self._base_record
        width, height = self._variant_size("svd" if e.key == "base/svd" else "svd-512")
        transforms = tuple(self._variant_transforms(e, params))
        extra = {"base": str(self.base), "variant": e.key, "params": dict(params)}
        if e.kind == "zero-shot":
            extra["note"] = NOT_FINETUNED
        return StageRecord(
            slug=e.slug, parent=None, scale=base.scale, transforms=transforms, width=width, height=height,
            frames=base.frames, steps=base.steps, min_guidance=base.min_guidance, max_guidance=base.max_guidance,
            extra=extra,
        )

    def _base_variant(self, e: Entry, params: dict[str, Any]) -> tuple[Any, Any]:
        from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

        from explorer.transforms import apply_transforms

        base, _ = self._load_base()
        record = self._variant_record(e, params)
        if record.transforms:
            tkey = json.dumps([t.to_dict() for t in record.transforms], sort_keys=True)
            with self._entry_lock("derived"):
                if tkey in self._derived:
                    self._derived.move_to_end(tkey)
                    unet = self._derived[tkey][0]
                else:
                    unet = apply_transforms(copy.deepcopy(base.unet), list(record.transforms)).eval()
                    self._derived[tkey] = (unet, record)
                    while len(self._derived) > (1 if self._base_record.scale == "full" else 4):
                        self._derived.popitem(last=False)
        else:
            unet = base.unet
        pipe = StableVideoDiffusionPipeline(
            unet=unet, vae=base.vae, image_encoder=base.image_encoder, feature_extractor=base.feature_extractor,
            scheduler=EulerDiscreteScheduler.from_config(base.scheduler.config),
        )
        pipe.set_progress_bar_config(disable=True)
        pipe._mobilevd_record = record
        e.params = dict(params)
        return pipe, record

    # -- zero-shot re-pruning of a tiny stage (Temporal gates tab)
    def repruned(self, source_key: str, kept: Sequence[int]) -> tuple[Any, Any]:
        """``source_key``'s UNet (unpruned, e.g. temporal-multiscale) with only ``kept`` temporal blocks, not
        finetuned; shares the source's VAE and image encoder."""
        from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

        from explorer.transforms import apply_transforms
        from explorer.transforms.temporal_gates import num_temporal_blocks

        src_pipe, src_rec = self.pipeline(source_key)
        blocks = sorted(int(i) for i in kept)
        total = num_temporal_blocks(src_pipe.unet)
        if any(not 0 <= i < total for i in blocks):
            raise ValueError(f"{source_key} has {total} temporal blocks; cannot keep blocks {blocks}")
        t = registry.Transform("temporal_pruning", {"kept": len(blocks), "total": total, "blocks": blocks})
        tkey = f"reprune|{source_key}|{blocks}"
        with self._entry_lock("derived"):
            if tkey in self._derived:
                unet, record = self._derived[tkey]
            else:
                unet = apply_transforms(copy.deepcopy(src_pipe.unet), [t]).eval()
                record = copy.deepcopy(src_rec)
                record.slug = "temporal-pruning"
                record.transforms = tuple(src_rec.transforms) + (t,)
                record.extra = {**dict(src_rec.extra), "note": NOT_FINETUNED, "repruned_from": source_key}
                self._derived[tkey] = (unet, record)
                while len(self._derived) > 4:
                    self._derived.popitem(last=False)
        pipe = StableVideoDiffusionPipeline(
            unet=unet, vae=src_pipe.vae, image_encoder=src_pipe.image_encoder,
            feature_extractor=src_pipe.feature_extractor,
            scheduler=EulerDiscreteScheduler.from_config(src_pipe.scheduler.config),
        )
        pipe.set_progress_bar_config(disable=True)
        pipe._mobilevd_record = record
        return pipe, record

    def unet_config_of(self, e: Entry) -> dict[str, Any] | None:
        """The base UNet config (before transforms) an entry was built from, for FLOP counting."""
        from explorer.models import UNET_CONFIGS, unet_config

        if e.kind == "placeholder":
            return unet_config(self.placeholder_scale)
        folder = None
        if e.key.startswith("base/"):
            if self._base_pipe is None:
                return None
            return dict(self._base_pipe.unet.config) if self._base_record.scale not in UNET_CONFIGS else None
        folder = Path(e.folder) if e.folder else None
        if folder is None:
            return None
        data, _ = read_json(folder / "unet" / "config.json")
        if isinstance(data, dict) and e.record is not None and e.record.components.get("unet"):
            data, _ = read_json(folder / e.record.components["unet"] / "config.json")
        return data if isinstance(data, dict) else None

    def vae_factor(self, e: Entry) -> int:
        from explorer.models import VAE_FACTOR

        if e.scale in VAE_FACTOR:
            return VAE_FACTOR[e.scale]
        pipe = self._pipes.get(e.key) or self._base_pipe
        return int(getattr(pipe, "vae_scale_factor", 8)) if pipe is not None else 8


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 600 else text[:600] + " ..."


# ----------------------------------------------------------------------------------------------------------
# FLOPs (cached in memory and on disk)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MOBILEVD_CACHE_DIR") or ROOT / "cache" / "app")


def _count_stage(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``stage_flops(...).to_dict()`` (a top-level function, so that it runs in the counting process)."""
    from explorer.flops import stage_flops

    return stage_flops(**kwargs).to_dict()


def _count_blocks(slug: str, scale: str, width: int, height: int, frames: int) -> dict[str, Any]:
    from explorer.flops import temporal_block_costs

    floor, costs = temporal_block_costs(slug, scale, width, height, frames)
    return {"slug": slug, "scale": scale, "width": width, "height": height, "frames": frames,
            "floor": floor, "costs": costs}


def _counting_process_init() -> None:
    import torch

    torch.set_num_threads(1)  # meta-device counting needs no threads; leave the cores to generation


class FlopsService:
    """``explorer.flops`` with a memory + disk cache keyed by the arguments and the library code's hash.

    Counting runs in a separate process (``isolated``, the default): torch's FLOP counter installs process-global
    module hooks, so in this process it would have to wait for every generation (one work lock), and a FLOP count
    asked for during a 50-step ``svd`` comparison took minutes. The counting process starts on first use and takes
    one count at a time; if it cannot be started, counting falls back to this process under the work lock.
    """

    def __init__(self, work: WorkLock | None = None, cache_dir: str | Path | None = None,
                 isolated: bool = True) -> None:
        self.work = work or WorkLock()
        self.isolated = isolated
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self.cache_dir: Path | None = Path(cache_dir) if cache_dir else default_cache_dir()
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._code = code_fingerprint()
        try:
            (self.cache_dir / "flops").mkdir(parents=True, exist_ok=True)
        except OSError:
            self.cache_dir = None  # read-only disk: memory cache only

    def _key(self, kind: str, **kwargs: Any) -> str:
        blob = json.dumps({"kind": kind, "code": self._code, **kwargs}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _cached(self, key: str, compute: tuple[Callable[..., Any], tuple[Any, ...]], background: bool) -> Any:
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        path = self.cache_dir / "flops" / f"{key}.json" if self.cache_dir else None
        if path is not None:
            data, _ = read_json(path)
            if data is not None:
                with self._lock:
                    self._memo[key] = data
                return data
        data = self._run(compute, background)
        with self._lock:
            self._memo[key] = data
        if path is not None:
            try:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data), encoding="utf-8")
                tmp.replace(path)
            except OSError:
                pass
        return data

    def _executor(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_counting_process_init)
            return self._pool

    def _run(self, compute: tuple[Callable[..., Any], tuple[Any, ...]], background: bool) -> Any:
        """``fn(*args)`` in the counting process (or here, under the work lock, when not isolated)."""
        fn, args = compute
        if self.isolated:
            from concurrent.futures.process import BrokenProcessPool

            try:
                future = self._executor().submit(fn, *args)
            except (RuntimeError, OSError):  # shut down, or processes cannot be started here
                self.isolated = False
            else:
                try:  # a user waits (foreground): running generations pause a step for the count
                    with contextlib.nullcontext() if background else self.work.interactive():
                        return future.result()  # the counting function's own errors arrive here unchanged
                except BrokenProcessPool:
                    self.isolated = False  # the process died: count in this one from now on
        with self.work.background() if background else self.work.foreground():
            return fn(*args)

    def close(self) -> None:
        """Stop the counting process (the app calls it on shutdown)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def stage(
        self,
        slug: str,
        scale: str = "full",
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
        kept_blocks: Sequence[int] | None = None,
        transforms: Sequence[registry.Transform] | None = None,
        unet_config: dict[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        """``explorer.flops.stage_flops(...).to_dict()``, cached."""
        slug = registry.resolve(slug)
        tlist = [t.to_dict() for t in transforms] if transforms is not None else None
        kept = sorted(int(i) for i in kept_blocks) if kept_blocks is not None else None
        key = self._key("stage", slug=slug, scale=scale, width=width, height=height, frames=frames, kept=kept,
                        transforms=tlist, unet_config=unet_config)

        kwargs = {"slug": slug, "scale": scale, "width": width, "height": height, "frames": frames,
                  "kept_blocks": kept, "transforms": list(transforms) if transforms is not None else None,
                  "unet_config": unet_config}
        return self._cached(key, (_count_stage, (kwargs,)), background)

    def block_costs(
        self, slug: str = "temporal-pruning", scale: str = "full", width: int | None = None,
        height: int | None = None, frames: int | None = None, background: bool = False,
    ) -> dict[str, Any]:
        """Cost of each temporal block (additive) and the floor with all pruned: {'floor', 'costs', ...}."""
        stage = registry.get_stage(slug)
        w0, h0 = stage.size(scale)
        width, height, frames = width or w0, height or h0, frames or stage.frames
        key = self._key("blocks", slug=stage.slug, scale=scale, width=width, height=height, frames=frames)
        return self._cached(key, (_count_blocks, (stage.slug, scale, width, height, frames)), background)

    def funnels(self, r: float, scale: str = "full", background: bool = False) -> dict[str, Any]:
        """FLOPs of the channel-funnels stage architecture at fun-factor ``r`` (its paper resolution)."""
        chain = []
        for t in registry.architecture_transforms("channel-funnels"):
            if t.name == "channel_funnels":
                t = registry.Transform(t.name, {**t.params, "fun_factor": round(float(r), 4)})
            chain.append(t)
        return self.stage("channel-funnels", scale, transforms=chain, background=background)

    def cached_only(self, slug: str, scale: str) -> dict[str, Any] | None:
        """The default-size result of a stage if it is already cached (no computation)."""
        key = self._key("stage", slug=registry.resolve(slug), scale=scale, width=None, height=None, frames=None,
                        kept=None, transforms=None, unet_config=None)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        if self.cache_dir is not None:
            data, _ = read_json(self.cache_dir / "flops" / f"{key}.json")
            return data
        return None

    def warm(self, scales: Sequence[str] = ("full", "tiny"), stop: threading.Event | None = None) -> None:
        """Compute the default-size FLOPs of every stage (background priority), then the gates/funnel curves."""
        jobs: list[Callable[[], Any]] = []
        for scale in scales:
            for slug in registry.SLUGS:
                jobs.append(lambda s=slug, sc=scale: self.stage(s, sc, background=True))
        jobs.append(lambda: self.block_costs("temporal-pruning", "full", background=True))
        for r in (0.25, 0.5, 0.75, 1.0):
            jobs.append(lambda r=r: self.funnels(r, "full", background=True))
        for job in jobs:
            if stop is not None and stop.is_set():
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - a failing count shows up when the user asks for it
                traceback.print_exc()


def entry_flops(
    flops: FlopsService, catalog: StageCatalog, e: Entry, width: int, height: int, frames: int,
    record: Any = None,
) -> dict[str, Any]:
    """Per-NFE TFLOPs of an entry: at the size it ran (its own scale) and at full scale (the stage's paper size).

    Returns {'gen': tflops|None, 'full': tflops|None, 'paper': tflops|None, 'gen_error'/'full_error': str}."""
    from explorer.models import VAE_FACTOR

    rec = record if record is not None else e.record
    extra = rec.extra if rec is not None and isinstance(rec.extra, dict) else {}
    zero_shot = e.kind == "zero-shot" or bool(extra.get("repruned_from"))
    # the slug only picks default sizes and the pruning-range logic; the architecture is the recorded transforms
    slug = registry.resolve(rec.slug) if rec is not None and extra.get("repruned_from") else e.slug
    out: dict[str, Any] = {"gen": None, "full": None,
                           "paper": None if zero_shot else registry.get_stage(slug).paper.tflops}
    if zero_shot and e.slug == "channel-funnels":
        slug = "optimized-xattn"  # funnels on the base, without the (trained) pruning and multiscaling
    transforms = list(rec.transforms) if rec is not None else None
    scale = e.scale
    if scale not in VAE_FACTOR:  # custom bases: count with their own config and the matching VAE factor
        scale = "full" if catalog.vae_factor(e) == 8 else "tiny"
    try:
        out["gen"] = flops.stage(slug, scale, width, height, frames, transforms=transforms,
                                 unet_config=catalog.unet_config_of(e))["tflops"]
    except Exception as exc:  # noqa: BLE001
        out["gen_error"] = _reason(exc)
    full_transforms, note = transforms_for_scale(transforms, "full")
    try:
        out["full"] = flops.stage(slug, "full", transforms=full_transforms)["tflops"]
        if note:
            out["full_note"] = note
    except Exception as exc:  # noqa: BLE001
        out["full_error"] = _reason(exc)
    return out


def transforms_for_scale(
    transforms: Sequence[registry.Transform] | None, scale: str
) -> tuple[list[registry.Transform] | None, str]:
    """A stage's recorded transforms rebuilt for another scale's UNet, and what was changed (or "").

    Pruning learned on the tiny UNet names its kept blocks by index among tiny's 33 temporal blocks; full SVD has
    38, and tiny has no level-0 transformers, so the learned choice has no counterpart at full scale. The one rule
    used everywhere (FLOPs tab, README, cards, ``python -m explorer.flops``): at another scale a pruned stage keeps
    the documented default blocks (``round(0.3 x blocks)``, ``default_kept_blocks``) for its pruned fraction."""
    if transforms is None:
        return None, ""
    target = temporal_layout(scale)
    out, note = [], ""
    for t in transforms:
        total = t.params.get("total")
        if t.name == "temporal_pruning" and total is not None and int(total) != len(target):
            t = registry.Transform(t.name, {k: v for k, v in t.params.items() if k not in ("total", "kept", "blocks")})
            kept = registry.kept_count(len(target), float(t.params.get("pruned_fraction", 0.7)))
            note = (f"{scale} scale: the documented default {kept} of {len(target)} temporal blocks (the blocks "
                    f"learned on the {int(total)}-block tiny UNet have no full-scale counterpart)")
        out.append(t)
    return out, note


# ----------------------------------------------------------------------------------------------------------
# Generation with a result cache


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


def identity_of(e: Entry, record: Any) -> str:
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


def _outcome_key(cache: ResultCache, e: Entry, record: Any, checked: CheckedImage, req: StageRequest,
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
    flops: FlopsService,
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
        return StageOutcome(e.key, label, e.kind, e.note, "unavailable", reason=_reason(exc).split(": ", 1)[-1])
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
        return StageOutcome(e.key, label, e.kind, note, "failed", reason=f"generation failed: {_reason(exc)}")
    video = out_dir / f"{safe_name(e.key)}-{ckey[:12]}.mp4"
    try:
        write_mp4(result.frames, video, fps=settings["fps"])
    except Exception as exc:  # noqa: BLE001
        return StageOutcome(e.key, label, e.kind, note, "failed", reason=f"video encoding failed: {_reason(exc)}")
    tf = entry_flops(flops, catalog, e, settings["width"], settings["height"], settings["num_frames"], record)
    # a model derived on the fly (re-pruned, zero-shot knobs) is not the stage folder evaluate.py measured
    stats = outcome_stats(e, record, result, tf, catalog, evaluated=pipe_record is None and not req.params)
    out = StageOutcome(e.key, label, e.kind, note, "done", video=str(video), frames=result.frames, stats=stats)
    cache.put(ckey, out)
    return out


def outcome_stats(e: Entry, record: Any, result: Any, tf: dict[str, Any], catalog: StageCatalog,
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
        "peak_memory": {"value": result.peak_memory, "unit": "MB", "source": f"{MEASURED} ("
                           f"{s.get('peak_memory', 'peak memory')})"},
        "seed": {"value": result.seed, "unit": "", "source": "setting (CPU generator)"},
    }
    if e.kind == "trained" and e.scale in ("tiny", "micro") and record is not None:
        from explorer.pipeline import training_summary

        stats["model"] = {"value": (f"{e.scale} model trained here ({record.width}x{record.height}, "
                                    f"{record.frames} frames; synthetic camera motion over 11 photographs): "
                                    f"{training_summary((record.extra or {}).get('training'))}. The real SVD "
                                    "loads with --base."),
                          "unit": "", "source": "setting (the stage folder's stage.json)"}
    metrics = read_metrics(Path(e.folder)) if evaluated and e.folder and e.kind == "trained" else None
    if metrics is not None and metrics.get("ok"):
        for name in ("fvd_proxy", "first_frame_psnr", "motion_spearman"):
            if metrics.get(name) is not None:
                stats[name] = {"value": metrics[name], "unit": f"on {metrics.get('clips')} test clips",
                               "source": f"{MEASURED} (scripts/evaluate.py, metrics.json)"}
    return stats


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


# ----------------------------------------------------------------------------------------------------------
# Records written by other tools (read defensively: a bad file is a reason, never an exception)


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``<stage folder>/metrics.json`` -> {'ok', 'stage', 'nfe', 'clips', 'fvd_proxy', 'first_frame_psnr',
    'motion_spearman', 'fvd', 'baselines', 'reason', 'file'} (None when absent)."""
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
    for name in ("nfe", "clips", "fvd_proxy", "first_frame_psnr", "motion_spearman", "fvd"):
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
            "source": str(rec.get("source") or f"{MEASURED} ({path.name})"), "file": path.name,
        })
    return rows, problems


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
        row.update({"fvd_proxy": p.get("fvd_proxy"), "first_frame_psnr": p.get("first_frame_psnr"),
                    "motion_spearman": p.get("motion_spearman"), "tflops": p.get("tflops"),
                    "source": p.get("source")})
    return list(rows.values())


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


def temporal_layout(scale: str = "full") -> list[dict[str, Any]]:
    """The temporal blocks (index, kind, level, side, path, channels) of the unpruned architecture at ``scale``
    (meta device): 38 for full SVD and micro, 33 for tiny. Cached per scale (a copy is returned)."""
    return copy.deepcopy(_temporal_layout(scale))


@functools.lru_cache(maxsize=8)
def _temporal_layout(scale: str) -> list[dict[str, Any]]:
    from explorer.architecture import build_stage_unet
    from explorer.transforms.temporal_gates import temporal_blocks

    unet, _ = build_stage_unet("temporal-multiscale", scale, device="meta")
    return [b.to_dict() for b in temporal_blocks(unet)]


def structural_order(scale: str = "full") -> list[int]:
    """Block indices in the order the documented default heuristic keeps them (first = kept first)."""
    from explorer.architecture import build_stage_unet

    unet, _ = build_stage_unet("temporal-multiscale", scale, device="meta")
    rank = _structural_rank(unet)
    return sorted(rank, key=lambda i: rank[i])


def attention_widths(r: float, scale: str = "full") -> list[dict[str, Any]]:
    """Per attention layer: kind, heads, head dim and q/k/v/o widths before (temporal-pruning) and after
    channel funnels at fun-factor ``r`` (the merged architecture built on the meta device)."""
    from explorer.architecture import build_stage_unet
    from explorer.transforms.funnels import attention_targets

    before, _ = build_stage_unet("temporal-pruning", scale, device="meta")
    chain = []
    for t in registry.architecture_transforms("channel-funnels"):
        if t.name == "channel_funnels":
            t = registry.Transform(t.name, {**t.params, "fun_factor": float(r)})
        chain.append(t)
    after, _ = build_stage_unet("channel-funnels", scale, device="meta", transforms=chain)

    def widths(unet: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for path, attn, kind in attention_targets(unet):
            heads = int(attn.heads)
            qk = int(attn.to_q.out_features) if getattr(attn, "to_q", None) is not None else None
            v = int(attn.to_v.out_features)
            out[path] = {"kind": kind, "heads": heads, "qk": qk, "v": v, "head_dim_v": v // heads,
                         "head_dim_qk": (qk // heads) if qk else None, "in": int(attn.to_v.in_features)}
        return out

    wb, wa = widths(before), widths(after)
    rows = []
    for path, b in wb.items():
        a = wa.get(path, {})
        rows.append({"layer": path, "kind": b["kind"], "heads": b["heads"],
                     "head_dim_before": b["head_dim_v"], "head_dim_after": a.get("head_dim_v"),
                     "qk_before": b["qk"], "qk_after": a.get("qk"), "vo_before": b["v"], "vo_after": a.get("v")})
    return rows


__all__ = [
    "RequestCancelled", "MAX_QUEUE",
    "ACCOUNTING", "MEASURED", "PAPER", "ESTIMATE", "PLACEHOLDER_NOTE", "NOT_FINETUNED", "CheckedImage", "Common",
    "Entry", "FlopsService", "GatesRecord", "ResultCache", "StageCatalog", "StageOutcome", "StageRequest",
    "WorkLock", "attention_widths", "check_image", "compose", "default_kept", "entry_flops", "pruned_fraction",
    "ABLATION_TABLES", "ablation_comparison", "read_ablations", "read_gates", "read_json", "read_latency",
    "read_metrics", "run_stage", "scale_for_count", "transforms_for_scale",
    "structural_order", "temporal_block_count", "temporal_layout", "zero_shot_kept",
]
