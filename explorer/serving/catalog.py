"""Which stages the app can run (trained folders, development placeholders, ``--base`` variants) and their
pipelines, loaded lazily or in the background."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from explorer import stages as registry
from explorer.records import read_json
from explorer.serving.inputs import shorten
from explorer.serving.work import WorkLock
from explorer.transforms.pruning_rules import default_kept, temporal_block_count, zero_shot_kept

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_NOTE = "untrained (random weights) — development placeholder"
NOT_FINETUNED = "not finetuned"
# Random-weight builds seed torch's *global* CPU generator; two threads building at once (the background loader
# and a request) would interleave their draws and give different weights on every start. One build at a time,
# each from a fixed seed, makes placeholders (hence their videos) identical across requests and restarts.
SEEDED_BUILD = threading.Lock()

Kind = Literal["trained", "placeholder", "base", "zero-shot"]
Status = Literal["pending", "loading", "ready", "unavailable"]


@dataclass
class CatalogEntry:
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
        self.entries: OrderedDict[str, CatalogEntry] = OrderedDict()
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

        entries: OrderedDict[str, CatalogEntry] = OrderedDict()
        for stage in registry.STAGES:
            folder = self._folder_for(stage.slug)
            if folder is not None:
                entry = CatalogEntry(stage.slug, stage.slug, stage.title, "trained", folder=str(folder))
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
                entry = CatalogEntry(stage.slug, stage.slug, stage.title, "placeholder", scale=self.placeholder_scale,
                              note=PLACEHOLDER_NOTE, record=rec)
            else:
                entry = CatalogEntry(stage.slug, stage.slug, stage.title, "trained", status="unavailable",
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
                entries[key] = old if old is not None else CatalogEntry(
                    key, slug, title, "zero-shot" if suffix.endswith("-zs") else "base", scale="full",
                    note=note, folder=str(self.base))
        self.entries = entries

    def keys(self, ready_only: bool = False) -> list[str]:
        return [k for k, e in self.entries.items() if not ready_only or e.status == "ready"]

    def entry(self, key: str) -> CatalogEntry:
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
                e.status, e.reason = "unavailable", reason_of(exc)
                raise RuntimeError(f"{e.key} is unavailable: {e.reason}") from exc
            e.load_seconds = time.perf_counter() - start
            e.status = "ready"
            self._pipes[e.key] = pipe
            self._evict_full()
            return pipe, e.record

    def unload(self, key: str) -> None:
        """Drop an entry's pipeline from memory (it loads again on next use): one stage at a time in the CLI."""
        e = self.entry(key)
        with self._entry_lock(e.key):
            if self._pipes.pop(e.key, None) is not None:
                e.status = "pending"

    def is_loaded(self, key: str) -> bool:
        """Whether the entry's pipeline is in memory (``pipeline`` would return at once)."""
        return key in self._pipes

    def _evict_full(self) -> None:
        full = [k for k in self._pipes if self.entries.get(k) is not None and self.entries[k].scale == "full"]
        while len(full) > self.max_full:
            victim = full.pop(0)
            self._pipes.pop(victim, None)
            self.entries[victim].status = "pending"  # loads again on next use

    def _load_folder(self, e: CatalogEntry) -> Any:
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

    def _load_placeholder(self, e: CatalogEntry) -> Any:
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
                    e.status, e.reason = "unavailable", f"cannot load --base {self.base}: {reason_of(exc)}"
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

    def _variant_transforms(self, e: CatalogEntry, params: dict[str, Any]) -> list[registry.Transform]:
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

    def _variant_record(self, e: CatalogEntry, params: dict[str, Any]) -> Any:
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

    def _base_variant(self, e: CatalogEntry, params: dict[str, Any]) -> tuple[Any, Any]:
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

    def unet_config_of(self, e: CatalogEntry) -> dict[str, Any] | None:
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

    def vae_factor(self, e: CatalogEntry) -> int:
        from explorer.models import VAE_FACTOR

        if e.scale in VAE_FACTOR:
            return VAE_FACTOR[e.scale]
        pipe = self._pipes.get(e.key) or self._base_pipe
        return int(getattr(pipe, "vae_scale_factor", 8)) if pipe is not None else 8


def reason_of(exc: BaseException) -> str:
    """An exception as one line a user can read: a KeyError's message without the quotes ``str`` wraps it in."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0].strip() or type(exc).__name__
    else:
        text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 600 else text[:600] + " ..."


__all__ = ["BASE_VARIANTS", "NOT_FINETUNED", "PLACEHOLDER_NOTE", "SEEDED_BUILD", "CatalogEntry", "StageCatalog",
           "reason_of"]
