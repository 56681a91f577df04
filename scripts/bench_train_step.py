"""Seconds per UNet training step, with and without the latent cache, measured in one run (interleaved rounds).

    python scripts/bench_train_step.py --cache runs/latent-cache-128x64 --size 128x64 --batch 8 --threads 2

Three ways of making one optimizer step of the tiny denoiser at the same size and batch:

* ``render+kl-vae`` -- what the base was trained with until now: render the clips, encode them with the shipped
  ``AutoencoderKLTemporalDecoder`` (checkpoints/_shared/vae-v1), image encoder trained with the UNet;
* ``render+patch-vae`` -- render, encode with the PatchVAE, frozen image encoder;
* ``cached`` -- the latent cache: stored latents and embeddings, noise augmentation projected (no VAE, no image
  encoder, no rendering).

Each round times every variant once (``--rounds`` rounds after one warm-up round); the median seconds per step
and the speed-ups of the cached step are printed. Keep the machine otherwise idle while it runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explorer import data
from explorer.data import size_arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--cache", required=True, help="a latent cache at --size (scripts/build_latent_cache.py)")
    ap.add_argument("--vae", default="runs/vae/final", help="the PatchVAE the cache was built with")
    ap.add_argument("--kl-vae", default="checkpoints/_shared/vae-v1", help="the previous AutoencoderKLTemporalDecoder")
    ap.add_argument("--image-encoder", default="checkpoints/_shared/image_encoder")
    ap.add_argument("--size", type=size_arg, default=data.LOWRES)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from transformers import CLIPVisionModelWithProjection

    from explorer.latent_cache import LatentCache, LatentCacheError, cached_conditioning
    from explorer.models import build_unet
    from explorer.training.common import start_run
    from explorer.training.denoise import denoise_loss, encode_batch
    from explorer.training.stage_runs import unet_config_for
    from explorer.vae import load_vae

    torch.set_num_threads(args.threads)
    vae = load_vae(args.vae)
    kl_vae = load_vae(args.kl_vae)
    encoder = CLIPVisionModelWithProjection.from_pretrained(args.image_encoder, use_safetensors=True).eval()
    try:
        cache = LatentCache(args.cache, vae=vae, image_encoder=encoder)
    except LatentCacheError as err:
        ap.error(str(err))
    if cache.size != args.size:
        ap.error(f"the cache is at {cache.size[0]}x{cache.size[1]}, not {args.size[0]}x{args.size[1]}")
    unets = {"patch": build_unet(unet_config_for("tiny", vae)), "kl": build_unet(unet_config_for("tiny", kl_vae))}
    start_run("/tmp/bench_train_step", args.threads, (*unets.values(), kl_vae))
    opts = {k: torch.optim.AdamW(list(u.parameters()) + (list(encoder.parameters()) if k == "kl" else []), lr=1e-4)
            for k, u in unets.items()}
    gen = torch.Generator().manual_seed(0)
    batches = cache.batches(args.batch, seed=0)
    counter = iter(range(10**9))

    def step(kind: str) -> float:
        t0 = time.perf_counter()
        if kind == "cached":
            cond = cached_conditioning(next(batches), vae, gen, -3.0, 0.5)
            unet, opt = unets["patch"], opts["patch"]
        else:
            batch = data.make_batch("train", next(counter) * args.batch, args.batch, args.size)
            the_vae = kl_vae if kind == "render+kl-vae" else vae
            encoder.requires_grad_(kind == "render+kl-vae")
            cond = encode_batch(batch, the_vae, encoder, gen, -3.0, 0.5, embed_grad=kind == "render+kl-vae")
            unet, opt = unets["kl" if kind == "render+kl-vae" else "patch"], opts["kl" if kind == "render+kl-vae"
                                                                                  else "patch"]
        loss = denoise_loss(unet, cond, gen, 0.7, 1.6, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    kinds = ("render+kl-vae", "render+patch-vae", "cached")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds + 1):
        for k in kinds:
            t = step(k)
            if r > 0:  # round 0 warms up
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"UNet training step, tiny, {args.size[0]}x{args.size[1]}, batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds:")
    for k in kinds:
        print(f"  {k:18s} {med[k]:7.3f} s/step  ({args.batch / med[k]:6.2f} clips/s)  "
              f"min {min(times[k]):.3f} max {max(times[k]):.3f}")
    print(f"cached vs render+kl-vae:    {med['render+kl-vae'] / med['cached']:.2f}x faster (target >= 1.8x)")
    print(f"cached vs render+patch-vae: {med['render+patch-vae'] / med['cached']:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
