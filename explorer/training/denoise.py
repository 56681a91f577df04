"""SVD's training objective for the tiny family: EDM denoising with v-prediction on VAE latents of clips.

What SVD does and this loop reproduces: log-normal noise levels, noise augmentation of the conditioning frame
(its VAE latent is concatenated to every noisy frame), micro-conditioning on fps / motion bucket / noise
augmentation, the CLIP-style image embedding as the single cross-attention token, conditioning dropout so
classifier-free guidance works (the pipeline's negative branch zeroes both the embedding and the image
latents), and EMA weights. The conditioning inputs are prepared exactly as ``StableVideoDiffusionPipeline``
prepares them at sampling time, so the stock pipeline samples what was trained.

Runs on the CPU by default and unchanged under ``accelerate launch`` (data-parallel on many GPUs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from tqdm.auto import tqdm
from transformers import CLIPVisionModelWithProjection

from explorer import data, edm, randomness
from explorer.components import SVD_FEATURE_EXTRACTOR_CONFIG
from explorer.randomness import Random, RowRandom
from explorer.training.common import EMA, Checkpointer, JsonlLog, lr_at, start_run


@dataclass
class DenoiseConfig:
    out: str = "runs/denoise"
    size: tuple[int, int] = data.LOWRES  # (width, height) px
    frames: int = data.NUM_FRAMES
    steps: int = 10_000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 300
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    p_mean: float = 0.7  # SVD's video noise distribution (EDM log-normal)
    p_std: float = 1.6
    aug_mean: float = -3.0  # noise augmentation strength ~ log-normal(-3, 0.5), as SVD
    aug_std: float = 0.5
    cond_dropout: float = 0.1
    # loss weight of frame 0 relative to each other frame (weights renormalised to mean 1): frame 0's target is the
    # conditioning image itself, and a tiny UNet given 1/14 of the loss for it learns slowly to carry that image
    frame0_weight: float = 1.0
    # loss weight of each latent channel ~ Var(channel)^-power (mean 1): the PatchVAE's PCA channels differ ~1,100x
    # in variance, so under SVD's loss the fine-detail channels weigh almost nothing and are sampled as grain
    # (docs/training.md, session 13); 1 weighs every channel as if whitened, 0 is SVD's objective
    channel_weight_power: float = 0.0
    ema_decay: float = 0.999
    # EMA decay ramp (1 + n) / (ema_warmup + n): with 10 the full decay is reached after ~9K updates; with the
    # old 100, 0.9995 needed ~200K updates, far beyond any CPU run (a decay never reached)
    ema_warmup: int = 10
    train_image_encoder: bool = True
    grad_clip: float = 1.0
    seed: int = 0
    data_seed: int = 0
    log_every: int = 20
    ckpt_every: int = 200
    num_workers: int = 1
    threads: int = 0  # torch threads in the training process (0 = leave torch's default)
    cache: str | None = None  # a latent cache folder (explorer.latent_cache): no rendering or encoding per step
    curriculum_start: float = 0.0  # motion curriculum: max ref px per frame at step 0 (0: none) ...
    curriculum_steps: int = 0  # ... rising to the full range over these steps (cached runs only)
    probe_every: int = 0  # learning-curve rows (explorer.training.curves) every this many steps (0: never)
    probe_clips: int = 16
    probe_photos: int = 4
    # stop cleanly (checkpoint, learning-curve row) after this many seconds of this process's training, the run
    # unfinished and resumable: a session or a lent GPU ends the run on time instead of killing it (0: no limit)
    max_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def clip_embed_input(frame0: torch.Tensor) -> torch.Tensor:
    """The image encoder's input exactly as the SVD pipeline makes it: antialiased resize of the [-1, 1] image
    to 224x224, back to [0, 1], CLIP normalisation."""
    x = _resize_with_antialiasing(frame0, (224, 224))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(SVD_FEATURE_EXTRACTOR_CONFIG["image_mean"], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(SVD_FEATURE_EXTRACTOR_CONFIG["image_std"], dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Conditioning:
    latents: torch.Tensor  # (B, F, C, h, w) scaled clean latents
    image_latents: torch.Tensor  # (B, C, h, w) unscaled mode of the noise-augmented first frame
    image_embeds: torch.Tensor  # (B, 1, D)
    time_ids: torch.Tensor  # (B, 3)


def encode_batch(
    batch: dict[str, torch.Tensor],
    vae: AutoencoderKLTemporalDecoder,
    image_encoder: CLIPVisionModelWithProjection,
    generator: Random,
    aug_mean: float,
    aug_std: float,
    embed_grad: bool = False,
) -> Conditioning:
    """Latents and conditioning of a batch of clips (frames (B, F, 3, H, W) in [-1, 1])."""
    frames = batch["frames"]
    b, f = frames.shape[:2]
    with torch.no_grad():
        lat = vae.encode(frames.flatten(0, 1)).latent_dist.mode()  # the tiny VAE is deterministic (see vae.py)
        lat = lat.reshape(b, f, *lat.shape[1:]) * vae.config.scaling_factor
        aug = torch.exp(aug_mean + aug_std * randomness.randn(generator, b))
        first = frames[:, 0]
        noisy_first = first + aug.view(b, 1, 1, 1) * randomness.randn(generator, first.shape)
        image_latents = vae.encode(noisy_first).latent_dist.mode()
    with torch.set_grad_enabled(embed_grad):
        embeds = image_encoder(clip_embed_input(first)).image_embeds.unsqueeze(1)
    time_ids = edm.added_time_ids(batch["fps"].float(), batch["motion_bucket_id"].float(), aug)
    return Conditioning(lat, image_latents, embeds, time_ids)


def denoise_loss(
    unet: UNetSpatioTemporalConditionModel,
    cond: Conditioning,
    generator: Random,
    p_mean: float,
    p_std: float,
    cond_dropout: float,
    frame0_weight: float = 1.0,
    channel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """EDM-weighted x0 loss (= unit-weight v loss) at log-normal noise levels, with conditioning dropout;
    ``frame0_weight``: frame 0's weight relative to each other frame (the per-frame weights have mean 1);
    ``channel_weights``: (C,) per latent channel (:func:`latent_channel_weights`), None for equal weights."""
    x0 = cond.latents
    b = x0.shape[0]
    sigma = edm.lognormal_sigmas(b, p_mean, p_std, generator).to(x0.device)
    noise = randomness.randn(generator, x0.shape).to(x0.device)
    noisy = x0 + sigma.view(b, 1, 1, 1, 1) * noise
    keep = (randomness.rand(generator, b) >= cond_dropout).to(x0.device).float()
    image_latents = cond.image_latents * keep.view(b, 1, 1, 1)
    embeds = cond.image_embeds * keep.view(b, 1, 1)
    denoised = edm.denoise(unet, noisy, sigma, image_latents, embeds, cond.time_ids.to(x0.device))
    err = edm.loss_weight(sigma).view(b, 1, 1, 1, 1) * (denoised - x0) ** 2
    if frame0_weight != 1.0:
        frames = x0.shape[1]
        per_frame = torch.ones(frames, device=x0.device)
        per_frame[0] = frame0_weight
        err = err * (per_frame / per_frame.mean()).view(1, frames, 1, 1, 1)
    if channel_weights is not None:
        err = err * channel_weights.to(err.device).view(1, 1, -1, 1, 1)
    return err.mean()


def latent_channel_weights(latents: torch.Tensor, power: float) -> torch.Tensor:
    """Per-channel loss weights ``Var_c^-power`` normalised to mean 1, from clips' latents (B, F, C, h, w)."""
    from explorer.training.curves import channel_variances

    w = channel_variances(latents.float()).clamp_min(1e-8) ** -power
    return w / w.mean()


def _weight_latents(cfg: DenoiseConfig, cache: Any, vae: Any) -> torch.Tensor:
    """Latents the channel weights are measured on: 256 cached clips, or 16 fixed training clips encoded."""
    if cache is not None:
        return cache.latents(torch.arange(min(256, len(cache))))
    clips = data.eval_clips("train", n=16, size=tuple(cfg.size))
    x = torch.stack([c.frames[: cfg.frames] for c in clips])
    with torch.no_grad():
        lat = vae.encode(x.flatten(0, 1).to(next(vae.parameters()).device)).latent_dist.mode()
    return lat.reshape(x.shape[0], x.shape[1], *lat.shape[1:]).cpu() * vae.config.scaling_factor


def _batches(cfg: DenoiseConfig, start_clip: int, process_index: int = 0,
             processes: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    stream = data.ClipStream("train", cfg.size, seed=cfg.data_seed, start=start_clip, batch=cfg.batch,
                             process_index=process_index, processes=processes)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0)
    for batch in loader:
        if cfg.frames != batch["frames"].shape[1]:
            batch["frames"] = batch["frames"][:, : cfg.frames]
        yield batch


def train_denoiser(
    cfg: DenoiseConfig,
    unet: UNetSpatioTemporalConditionModel,
    vae: AutoencoderKLTemporalDecoder,
    image_encoder: CLIPVisionModelWithProjection,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``unet`` (and optionally the image encoder) with SVD's objective; resumable from ``cfg.out``.

    Returns the EMA weights (state dicts) and the log path. The caller saves the stage folder.
    """
    if cfg.cache and cfg.train_image_encoder:
        raise ValueError("a latent cache holds the frozen image encoder's embeddings: set train_image_encoder=False")
    accelerator, out = start_run(cfg.out, cfg.threads, (unet, vae))
    vae.requires_grad_(False).eval()
    image_encoder.requires_grad_(cfg.train_image_encoder)
    params = list(unet.parameters()) + (list(image_encoder.parameters()) if cfg.train_image_encoder else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    ema = EMA(unet, decay=cfg.ema_decay, warmup=cfg.ema_warmup)
    ema_enc = EMA(image_encoder, decay=cfg.ema_decay, warmup=cfg.ema_warmup)
    ckpt = Checkpointer(out / "state")
    log = JsonlLog(out / "log.jsonl")
    step = 0
    if ckpt.exists():
        # a frozen image encoder comes from where the caller loaded it, never from the run state
        models = {"unet": unet, **({"image_encoder": image_encoder} if cfg.train_image_encoder else {})}
        record = ckpt.load(models, {"opt": opt})
        ema.load_state_dict(ckpt.load_tensors("ema"), record["ema_updates"])
        if cfg.train_image_encoder:
            ema_enc.load_state_dict(ckpt.load_tensors("ema_image_encoder"), record["ema_updates"])
        step = int(record["step"])
    # data parallel: only trained modules are wrapped (DDP refuses a module without trainable parameters, which a
    # frozen image encoder is); the frozen ones just move to the device
    if cfg.train_image_encoder:
        unet, image_encoder, opt = accelerator.prepare(unet, image_encoder, opt)
    else:
        unet, opt = accelerator.prepare(unet, opt)
        image_encoder.to(accelerator.device)
    vae.to(accelerator.device)
    clips_per_step = cfg.batch * accelerator.num_processes
    cache = None
    if cfg.cache:
        from explorer.latent_cache import LatentCache, cached_conditioning, motion_curriculum

        cache = LatentCache(cfg.cache, vae=vae, image_encoder=image_encoder)
        if cache.size != tuple(cfg.size):
            raise ValueError(f"the latent cache {cfg.cache} is at {cache.size}, the run at {tuple(cfg.size)}")
        curriculum = motion_curriculum(cfg.curriculum_start, cfg.curriculum_steps) if cfg.curriculum_start else None
        cached = cache.batches(cfg.batch, seed=cfg.data_seed * 1009, start_step=step, max_motion=curriculum,
                               processes=accelerator.num_processes, process_index=accelerator.process_index)
    else:
        batches = _batches(cfg, step * clips_per_step, accelerator.process_index, accelerator.num_processes)
    channel_weights = None
    if cfg.channel_weight_power:
        channel_weights = latent_channel_weights(_weight_latents(cfg, cache, vae), cfg.channel_weight_power)
        if accelerator.is_main_process and step == 0:
            log.write(step=0, channel_weights=[round(w, 4) for w in channel_weights.tolist()])
    probe = _Probe(cfg, out, unet, vae, image_encoder, ema, accelerator.is_main_process)
    probe.maybe(step, step * clips_per_step, first=True)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or not accelerator.is_main_process,
               desc=out.name)
    t0, seen, running = time.time(), 0, None
    while step < cfg.steps:
        lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        unet.train()
        image_encoder.train(cfg.train_image_encoder)
        # per-row draws: N processes x batch rows draw what one process with the combined batch draws
        gen = RowRandom.for_step(cfg.seed, step, cfg.batch, accelerator.process_index)
        if cfg.cache:
            cond = cached_conditioning(next(cached), vae, gen, cfg.aug_mean, cfg.aug_std, accelerator.device)
            cond.latents = cond.latents[:, : cfg.frames]
        else:
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
            cond = encode_batch(batch, vae, image_encoder, gen, cfg.aug_mean, cfg.aug_std,
                                embed_grad=cfg.train_image_encoder)
        loss = denoise_loss(unet, cond, gen, cfg.p_mean, cfg.p_std, cfg.cond_dropout, cfg.frame0_weight,
                            channel_weights)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema.update(accelerator.unwrap_model(unet))
        ema_enc.update(accelerator.unwrap_model(image_encoder))
        step += 1
        seen += clips_per_step
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.update(1)
        if step % cfg.log_every == 0 and accelerator.is_main_process:
            el = time.time() - t0
            log.write(step=step, loss=loss.item(), loss_avg=running, lr=lr, clips=step * clips_per_step,
                      clips_per_s=seen / el, elapsed_s=el, ema_decay=ema.current_decay())
            bar.set_postfix(loss=f"{running:.4f}", cps=f"{seen / el:.2f}")
        out_of_time = bool(cfg.max_seconds) and time.time() - t0 >= cfg.max_seconds
        if (step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time) and accelerator.is_main_process:
            ckpt.save(step, {"unet": accelerator.unwrap_model(unet),
                             "image_encoder": accelerator.unwrap_model(image_encoder),
                             "ema": ema.state_dict(), "ema_image_encoder": ema_enc.state_dict()},
                      {"opt": opt}, meta={"ema_updates": ema.updates, "config": asdict(cfg)})
        probe.maybe(step, step * clips_per_step, last=step == cfg.steps or out_of_time)
        if out_of_time:
            break
    bar.close()
    finished = step >= cfg.steps
    if finished:  # config.json marks a finished run (the path builder skips it)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    return {"ema_unet": ema.state_dict(), "ema_image_encoder": ema_enc.state_dict(), "log": str(log.path),
            "finished": finished, "step": step}


class _Probe:
    """Writes learning-curve rows (explorer.training.curves) of the EMA weights to ``<run>/curve.jsonl``."""

    def __init__(self, cfg: DenoiseConfig, out: Any, unet: Any, vae: Any, image_encoder: Any, ema: EMA,
                 main: bool) -> None:
        self.cfg, self.unet, self.vae, self.encoder, self.ema = cfg, unet, vae, image_encoder, ema
        self.log = JsonlLog(out / "curve.jsonl")
        self.on = main and cfg.probe_every > 0

    def maybe(self, step: int, clips: int, first: bool = False, last: bool = False) -> None:
        if not self.on:
            return
        done = {row["step"] for row in self.log.read()}
        if step in done or not (last or (first and not done) or step % self.cfg.probe_every == 0):
            return
        import copy

        from explorer.training.curves import write_row

        model = copy.deepcopy(self.unet)
        self.ema.copy_to(model)
        write_row(self.log.path, model, self.vae, self.encoder, tuple(self.cfg.size), step, clips,
                  self.cfg.probe_clips, self.cfg.probe_photos)
        del model


__all__ = ["Conditioning", "DenoiseConfig", "clip_embed_input", "denoise_loss", "encode_batch",
           "latent_channel_weights", "train_denoiser"]
