"""Whitened latents, warm-started: rescale the PatchVAE's channels to equal variance, rebuild the 128x64 cache on
it, and map the step-15,000 EMA onto the new latent space (conv_in columns / s, conv_out rows * s)."""

import sys
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection

from explorer.latent_cache import LatentCache, build_latent_cache
from explorer.training.curves import channel_variances
from explorer.vae import load_vae, rescale_latent_channels, whitening_scales

torch.set_num_threads(2)
power = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0  # 1: whiten; 0.5: halfway (scales ** 0.5)
tag = "white" if power == 1.0 else f"white{power:g}"
vae = load_vae("runs/vae/final")
cache = LatentCache("runs/latent-cache-128x64", vae=vae)
var = channel_variances(cache.latents(torch.arange(256)))
scales = whitening_scales(var) ** power
print("variances", [round(v, 4) for v in var.tolist()])
print("scales", [round(v, 3) for v in scales.tolist()])
rescale_latent_channels(vae, scales)
out = Path(f"runs/vae-{tag}/final")
out.mkdir(parents=True, exist_ok=True)
vae.save_pretrained(out, safe_serialization=True)
ema = load_file("runs/svd-pretrain/state/ema.safetensors")
c = len(scales)
w = ema["conv_in.weight"].float().clone()
w[:, :c] /= scales.view(1, c, 1, 1)
w[:, c : 2 * c] /= scales.view(1, c, 1, 1)
ema["conv_in.weight"] = w.to(ema["conv_in.weight"].dtype)
ema["conv_out.weight"] = (ema["conv_out.weight"].float() * scales.view(c, 1, 1, 1)).to(ema["conv_out.weight"].dtype)
ema["conv_out.bias"] = (ema["conv_out.bias"].float() * scales).to(ema["conv_out.bias"].dtype)
init = Path(f"runs/{tag}-init/state")
init.mkdir(parents=True, exist_ok=True)
save_file(ema, str(init / "ema.safetensors"))
enc = CLIPVisionModelWithProjection.from_pretrained("checkpoints/_shared/image_encoder", use_safetensors=True).eval()
build_latent_cache(f"runs/latent-cache-{tag}-128x64", vae, enc, (128, 64), 32_768, progress=False)
print("done")
