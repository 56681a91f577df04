"""Measure a learning-curve row for a run's EMA weights as they are now, and append it to its curve.jsonl. Thin CLI.

    python scripts/curve_row.py runs/svd-pretrain                  # the run's last checkpoint
    python scripts/curve_row.py /tmp/probe/svd-pretrain --threads 1

For rows a run did not write itself: a run started before a measurement existed, or the common starting point of
paired probes (docs/training.md). The row is the one the run writes every ``probe_every`` steps.
"""

from __future__ import annotations

import argparse
import json

import torch

from explorer.training.curves import measure_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run", help="a run folder with state/ (or a restored snapshot)")
    parser.add_argument("--vae", default="runs/vae/final", help="the VAE the run trains on")
    parser.add_argument("--image-encoder", default="checkpoints/_shared/image_encoder")
    parser.add_argument("--scale", default="tiny", help="the run's model family (tiny, micro)")
    parser.add_argument("--photos", type=int, default=4, help="test photographs to sample (0: errors only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        row = measure_run(args.run, args.vae, args.image_encoder, args.scale, args.photos)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(json.dumps({k: row[k] for k in row if k != "denoise"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
