"""Train the tiny 4x VAE (resumable). Thin CLI over explorer.training.vae.

    python scripts/train_vae.py --out runs/vae --steps 3000                # PatchVAE: PCA encoder, decoder trained
    python scripts/train_vae.py --arch kl --out runs/vae-kl --steps 3000   # AutoencoderKLTemporalDecoder from scratch
    python scripts/train_vae.py --export-from runs/vae/state --out runs/vae   # EMA of an unfinished run -> final/
    python scripts/train_vae.py --init runs/vae/final --freeze-encoder --out runs/vae-decoder --steps 3000
    accelerate launch scripts/train_vae.py ...     # same code on many GPUs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from explorer.training.common import Checkpointer
from explorer.training.vae import VAETrainConfig, export_vae, train_vae


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = VAETrainConfig()
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--scale", default=defaults.scale, choices=["tiny", "micro"])
    parser.add_argument("--arch", default=defaults.arch, choices=["patch", "kl"],
                        help="patch: fixed PCA patch encoder + residual decoder (explorer/vae.py); kl: diffusers' "
                        "AutoencoderKLTemporalDecoder trained from scratch")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--clips-per-step", type=int, default=defaults.clips_per_step)
    parser.add_argument("--clip-frames", type=int, default=defaults.clip_frames)
    parser.add_argument("--crops-per-step", type=int, default=defaults.crops_per_step)
    parser.add_argument("--ckpt-every", type=int, default=defaults.ckpt_every)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--init", help="start from this VAE folder")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="decoder-only finetuning: latent space and scaling factor stay as in --init")
    parser.add_argument("--export-from", metavar="STATE_DIR",
                        help="export the EMA weights of a (possibly unfinished) run's state folder to OUT/final")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = VAETrainConfig(out=args.out, scale=args.scale, arch=args.arch, steps=args.steps, lr=args.lr,
                         clips_per_step=args.clips_per_step, clip_frames=args.clip_frames,
                         crops_per_step=args.crops_per_step, ckpt_every=args.ckpt_every, init=args.init,
                         train_encoder=not args.freeze_encoder)
    if args.freeze_encoder and not args.init:
        parser.error("--freeze-encoder needs --init (the VAE whose encoder is kept)")
    if args.export_from:
        state = Checkpointer(Path(args.export_from))
        if not state.exists():
            parser.error(f"no run state in {args.export_from}")
        step = json.loads(state.meta_path.read_text())["step"]
        metrics = export_vae(cfg, state.load_tensors("ema"), Path(args.out) / "final", steps=step)
    else:
        metrics = train_vae(cfg)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
