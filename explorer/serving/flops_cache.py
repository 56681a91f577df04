"""FLOP counts for the app: ``explorer.flops`` behind a memory + disk cache, counted in a process of their own,
and the per-NFE numbers of one catalog entry (at the size it ran and at full scale, by the one pruning rule).

Accounting of every number: per UNet evaluation (NFE), batch 1, UNet only, FLOPs = 2 x MAC (``ACCOUNTING``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from explorer import stages as registry
from explorer.records import read_json
from explorer.serving.catalog import CatalogEntry, StageCatalog, reason_of
from explorer.serving.work import WorkLock
from explorer.transforms.funnels import funnel_chain
from explorer.transforms.pruning_rules import transforms_for_scale

EXPLORER = Path(__file__).resolve().parents[1]
ROOT = EXPLORER.parent


def code_fingerprint() -> str:
    """Hash of the library code that decides FLOPs (and of torch/diffusers versions): the disk-cache key."""
    import diffusers
    import torch

    h = hashlib.sha256(f"{torch.__version__}|{diffusers.__version__}".encode())
    base = EXPLORER
    for rel in ("flops.py", "architecture.py", "models.py", "stages.py", "components.py"):
        p = base / rel
        if p.is_file():
            h.update(p.read_bytes())
    for p in sorted((base / "transforms").glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


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
        return self.stage("channel-funnels", scale, transforms=funnel_chain(r), background=background)

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
    flops: FlopsService, catalog: StageCatalog, e: CatalogEntry, width: int, height: int, frames: int,
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
        out["gen_error"] = reason_of(exc)
    full_transforms, note = transforms_for_scale(transforms, "full")
    try:
        out["full"] = flops.stage(slug, "full", transforms=full_transforms)["tflops"]
        if note:
            out["full_note"] = note
    except Exception as exc:  # noqa: BLE001
        out["full_error"] = reason_of(exc)
    return out


__all__ = ["FlopsService", "code_fingerprint", "default_cache_dir", "entry_flops"]
