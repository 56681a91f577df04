"""Generate one image with several stages from the same seed: one mp4 per stage and a labelled side-by-side mp4.

    python scripts/compare.py --image photo.jpg                              # svd vs mobilevd
    python scripts/compare.py --image photo.jpg --stages svd,lowres-ft,mobilevd --seed 3 --out runs/compare --json
    python scripts/compare.py --image photo.jpg --stages lowres-ft --steps lowres-ft=1

Videos are H.264 / yuv420p (they play in browsers); ``frames.png`` is a frame grid of the same clips. Each stage is
sampled with its own defaults (steps, guidance, resolution) from ``stage.json`` unless overridden.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explorer import stages as registry
from explorer.compare import compare_stages
from explorer.pipeline import ImageInputError, StageLoadError

ROOT = Path(__file__).resolve().parents[1]


def parse_steps(items: list[str]) -> dict[str, int]:
    steps: dict[str, int] = {}
    for item in items:
        slug, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"--steps takes STAGE=N with N >= 1, got {item!r}")
        steps[registry.resolve(slug)] = int(value)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--image", required=True, help="conditioning image (any format PIL reads)")
    parser.add_argument("--stages", default="svd,mobilevd", help="comma-separated slugs (aliases allowed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                        help="folder of stage folders, or a hub repo id OWNER/NAME (see scripts/publish.py)")
    parser.add_argument("--steps", action="append", default=[], metavar="STAGE=N", help="override a stage's steps")
    parser.add_argument("--motion-bucket", type=int, default=None)
    parser.add_argument("--fps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        result = compare_stages(args.image, stages, args.checkpoints, args.out, seed=args.seed,
                                steps=parse_steps(args.steps), fps=args.fps, motion_bucket_id=args.motion_bucket)
    except (ValueError, FileNotFoundError, ImageInputError, StageLoadError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for row in result["stages"]:
            print(f"{row['stage']:>20}: {row['nfe']:3d} NFE  {row['seconds']:7.2f} s  -> {row['video']}")
        print(f"side by side: {result['side_by_side']}\nframe grid:   {result['frame_grid']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
