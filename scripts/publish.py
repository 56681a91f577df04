"""Publish the trained path (stage folders + _shared) to a Hugging Face model repo with a model card. Thin CLI.

    python scripts/publish.py --repo OWNER/NAME --dry-run          # writes runs/publish/README.md + files.txt
    hf auth login && python scripts/publish.py --repo OWNER/NAME         # hf: huggingface_hub's CLI
    python app.py --checkpoints OWNER/NAME                          # then load it back by id

The card carries the hub metadata (library_name diffusers, pipeline_tag image-to-video, tags), the per-stage
FLOPs and metrics table, how each stage was trained and the limits of the tiny family. Only configs, records and
safetensors weights are uploaded (never the unfinished runs under checkpoints/_partial).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explorer.hub import CheckpointsError, publish

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--repo", required=True, help="hub model repo id, OWNER/NAME (created if absent)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--dry-run", action="store_true", help="write the card and the file list; no upload")
    parser.add_argument("--out", default="runs/publish", help="where --dry-run writes README.md and files.txt")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = publish(args.checkpoints, args.repo, dry_run=args.dry_run, out=args.out, private=args.private)
    except CheckpointsError as err:
        print(f"publish: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - network / auth failures get one clear line
        print(f"publish: upload to {args.repo} failed: {str(err).splitlines()[0] if str(err) else err!r}",
              file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
