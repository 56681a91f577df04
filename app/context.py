"""Everything the tabs share: the stage catalog, the FLOPs service, the result cache, the output folder."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from explorer.serving import FlopsService, ResultCache, StageCatalog, WorkLock


@dataclass
class AppContext:
    catalog: StageCatalog
    flops: FlopsService
    results: ResultCache
    out_dir: Path
    checkpoints: Path
    examples: list[tuple[str, str]] = field(default_factory=list)  # (name, png path)
    upload_roots: list[Path] | None = None  # set by the UI: image paths in requests must lie inside these
    max_output_files: int = 256  # the output folder is pruned to this many files after each comparison
    stop: threading.Event = field(default_factory=threading.Event)
    warm_thread: threading.Thread | None = None
    # stage key -> (UNet seconds per NFE, the rest of the call in s), measured by this session's runs (ETA)
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        checkpoints: str | Path | None = None,
        base: str | None = None,
        placeholders: str = "auto",
        placeholder_scale: str = "tiny",
        cache_dir: str | Path | None = None,
        device: str | None = None,
    ) -> AppContext:
        """Discover stages (JSON only, fast); nothing heavy is loaded here."""
        work = WorkLock()
        catalog = StageCatalog(checkpoints, base, placeholders, placeholder_scale, device=device, work=work)
        out_dir = Path(tempfile.mkdtemp(prefix="mobilevd-app-"))
        ctx = cls(catalog, FlopsService(work, cache_dir), ResultCache(), out_dir, catalog.checkpoints)
        ctx.examples = _examples(out_dir)
        return ctx

    def start(self, preload: bool = True, warm: bool = True, delay: float = 0.0) -> None:
        """Background work after the UI exists: load stages, then count the FLOPs every tab shows. ``delay``
        lets the web server come up first on a small CPU."""

        def run() -> None:
            if self.stop.wait(delay):
                return
            if preload:
                self.catalog.start_background()
                if warm:
                    self.catalog.wait()  # loading first: the Compare tab needs it sooner than the FLOPs tabs
            if warm:
                self.flops.warm(stop=self.stop)

        if self.warm_thread is None and (preload or warm):
            self.warm_thread = threading.Thread(target=run, name="app-background", daemon=True)
            self.warm_thread.start()

    def close(self) -> None:
        self.stop.set()
        self.flops.close()


def _examples(out_dir: Path) -> list[tuple[str, str]]:
    """The bundled TEST photographs (never training ones) as small PNGs for the example gallery."""
    from PIL import Image

    from explorer.data import test_images

    out = []
    try:
        images = test_images()
    except Exception:  # noqa: BLE001 - no examples is not fatal
        return out
    for name, arr in images.items():
        img = Image.fromarray(arr)
        img.thumbnail((640, 640), Image.Resampling.LANCZOS)
        path = out_dir / f"example-{name}.jpg"
        img.save(path, quality=92)
        out.append((name, str(path)))
    return out
