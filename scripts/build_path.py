"""Build the whole tiny compression path in order (skips finished stages, resumes interrupted ones).

    python scripts/build_path.py                      # the real tiny path -> checkpoints/
    python scripts/build_path.py --quick --checkpoints /tmp/q --runs /tmp/qr   # micro model, seconds per stage
    python scripts/build_path.py --until lowres-ft    # stop after a stage
    python scripts/build_path.py --only vae,svd-pretrain
"""

from __future__ import annotations

import argparse
import json

from explorer.training.path import ORDER, Plan, build_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="micro model, a few steps per stage")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--until", choices=ORDER)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a Plan field, e.g. --set adv_steps=600 (repeatable)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    try:
        plan.override(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    if only and (bad := [s for s in only if s not in ORDER]):
        parser.error(f"unknown steps {bad}; steps: {', '.join(ORDER)}")
    report = build_path(plan, args.checkpoints, args.runs, only=only, until=args.until,
                        progress=not args.no_progress)
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
