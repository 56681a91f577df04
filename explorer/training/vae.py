"""Train the tiny 4x VAE on the training photographs: the PatchVAE (default) or an ``AutoencoderKLTemporalDecoder``.

``arch="patch"`` (explorer/vae.py): the encoder is fitted once as the PCA of the training photographs' 4x4
patches and stays fixed; only the residual decoder trains, starting from the exact linear reconstruction.
``arch="kl"``: diffusers' SVD VAE class at the tiny width, trained from scratch (the project's first VAE).

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
from explorer.components import build_vae, patch_vae_config
from explorer.cpu_speed import use_fast_temporal_convs
from explorer.training.common import EMA, Checkpointer, JsonlLog, lr_at
from explorer.vae import PatchVAE, build_patch_vae, fit_pca, laplacian_energy, load_vae, psnr_db


@dataclass
class VAETrainConfig:
    out: str = "runs/vae"
    scale: str = "tiny"
    arch: str = "patch"  # "patch" (PCA encoder + residual decoder) or "kl" (AutoencoderKLTemporalDecoder)
    pca_images: int = 600  # training images (half at 128x64, half at 256x144) the patch PCA is fitted on
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
    if isinstance(vae, PatchVAE):  # deterministic encoder: no KL term (its fixed log-variance is only a formality)
        return rec, torch.zeros((), device=rec.device)
    return rec, dist.kl().mean()


psnr = psnr_db  # PSNR in dB of images in [-1, 1] (computed on [0, 1])


def pca_training_images(n: int, seed: int = 0) -> list[torch.Tensor]:
    """The training images the patch PCA is fitted on: crops of training photographs, half at the low
    resolution, half at the base resolution (never a test or validation photograph)."""
    half = n // 2
    return ([data.make_image("train", i, size=data.LOWRES, seed=seed) for i in range(half)]
            + [data.make_image("train", 100_000 + i, size=data.BASE, seed=seed) for i in range(n - half)])


def test_photographs(size: tuple[int, int]) -> torch.Tensor:
    """The whole held-out test photographs resized (antialiased) to ``size`` (width, height): (N, 3, H, W)."""
    out = []
    for img in data.test_images().values():
        t = torch.from_numpy(img.copy()).float().permute(2, 0, 1)[None] / 127.5 - 1.0
        out.append(F.interpolate(t, size=(size[1], size[0]), mode="bilinear", antialias=True)[0])
    return torch.stack(out).clamp(-1, 1)


def _linear_baseline(vae: Any, fit_images: int) -> Any:
    """A function images -> their PCA reconstruction with as many components as the VAE has latent channels
    (the PatchVAE's own projection; fitted on training images for any other VAE)."""
    if isinstance(vae, PatchVAE):
        return lambda x: vae.linear_decode(vae.encode(x).latent_dist.mode())
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    basis, mean, _ = fit_pca(pca_training_images(fit_images), factor, vae.config.latent_channels)
    probe = PatchVAE(latent_channels=vae.config.latent_channels, patch_size=factor,
                     block_out_channels=(16,) * (int(math.log2(factor)) + 1))
    probe.set_projection(basis, mean)
    return lambda x: probe.linear_decode(probe.encode(x).latent_dist.mode())


def _scores(rec: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    hf = (laplacian_energy(rec.clamp(-1, 1)) / laplacian_energy(ref).clamp_min(1e-12)).mean().item()
    return {"psnr": psnr(rec, ref), "hf_kept": hf}


@torch.no_grad()
def evaluate_vae(vae: Any, split: str = "test", n: int = 16, size: tuple[int, int] = data.BASE,
                 baseline_fit_images: int = 200) -> dict[str, Any]:
    """Reconstruction on images the VAE never saw, beside the linear baseline of the same latent size.

    ``psnr_image`` / ``psnr_clip``: first frames of the ``n`` fixed evaluation clips of ``split`` at ``size``,
    and one 14-frame clip (the historical figures). ``by_size``: at the low and base resolutions, first frames
    (PSNR and ``hf_kept``, the fraction of the high-frequency energy -- variance of the Laplacian -- kept by the
    round trip) and the whole test photographs resized, each for the VAE and for the linear baseline.
    """
    vae.eval()
    linear = _linear_baseline(vae, baseline_fit_images)
    clips = data.eval_clips(split, n=n, size=size)
    imgs = torch.stack([c.frames[0] for c in clips])
    rec, _ = reconstruct(vae, imgs, frames=1)
    clip = clips[0].frames
    rec_clip, _ = reconstruct(vae, clip, frames=clip.shape[0])
    out: dict[str, Any] = {"psnr_image": psnr(rec, imgs), "psnr_clip": psnr(rec_clip, clip), "by_size": {}}
    for wh in (data.LOWRES, data.BASE):
        frames = torch.stack([c.frames[0] for c in data.eval_clips(split, n=n, size=wh)])
        photos = test_photographs(wh)
        row: dict[str, Any] = {}
        for name, x in (("first_frames", frames), ("photographs", photos)):
            row[name] = {"vae": _scores(reconstruct(vae, x, frames=1)[0], x), "linear": _scores(linear(x), x)}
        out["by_size"][f"{wh[0]}x{wh[1]}"] = row
    return out


@torch.no_grad()
def latent_std(vae: Any, n: int = 32, size: tuple[int, int] = data.LOWRES) -> float:
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
    if not cfg.train_encoder or isinstance(vae, PatchVAE):  # the PatchVAE's PCA encoder is never trained
        vae.encoder.requires_grad_(False)
        if isinstance(vae, PatchVAE):
            vae.linear_decoder.requires_grad_(False)
        else:
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


def _initial_vae(cfg: VAETrainConfig) -> AutoencoderKLTemporalDecoder | PatchVAE:
    if cfg.init:
        return load_vae(cfg.init)
    if cfg.arch == "kl":
        return build_vae(cfg.scale, seed=cfg.seed)
    if cfg.arch != "patch":
        raise ValueError(f"unknown VAE arch {cfg.arch!r}; expected 'patch' or 'kl'")
    vae = build_patch_vae(patch_vae_config(cfg.scale), pca_training_images(cfg.pca_images, cfg.seed), cfg.seed)
    vae.register_to_config(scaling_factor=1.0 / latent_std(vae))  # fixed with the encoder
    return vae


def _encoder_trained(cfg: VAETrainConfig) -> bool:
    return cfg.train_encoder and cfg.arch != "patch" and not (cfg.init and _is_patch_folder(cfg.init))


def _is_patch_folder(folder: str) -> bool:
    cfg_path = Path(folder) / "config.json"
    return cfg_path.exists() and json.loads(cfg_path.read_text()).get("_class_name") == "PatchVAE"


def export_vae(cfg: VAETrainConfig, weights: dict[str, torch.Tensor], folder: str | Path,
               steps: int | None = None) -> dict[str, Any]:
    """Save ``weights`` (e.g. the EMA of a run, possibly unfinished) as a VAE folder with ``metrics.json``.

    The scaling factor is re-estimated as 1 / latent std, except when the encoder was frozen: then it stays the
    ``init`` VAE's exactly (the latent space must not move under UNets trained on it).
    """
    final = _initial_vae(cfg)
    own = final.state_dict()
    if isinstance(final, PatchVAE):  # the fixed projection is kept exactly (an EMA of it drifts by rounding)
        weights = {k: (own[k] if k.split(".")[0] in ("encoder", "linear_decoder") else v) for k, v in weights.items()}
    final.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    std = latent_std(final)
    trained = _encoder_trained(cfg)
    if trained:
        final.register_to_config(scaling_factor=1.0 / std)
    metrics = evaluate_vae(final, n=cfg.eval_images)
    metrics.update({"class": type(final).__name__, "latent_channels": final.config.latent_channels,
                    "latent_std": std, "scaling_factor": final.config.scaling_factor, "steps": steps,
                    "encoder_trained": trained, "init": cfg.init})
    final.save_pretrained(folder, safe_serialization=True)
    (Path(folder) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
