"""Generate one conditioning image with several stages from the same seeded noise, and write the videos.

Used by ``scripts/compare.py``. The generation itself is the app's comparison engine
(``explorer.serving.run_stage``: the same settings, checks, seeds and numbers as the Compare tab); this module
adds only the CLI's file layout (``<out>/<stage>.mp4``, ``side_by_side.mp4``, ``frames.png``). Every stage starts
from the same seed, so differences between the videos are differences between the stages. Stages are loaded one
at a time (only one pipeline in memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explorer import stages as registry
from explorer.pipeline import StageLoadError
from explorer.serving import Common, ResultCache, StageCatalog, StageRequest, check_image, run_stage
from explorer.video import frame_grid, side_by_side


def stage_label(run: dict[str, Any]) -> str:
    """The label a stage's clip carries in the side-by-side video."""
    return f"{run['stage']}  {run['nfe']} NFE  {run['seconds']:.1f} s"


def missing_stages(checkpoints: str | Path, slugs: Sequence[str]) -> list[str]:
    """The slugs that have no finished stage folder (``stage.json``) under ``checkpoints``."""
    return [s for s in slugs if not (Path(checkpoints) / s / "stage.json").is_file()]


def _value(stats: dict[str, Any], name: str) -> Any:
    return (stats.get(name) or {}).get("value")


def compare_stages(image: Any, stages: Sequence[str], checkpoints: str | Path, out: str | Path, seed: int = 0,
                   steps: dict[str, int] | None = None, fps: int = 7, min_height: int = 256,
                   motion_bucket_id: int | None = None, noise_aug_strength: float | None = None,
                   guidance: tuple[float, float] | None = None) -> dict[str, Any]:
    """Generate with each stage, write ``<out>/<stage>.mp4``, a labelled ``side_by_side.mp4`` and a frame grid.

    Raises ``FileNotFoundError`` naming a missing stage folder before any work is done,
    ``explorer.pipeline.ImageInputError`` for an unusable image, ``StageLoadError`` for a stage that cannot be
    loaded and ``ValueError`` for settings out of range or a failed generation.
    """
    slugs = [registry.resolve(s) for s in stages]
    catalog = StageCatalog(checkpoints, placeholders="off", max_full=1)  # a folder, or a hub repo's snapshot
    root, out = catalog.checkpoints, Path(out)
    if missing := missing_stages(root, slugs):
        raise FileNotFoundError(f"no stage folder for {', '.join(missing)} under {root} "
                                f"(train it with scripts/build_path.py)")
    checked = check_image(image)  # decoded and validated once, for every stage
    common = Common(seed=int(seed), fps=int(fps))  # None: the engine's defaults (bucket 127, augmentation 0.02)
    if motion_bucket_id is not None:
        common.motion_bucket_id = int(motion_bucket_id)
    if noise_aug_strength is not None:
        common.noise_aug_strength = float(noise_aug_strength)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    clips: list[Any] = []
    for slug in slugs:
        low, high = guidance if guidance else (None, None)
        req = StageRequest(slug, steps=(steps or {}).get(slug), min_guidance=low, max_guidance=high)
        outcome = run_stage(catalog, None, ResultCache(size=0), out, checked, req, common)
        entry = catalog.entry(slug)
        catalog.unload(slug)
        if outcome.status == "unavailable":
            raise StageLoadError(f"{slug}: {outcome.reason}")
        if outcome.status != "done":
            raise ValueError(f"{slug}: {outcome.reason}")
        video = Path(outcome.video).replace(out / f"{slug}.mp4")  # type: ignore[arg-type]
        record, stats = entry.record, outcome.stats
        runs.append({"stage": record.slug, "nfe": int(_value(stats, "nfe")), "steps": int(_value(stats, "steps")),
                     "seconds": round(float(_value(stats, "wall_s")), 3),
                     "unet_seconds": round(float(_value(stats, "unet_s")), 3),
                     "load_seconds": round(float(entry.load_seconds or 0.0), 3),
                     "width": record.width, "height": record.height, "video": str(video)})
        clips.append(outcome.frames)
    labels = [stage_label(r) for r in runs]
    sbs = side_by_side(clips, labels, out / "side_by_side.mp4", fps=fps, min_height=min_height)
    grid = out / "frames.png"
    frame_grid(clips, grid, labels=[r["stage"] for r in runs])
    return {"seed": seed, "image": str(image) if isinstance(image, (str, Path)) else "<image>",
            "stages": runs, "side_by_side": str(sbs), "frame_grid": str(grid)}


__all__ = ["compare_stages", "missing_stages", "stage_label"]
