"""Train one stage of the tiny compression path (resumable; CPU by default; `accelerate launch` compatible).

Examples (the tiny base, as SVD was trained: mostly at low resolution, then at the base resolution):

    python scripts/train_stage.py --stage svd --phase pretrain --size 128x64 --steps 3000 --out runs/svd-pretrain
    python scripts/train_stage.py --stage svd --init runs/svd-pretrain --size 256x144 --steps 400 --batch 4
    python scripts/train_stage.py --stage lowres-ft --init checkpoints/svd --steps 600
    accelerate launch scripts/train_stage.py --stage svd ...      # the same code on many GPUs

Re-running the same command resumes from the run folder's last checkpoint.
"""

from __future__ import annotations

import argparse
import json

from explorer import stages as registry
from explorer.training.denoise import DenoiseConfig


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 128x64, got {text!r}") from exc
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stage", required=True, help="stage slug (svd, lowres-ft, ...)")
    parser.add_argument("--phase", default="final", choices=["pretrain", "final"],
                        help="pretrain: train only, no export; final: train then export checkpoints/<stage>")
    parser.add_argument("--init", help="parent stage folder or run folder to start from (none = from scratch)")
    parser.add_argument("--vae", default="runs/vae/final", help="trained VAE folder (when --init is not a stage)")
    parser.add_argument("--out", help="run folder (default runs/<stage>)")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--size", type=parse_size, help="training size WxH px (default: the stage's tiny size)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--p-mean", type=float, default=0.7)
    parser.add_argument("--p-std", type=float, default=1.6)
    parser.add_argument("--freeze-image-encoder", action="store_true")
    parser.add_argument("--image-encoder", help="a saved image encoder folder to start from (kept frozen with "
                        "--freeze-image-encoder; needed with --cache)")
    parser.add_argument("--cache", help="latent cache folder (scripts/build_latent_cache.py); implies a frozen "
                        "image encoder")
    parser.add_argument("--curriculum-start", type=float, default=0.0,
                        help="motion curriculum: max ref px per frame at step 0 (0: none)")
    parser.add_argument("--curriculum-steps", type=int, default=0, help="steps until the full motion range")
    parser.add_argument("--probe-every", type=int, default=0, help="learning-curve row every N steps (0: never)")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--ckpt-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        slug = registry.resolve(args.stage)
    except ValueError as err:
        parser.error(str(err))
    if slug not in ("svd", "lowres-ft"):
        parser.error(f"{slug}: only the denoising stages (svd, lowres-ft) are trained by this script so far")
    size = args.size or registry.get_stage(slug).size("tiny")
    out = args.out or f"runs/{slug}"
    cfg = DenoiseConfig(out=out, size=size, frames=args.frames, steps=args.steps, batch=args.batch, lr=args.lr,
                        warmup=args.warmup, p_mean=args.p_mean, p_std=args.p_std,
                        train_image_encoder=not (args.freeze_image_encoder or args.cache),
                        ckpt_every=args.ckpt_every, seed=args.seed, data_seed=args.data_seed, threads=args.threads,
                        num_workers=args.workers, cache=args.cache, curriculum_start=args.curriculum_start,
                        curriculum_steps=args.curriculum_steps, probe_every=args.probe_every,
                        ema_decay=args.ema_decay)
    from explorer.training.stage_runs import train_denoise_stage

    summary = train_denoise_stage(slug, cfg, args.init, vae_dir=args.vae,
                                  checkpoints=args.checkpoints if args.phase == "final" else None, size=size,
                                  image_encoder_dir=args.image_encoder)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
