"""Paired probe arm: continue the step-15,000 EMA at 128x64 from the latent cache; one knob differs per arm
(session 14: `--power`, the channel loss weights; session 15: `--frame0-weight 1`)."""

import argparse
import json
import sys

sys.path.insert(0, ".")  # run from the repository root
import torch

from explorer.training.denoise import DenoiseConfig, train_denoiser
from explorer.training.stage_runs import load_init

ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("--power", type=float, default=0.0)
ap.add_argument("--frame0-weight", type=float, default=8.0)
ap.add_argument("--steps", type=int, default=600)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--frames", type=int, default=8)
ap.add_argument("--p-mean", type=float, default=0.7)
ap.add_argument("--p-std", type=float, default=1.6)
ap.add_argument("--probe-every", type=int, default=200)
ap.add_argument("--init", default="runs/svd-pretrain")
ap.add_argument("--vae", default="runs/vae/final")
ap.add_argument("--cache", default="runs/latent-cache-128x64")
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.manual_seed(0)
unet, enc, vae, _ = load_init(a.init, "tiny", a.vae, "checkpoints/_shared/image_encoder")
cfg = DenoiseConfig(
    out=f"runs/{a.name}",
    size=(128, 64),
    frames=a.frames,
    steps=a.steps,
    batch=8,
    lr=a.lr,
    warmup=50,
    frame0_weight=a.frame0_weight,
    p_mean=a.p_mean,
    p_std=a.p_std,
    train_image_encoder=False,
    cache=a.cache,
    threads=a.threads,
    num_workers=0,
    ckpt_every=100,
    log_every=20,
    probe_every=a.probe_every,
    channel_weight_power=a.power,
    seed=14,
    data_seed=14,
)
res = train_denoiser(cfg, unet, vae, enc, progress=False)
print(json.dumps({"step": res["step"], "finished": res["finished"]}))
