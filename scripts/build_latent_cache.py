"""Encode training clips once into a latent cache (explorer.latent_cache). Thin CLI.

    python scripts/build_latent_cache.py --vae runs/vae-patch/final --image-encoder checkpoints/_shared/image_encoder \
        --size 64x32 --clips 40000 --out cache/latents-64x32
    python scripts/build_latent_cache.py ... --clips 60000      # extends the same cache (resumes shard by shard)
"""

from __future__ import annotations

import argparse
import json

from explorer.data import size_arg
from explorer.latent_cache import LatentCacheError, build_latent_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--vae", required=True, help="VAE folder with a linear encoder (PatchVAE)")
    parser.add_argument("--image-encoder", required=True, help="image encoder folder (frozen)")
    parser.add_argument("--size", type=size_arg, required=True, help="WxH px")
    parser.add_argument("--clips", type=int, required=True, help="number of training clips in the cache")
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument("--shard-clips", type=int, default=512)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch
    from transformers import CLIPVisionModelWithProjection

    from explorer.vae import load_vae

    torch.set_num_threads(args.threads)
    vae = load_vae(args.vae)
    encoder = CLIPVisionModelWithProjection.from_pretrained(args.image_encoder, use_safetensors=True).eval()
    try:
        manifest = build_latent_cache(args.out, vae, encoder, args.size, args.clips, shard_clips=args.shard_clips,
                                      data_seed=args.data_seed)
    except LatentCacheError as err:
        parser.error(str(err))
    print(json.dumps({k: v for k, v in manifest.items() if k != "shards"} | {"clips": args.clips}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
