"""Train the FVD-proxy feature network on train/val clips and measure its sanity numbers on the test eval set.

    python scripts/train_fvd_proxy.py                      # train (about 12 min on one CPU thread) + sanity
    python scripts/train_fvd_proxy.py --sanity-only        # re-measure the sanity numbers of the shipped weights

Why multi-task: a Fréchet distance is only meaningful if the features move when quality drops. The network learns
(1) the camera-motion kind, (2) the motion bucket (regression), (3) which corruption a clip carries (clean, noise,
blur, shuffled / frozen / jittered frames, flicker, blockiness) at random severities. Training clips come only from
the train split (validation: the val split); test photographs are used only for the sanity numbers afterwards.
A pool of clips is rendered once into memory (uint8) and corrupted / flipped / time-reversed on the fly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from explorer.fvd_proxy import DEFAULT_DIR, ProxyConfig
from explorer.fvd_proxy_training import record_sanity, sanity, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_DIR))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--pool", type=int, default=4000, help="training clips rendered once (then augmented)")
    parser.add_argument("--val", type=int, default=320)
    parser.add_argument("--channels", type=int, nargs="+", default=list(ProxyConfig().channels))
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sanity-only", action="store_true")
    parser.add_argument("--sanity-clips", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.sanity_only:
        info = train(args.out, steps=args.steps, batch=args.batch, lr=args.lr, n_pool=args.pool, val=args.val,
                     channels=tuple(args.channels), eval_every=args.eval_every, seed=args.seed)
        print(json.dumps(info["final_val"], indent=1))
    san = sanity(out, args.sanity_clips)
    record_sanity(out, san)
    print(json.dumps(san, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
