"""Train the tiny 4x ``AutoencoderKLTemporalDecoder`` on the training photographs.

Reconstruction objective (L1 + MSE, a tiny KL term so the latent stays a well-behaved Gaussian), on two kinds of
samples every step: short windows of rendered training clips (so the temporal decoder learns to decode motion
without flicker) and random photograph crops at many scales (detail). No perceptual or adversarial loss: their
networks cannot be downloaded here, and PSNR (the issue's floor) is what an MSE-type loss optimises.
After training, the latent ``scaling_factor`` is re-estimated as 1 / std of the latents (SVD's convention).

Decoder-only finetuning (``init`` + ``train_encoder=False``, as Stability finetuned SD's decoder): the encoder,
hence the latent space and its scaling factor, stays fixed, so UNets trained on the latents of the frozen encoder
stay valid while the decoder keeps improving (in parallel, on the other CPU core).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from tqdm.auto import tqdm

from explorer import data
from explorer.components import build_vae
from explorer.cpu_speed import use_fast_temporal_convs
from explorer.training.common import EMA, Checkpointer, JsonlLog, lr_at


@dataclass
class VAETrainConfig:
    out: str = "runs/vae"
    scale: str = "tiny"
    steps: int = 6000
    clips_per_step: int = 2
    clip_frames: int = 6
    clip_size: tuple[int, int] = data.LOWRES
    crops_per_step: int = 8
    crop_size: tuple[int, int] = (64, 64)
    lr: float = 4e-4
    warmup: int = 200
    kl_weight: float = 1e-6
    # Decode the posterior mode, not a sample: a deterministic autoencoder converges far faster on a CPU budget.
    # Every user of the tiny VAE therefore takes ``latent_dist.mode()`` (as SVD's pipeline does for the image).
    sample_latents: bool = False
    mse_weight: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 25
    ckpt_every: int = 250
    eval_images: int = 16
    init: str | None = None  # a saved VAE folder to start from
    train_encoder: bool = True  # False: decoder-only finetuning, latent space and scaling factor kept


def reconstruct(vae: AutoencoderKLTemporalDecoder, x: torch.Tensor, frames: int, sample: bool = False,
                generator: torch.Generator | None = None,
                encoder_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) of images ``x`` (N, 3, H, W) in [-1, 1], N a multiple of ``frames``."""
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        dist = vae.encode(x).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    rec = vae.decode(z, num_frames=frames).sample
    return rec, dist.kl().mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (computed on [0, 1])."""
    mse = F.mse_loss((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKLTemporalDecoder, split: str = "test", n: int = 16,
                 size: tuple[int, int] = data.BASE) -> dict[str, float]:
    """Mean reconstruction PSNR on first frames of the fixed evaluation clips of ``split`` (photographs never
    seen in training) at the tiny base size, and on 14-frame clips (temporal decoder)."""
    vae.eval()
    clips = data.eval_clips(split, n=n, size=size)
    imgs = torch.stack([c.frames[0] for c in clips])
    rec, _ = reconstruct(vae, imgs, frames=1)
    clip = clips[0].frames
    rec_clip, _ = reconstruct(vae, clip, frames=clip.shape[0])
    return {"psnr_image": psnr(rec, imgs), "psnr_clip": psnr(rec_clip, clip)}


@torch.no_grad()
def latent_std(vae: AutoencoderKLTemporalDecoder, n: int = 32, size: tuple[int, int] = data.LOWRES) -> float:
    """Std of the latent modes over training clips: 1 / this is the scaling factor."""
    vae.eval()
    x = torch.cat([data.make_clip("train", 10_000 + i, size=size).frames for i in range(n // 4)])
    return vae.encode(x).latent_dist.mode().std().item()


def train_vae(cfg: VAETrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the VAE; writes checkpoints and a JSON-lines log under ``cfg.out``."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = _initial_vae(cfg)
    if accelerator.device.type == "cpu":
        use_fast_temporal_convs(vae)
    if not cfg.train_encoder:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(vae, decay=cfg.ema_decay)
    ckpt = Checkpointer(out / "state")
    log = JsonlLog(out / "log.jsonl")
    step = 0
    if ckpt.exists():
        record = ckpt.load({"vae": vae}, {"vae": opt})
        ema.load_state_dict(ckpt.load_tensors("ema"), record["ema_updates"])
        step = record["step"]
    vae, opt = accelerator.prepare(vae, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="vae")
    t0 = time.time()
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        vae.train()
        base = step * (cfg.clips_per_step + cfg.crops_per_step)
        clips = [data.make_clip("train", base + i, size=cfg.clip_size, seed=cfg.seed)
                 for i in range(cfg.clips_per_step)]
        starts = torch.randint(0, data.NUM_FRAMES - cfg.clip_frames + 1, (len(clips),), generator=gen)
        xc = torch.cat([c.frames[s:s + cfg.clip_frames] for c, s in zip(clips, starts.tolist(), strict=True)])
        xi = torch.stack([data.make_image("train", base + i, size=cfg.crop_size, seed=cfg.seed)
                          for i in range(cfg.crops_per_step)])
        xc, xi = xc.to(accelerator.device), xi.to(accelerator.device)
        rec_c, kl_c = reconstruct(vae, xc, cfg.clip_frames, sample=cfg.sample_latents, generator=gen,
                                  encoder_grad=cfg.train_encoder)
        rec_i, kl_i = reconstruct(vae, xi, 1, sample=cfg.sample_latents, generator=gen,
                                  encoder_grad=cfg.train_encoder)
        rec_loss = (F.l1_loss(rec_c, xc) + F.l1_loss(rec_i, xi)
                    + cfg.mse_weight * (F.mse_loss(rec_c, xc) + F.mse_loss(rec_i, xi)))
        loss = rec_loss + cfg.kl_weight * (kl_c + kl_i)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, 1.0)
        opt.step()
        ema.update(accelerator.unwrap_model(vae))
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            row = {"step": step, "loss": loss.item(), "rec": rec_loss.item(), "kl": (kl_c + kl_i).item() / 2,
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t0}
            log.write(**row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            ckpt.save(step, {"vae": accelerator.unwrap_model(vae), "ema": ema.state_dict()}, {"vae": opt},
                      meta={"ema_updates": ema.updates, "config": asdict(cfg)})
    bar.close()
    metrics = export_vae(cfg, ema.state_dict(), out / "final", steps=step)
    log.write(step=step, **{f"final_{k}": v for k, v in metrics.items()})
    return metrics


def _initial_vae(cfg: VAETrainConfig) -> AutoencoderKLTemporalDecoder:
    if cfg.init:
        return AutoencoderKLTemporalDecoder.from_pretrained(cfg.init, use_safetensors=True)
    return build_vae(cfg.scale, seed=cfg.seed)


def export_vae(cfg: VAETrainConfig, weights: dict[str, torch.Tensor], folder: str | Path,
               steps: int | None = None) -> dict[str, Any]:
    """Save ``weights`` (e.g. the EMA of a run, possibly unfinished) as a VAE folder with ``metrics.json``.

    The scaling factor is re-estimated as 1 / latent std, except when the encoder was frozen: then it stays the
    ``init`` VAE's exactly (the latent space must not move under UNets trained on it).
    """
    final = _initial_vae(cfg)
    final.load_state_dict({k: v.to(final.state_dict()[k].dtype) for k, v in weights.items()})
    std = latent_std(final)
    if cfg.train_encoder:
        final.register_to_config(scaling_factor=1.0 / std)
    metrics = evaluate_vae(final, n=cfg.eval_images)
    metrics.update({"latent_std": std, "scaling_factor": final.config.scaling_factor, "steps": steps,
                    "encoder_trained": cfg.train_encoder, "init": cfg.init})
    final.save_pretrained(folder, safe_serialization=True)
    (Path(folder) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
