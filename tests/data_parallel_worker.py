"""Two training steps of the project's own loops, for tests/test_data_parallel.py: run once under
``accelerate launch --multi_gpu --num_processes 2`` on the CPU (gloo) with half the batch per process, and once as
one plain process with the combined batch. The parts (micro VAE, image encoder, UNet, latent cache) are prepared
by the test."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModelWithProjection

from explorer.models import build_unet
from explorer.vae import load_vae

SIZE = (128, 64)  # must match tests/test_data_parallel.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--mode", choices=("denoise", "adversarial"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--r1-weight", type=float, default=1e-2)
    a = ap.parse_args()
    root = Path(a.root)
    torch.manual_seed(0)  # the discriminator heads start alike in every process and in the reference
    vae = load_vae(str(root / "vae"))
    encoder = CLIPVisionModelWithProjection.from_pretrained(root / "encoder", use_safetensors=True).eval()
    config = json.loads((root / "unet.json").read_text())
    unet = build_unet(config)
    unet.load_state_dict(load_file(str(root / "unet.safetensors")))
    common = dict(out=a.out, size=SIZE, steps=a.steps, batch=a.batch, warmup=1, ckpt_every=1, log_every=1,
                  num_workers=0, threads=1)
    if a.mode == "denoise":
        from explorer.training.denoise import DenoiseConfig, train_denoiser

        cfg = DenoiseConfig(cache=str(root / "cache"), train_image_encoder=False, frame0_weight=4.0, **common)
        train_denoiser(cfg, unet, vae, encoder, progress=False)
    else:
        from explorer.training.adversarial import AdversarialConfig, train_adversarial

        teacher = build_unet(config)
        teacher.load_state_dict(load_file(str(root / "unet.safetensors")))
        # step 0 takes the R1 penalty (a double backward through the data-parallel discriminator), step 1 does not
        cfg = AdversarialConfig(r1_every=2, r1_weight=a.r1_weight, **common)
        train_adversarial(cfg, unet, teacher, vae, encoder, progress=False)


if __name__ == "__main__":
    main()
