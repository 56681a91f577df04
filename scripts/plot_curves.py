"""Learning curves of denoising runs as a PNG and a markdown table (the rows behind the plot). Thin CLI.

    python scripts/plot_curves.py runs/svd-pretrain-small runs/svd-pretrain --png docs/media/curves.png
    python scripts/plot_curves.py checkpoints/_partial/svd-pretrain-small        # a committed snapshot
"""

from __future__ import annotations

import argparse

from explorer.training.curves import curve_table, plot_curves, read_curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders (or snapshots) with curve.jsonl, in training order")
    parser.add_argument("--png", help="write the plot here")
    args = parser.parse_args(argv)
    curves = read_curves(args.runs)
    if not any(curves.values()):
        parser.error("no curve.jsonl rows in " + ", ".join(args.runs))
    print(curve_table(curves))
    if args.png:
        plot_curves(curves, args.png)
        print(f"\nplot: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
