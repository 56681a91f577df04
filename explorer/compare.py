"""Generate one conditioning image with several stages from the same seeded noise, and write the videos.

Used by ``scripts/compare.py`` and ``scripts/bench_generate.py``. Every stage starts from the same seed
(``explorer.pipeline.initial_latents``), so differences between the videos are differences between the stages.
Stages are loaded one at a time (only one pipeline in memory).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer import stages as registry
from explorer.pipeline import GenerationResult, generate, load_image, load_stage
from explorer.video import frame_grid, side_by_side, write_mp4


@dataclass
class StageRun:
    """One stage's generation and where its video was written."""

    stage: str
    nfe: int
    steps: int
    seconds: float
    unet_seconds: float
    load_seconds: float
    width: int
    height: int
    frames: np.ndarray = field(repr=False)
    video: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "nfe": self.nfe, "steps": self.steps, "seconds": round(self.seconds, 3),
                "unet_seconds": round(self.unet_seconds, 3), "load_seconds": round(self.load_seconds, 3),
                "width": self.width, "height": self.height, "video": self.video}


def stage_label(run: StageRun) -> str:
    return f"{run.stage}  {run.nfe} NFE  {run.seconds:.1f} s"


def run_stage(folder: str | Path, image: Any, seed: int, steps: int | None = None,
              **settings: Any) -> tuple[StageRun, GenerationResult]:
    """Load the stage folder and generate ``image`` once (its default steps unless ``steps``)."""
    t0 = time.perf_counter()
    pipe, record = load_stage(folder)
    load_s = time.perf_counter() - t0
    result = generate(pipe, image, seed=seed, steps=steps, **settings)
    run = StageRun(stage=record.slug, nfe=result.nfe, steps=result.settings["steps"],
                   seconds=result.seconds, unet_seconds=result.unet_seconds, load_seconds=load_s,
                   width=record.width, height=record.height, frames=result.frames)
    return run, result


def missing_stages(checkpoints: str | Path, slugs: Sequence[str]) -> list[str]:
    """The slugs that have no finished stage folder (``stage.json``) under ``checkpoints``."""
    return [s for s in slugs if not (Path(checkpoints) / s / "stage.json").is_file()]


def compare_stages(image: Any, stages: Sequence[str], checkpoints: str | Path, out: str | Path, seed: int = 0,
                   steps: dict[str, int] | None = None, fps: int = 7, min_height: int = 256,
                   **settings: Any) -> dict[str, Any]:
    """Generate with each stage, write ``<out>/<stage>.mp4``, a labelled ``side_by_side.mp4`` and a frame grid.

    Raises ``FileNotFoundError`` naming a missing stage folder before any work is done, and
    ``explorer.pipeline.ImageInputError`` for an unusable image.
    """
    from explorer.hub import resolve_checkpoints

    root, out = resolve_checkpoints(checkpoints), Path(out)  # a folder, or a hub repo's snapshot
    slugs = [registry.resolve(s) for s in stages]
    if missing := missing_stages(root, slugs):
        raise FileNotFoundError(f"no stage folder for {', '.join(missing)} under {root} "
                                f"(train it with scripts/build_path.py)")
    picture = load_image(image)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[StageRun] = []
    for slug in slugs:
        run, _ = run_stage(root / slug, picture, seed, (steps or {}).get(slug), fps=fps, **settings)
        run.video = str(write_mp4(run.frames, out / f"{slug}.mp4", fps=fps))
        runs.append(run)
    labels = [stage_label(r) for r in runs]
    sbs = side_by_side([r.frames for r in runs], labels, out / "side_by_side.mp4", fps=fps, min_height=min_height)
    grid = out / "frames.png"
    frame_grid([r.frames for r in runs], grid, labels=[r.stage for r in runs])
    return {"seed": seed, "image": str(image) if isinstance(image, (str, Path)) else "<image>",
            "stages": [r.to_dict() for r in runs], "side_by_side": str(sbs), "frame_grid": str(grid)}


__all__ = ["StageRun", "compare_stages", "missing_stages", "run_stage", "stage_label"]
