"""Rewrite stage folders' own UNet weights in another storage dtype (float16 halves the download).

    python scripts/store_weights.py --stages adversarial-1step,temporal-multiscale --dtype float16
    python scripts/store_weights.py --shared vae            # checkpoints/_shared/vae, used by several stages

Loading is unchanged (weights are cast to the requested dtype, float32 by default, on load). Re-run
scripts/evaluate.py afterwards so that metrics.json describes the shipped weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explorer.pipeline import STORAGE_DTYPES, StageLoadError, store_shared_as, store_weights_as
from explorer.stages import resolve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default="", help="comma list of slugs (aliases allowed)")
    p.add_argument("--shared", default="", help="comma list of <checkpoints>/_shared components (vae, image_encoder)")
    p.add_argument("--dtype", default="float16", choices=sorted(STORAGE_DTYPES))
    p.add_argument("--checkpoints", default="checkpoints")
    args = p.parse_args(argv)
    if not args.stages and not args.shared:
        p.error("name --stages and/or --shared")
    status = 0
    for name in [s.strip() for s in args.shared.split(",") if s.strip()]:
        try:
            before, after = store_shared_as(args.checkpoints, name, args.dtype)
            print(f"_shared/{name}: {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB ({args.dtype})")
        except (ValueError, StageLoadError) as exc:
            print(f"error: _shared/{name}: {exc}", file=sys.stderr)
            status = 2
    for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
        try:
            slug = resolve(name)
            sizes = store_weights_as(Path(args.checkpoints) / slug, args.dtype)
        except (ValueError, StageLoadError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            status = 2
            continue
        for comp, (before, after) in sizes.items():
            print(f"{slug}/{comp}: {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB ({args.dtype})")
        if not sizes:
            print(f"{slug}: no own weights to rewrite (referenced from another folder)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
