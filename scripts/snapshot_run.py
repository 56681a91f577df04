"""Commit-sized snapshots of training runs, and putting them back so a fresh checkout resumes. Thin CLI.

    python scripts/snapshot_run.py save runs/svd-pretrain-small        # -> checkpoints/_partial/svd-pretrain-small
    python scripts/snapshot_run.py restore checkpoints/_partial/svd-pretrain-small   # -> runs/svd-pretrain-small

A snapshot holds the run's EMA weights (the UNet's in float16; the online model restarts from them, no optimizer
moments; a frozen image encoder is left out, the run loads it from its own folder), its trainer.json, the training
log and the learning curve (curve.jsonl), and its final/ folder when it has one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from explorer.training.common import restore_run, snapshot_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="snapshot a run folder")
    save.add_argument("run")
    save.add_argument("--to", help="destination (default checkpoints/_partial/<run name>)")
    restore = sub.add_parser("restore", help="put a snapshot back as a run folder")
    restore.add_argument("snapshot")
    restore.add_argument("--to", help="run folder (default runs/<snapshot name>)")
    args = parser.parse_args(argv)
    try:
        if args.command == "save":
            dest = snapshot_run(args.run, args.to or Path("checkpoints/_partial") / Path(args.run).name)
        else:
            dest = restore_run(args.snapshot, args.to or Path("runs") / Path(args.snapshot).name)
    except (FileNotFoundError, FileExistsError) as err:
        parser.error(str(err))
    print(dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
