"""One-step adversarial finetuning (SF-V's recipe, which MobileVD follows), for every one-step stage.

Generator G: the stage's UNet with SVD's EDM preconditioning, trained on x_t = x0 + s * eps with s drawn from
the 3 highest of 4 Karras levels (the top one is sigma_max, where one-step sampling evaluates it).
Discriminator D: the FROZEN encoder half (stem + down blocks) of the denoiser all one-step stages descend from
(``lowres-ft``), with one trainable spatial head (per frame) and one temporal head (over frames) after each
down block. Heads are conditioned projection-style on the image embedding, the noise level and the frame
index. Real and generated clips get fresh noise s' from a discretised log-normal (P_mean -1, P_std 1) before D.
Losses: hinge + (lazy) R1 for D; for G the adversarial term + 0.1 x pseudo-Huber reconstruction to the real
clip. EMA of G. Both kinds of heads matter: spatial-only heads let every frame collapse to the conditioning
image (SF-V).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import CLIPVisionModelWithProjection

from explorer import data, edm, randomness
from explorer.randomness import Random, RowRandom
from explorer.training.common import EMA, Checkpointer, JsonlLog, lr_at, start_run
from explorer.training.denoise import Conditioning, encode_batch
from explorer.training.distill import discriminator_accuracy, held_out_batch, teacher_sample
from explorer.training.dmd import DMDSettings, dmd_generator_loss, fake_denoiser_loss
from explorer.training.motion_disc import LatentMotionDiscriminator
from explorer.training.teacher_pairs import PairStore, fingerprints

# ----------------------------------------------------------------------------------------------------------
# Discriminator


class FrozenEncoder(nn.Module):
    """Stem + down blocks of a UNet, frozen; returns every down block's output (B*F, C, h, w)."""

    def __init__(self, unet: UNetSpatioTemporalConditionModel) -> None:
        super().__init__()
        unet = copy.deepcopy(unet)
        self.time_proj, self.time_embedding = unet.time_proj, unet.time_embedding
        self.add_time_proj, self.add_embedding = unet.add_time_proj, unet.add_embedding
        self.conv_in, self.down_blocks = unet.conv_in, unet.down_blocks
        self.channels = [b.resnets[-1].spatial_res_block.out_channels for b in unet.down_blocks]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:  # stays in eval mode: it is a fixed feature extractor
        return super().train(False)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                time_ids: torch.Tensor) -> list[torch.Tensor]:
        b, f = sample.shape[:2]
        emb = self.time_embedding(self.time_proj(timestep.reshape(b)).to(sample.dtype))
        aug = self.add_embedding(self.add_time_proj(time_ids.flatten()).reshape(b, -1).to(sample.dtype))
        emb = (emb + aug).repeat_interleave(f, dim=0)
        ctx = context.repeat_interleave(f, dim=0)
        h = self.conv_in(sample.flatten(0, 1))
        indicator = torch.zeros(b, f, dtype=h.dtype, device=h.device)
        feats = []
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, image_only_indicator=indicator)
            else:
                h, _ = block(hidden_states=h, temb=emb, image_only_indicator=indicator)
            feats.append(h)
        return feats


class _CondEmbedding(nn.Module):
    """Per-frame conditioning vector: image embedding, noise level (Fourier of c_noise), frame index."""

    def __init__(self, image_dim: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(image_dim + 64 + 32, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, image_embeds: torch.Tensor, sigma: torch.Tensor, frames: int) -> torch.Tensor:
        b = image_embeds.shape[0]
        noise = get_timestep_embedding(edm.c_noise(sigma) * 250.0, 64)  # c_noise spans ~[-1.6, 1.6]
        index = get_timestep_embedding(torch.arange(frames, device=sigma.device).float(), 32)
        img = image_embeds.reshape(b, -1)
        cond = torch.cat([img.repeat_interleave(frames, 0), noise.repeat_interleave(frames, 0),
                          index.repeat(b, 1)], dim=1)
        return self.mlp(cond)  # (B*F, dim)


class SpatialHead(nn.Module):
    """Per-frame head: conv features -> patch logits, plus a projection term with the conditioning."""

    def __init__(self, channels: int, cond_dim: int, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.out = nn.Conv2d(width, 1, 1)
        self.proj = nn.Linear(cond_dim, width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        patch = self.out(h).mean(dim=(1, 2, 3))
        return patch + (h.mean(dim=(2, 3)) * self.proj(cond)).sum(1) / math.sqrt(h.shape[1])  # (B*F,)


class TemporalHead(nn.Module):
    """Over-frames head: spatially pooled features -> 1-D convolutions over time -> per-frame logits."""

    def __init__(self, channels: int, cond_dim: int, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                                  nn.Conv1d(width, width, 3, padding=1), nn.SiLU())
        self.out = nn.Conv1d(width, 1, 1)
        self.proj = nn.Linear(cond_dim, width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c = x.shape[:2]
        pooled = x.mean(dim=(2, 3))
        seq = pooled.reshape(bf // frames, frames, c).transpose(1, 2)  # (B, C, F)
        h = self.body(seq)  # (B, W, F)
        logits = self.out(h).squeeze(1).reshape(-1)  # (B*F,)
        hf = h.transpose(1, 2).reshape(bf, -1)
        return logits + (hf * self.proj(cond)).sum(1) / math.sqrt(hf.shape[1])


class LocalTemporalHead(TemporalHead):
    """Over-frames head at every feature location (SF-V's layout): 1-D convolutions over time per pixel, then
    the per-frame logits averaged over locations. Why (issue 13, session 20): :class:`TemporalHead` pools space
    first, and the spatial mean of a feature map barely changes when its content translates, so that head cannot
    see motion at all; convolving over time before pooling can (a moving edge changes its pixels' features).
    Same layers as :class:`TemporalHead`; only where the pooling happens differs."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, hh, ww = x.shape
        b = bf // frames
        seq = x.reshape(b, frames, c, hh * ww).permute(0, 3, 2, 1).reshape(b * hh * ww, c, frames)
        h = self.body(seq)  # (B*h*w, W, F)
        logits = self.out(h).reshape(b, hh * ww, frames).mean(1).reshape(-1)  # (B*F,)
        hf = h.reshape(b, hh * ww, -1, frames).mean(1).transpose(1, 2).reshape(bf, -1)  # (B*F, W)
        return logits + (hf * self.proj(cond)).sum(1) / math.sqrt(hf.shape[1])


TEMPORAL_HEADS = {"pooled": TemporalHead, "local": LocalTemporalHead}


class Discriminator(nn.Module):
    """Frozen UNet encoder + trainable spatial and temporal heads after every down block."""

    def __init__(self, teacher: UNetSpatioTemporalConditionModel, image_dim: int, cond_dim: int = 128,
                 width: int = 64, spatial: bool = True, temporal: bool = True,
                 temporal_head: str = "pooled") -> None:
        super().__init__()
        if temporal_head not in TEMPORAL_HEADS:
            raise ValueError(f"temporal_head must be one of {sorted(TEMPORAL_HEADS)}, got {temporal_head!r}")
        self.encoder = FrozenEncoder(teacher)
        self.cond = _CondEmbedding(image_dim, cond_dim)
        self.spatial = nn.ModuleList([SpatialHead(c, cond_dim, width) for c in self.encoder.channels]) if spatial \
            else nn.ModuleList()
        head = TEMPORAL_HEADS[temporal_head]
        self.temporal = nn.ModuleList([head(c, cond_dim, width) for c in self.encoder.channels]) \
            if temporal else nn.ModuleList()

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> list[torch.Tensor]:
        """Logits (one tensor (B*F,) per head) for clean-scale latents ``x`` noised at level ``sigma`` (B,)."""
        b, f = x.shape[:2]
        s = sigma.view(b, 1, 1, 1, 1)
        image = cond.image_latents.unsqueeze(1).expand(b, f, *cond.image_latents.shape[1:])
        model_in = torch.cat([x * edm.c_in(s), image], dim=2)
        feats = self.encoder(model_in, edm.c_noise(sigma), cond.image_embeds, cond.time_ids)
        c = self.cond(cond.image_embeds, sigma, f)
        out = [head(h, c) for head, h in zip(self.spatial, feats, strict=False)]
        out += [head(h, c, f) for head, h in zip(self.temporal, feats, strict=False)]
        return out


# ----------------------------------------------------------------------------------------------------------
# Losses and noise levels


def generator_sigmas(levels: int = 4, top: int = 3) -> torch.Tensor:
    """The ``top`` highest of ``levels`` Karras levels (700, 70.5, 2.27 for 3 of 4)."""
    return edm.karras_sigmas(levels)[:top]


def discriminator_sigmas(n: int, generator: Random, p_mean: float = -1.0, p_std: float = 1.0,
                         grid: int = 1000) -> torch.Tensor:
    """Log-normal noise levels snapped to a fine Karras grid (a discretised log-normal, as SF-V)."""
    s = edm.lognormal_sigmas(n, p_mean, p_std, generator)
    levels = edm.karras_sigmas(grid)
    idx = (levels.log().view(1, -1) - s.log().view(-1, 1)).abs().argmin(dim=1)
    return levels[idx]


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = 0.03) -> torch.Tensor:
    """Per-sample sqrt(mean((a-b)^2) + c^2) - c, averaged: L2-like for small, L1-like for large errors."""
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (torch.sqrt(mse + c * c) - c).mean()


def motion_distance(a: torch.Tensor, b: torch.Tensor, c: float = 0.03) -> torch.Tensor:
    """Pseudo-Huber between two clips' frame-to-frame differences (b, f, ...): blind to what the frames share,
    so a student that averages the teacher's motion away pays for it in full."""
    return pseudo_huber(a.diff(dim=1), b.diff(dim=1), c)


def hinge_d(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)) / len(real)


def hinge_g(fake: list[torch.Tensor]) -> torch.Tensor:
    return -sum(f.mean() for f in fake) / len(fake)


# ----------------------------------------------------------------------------------------------------------
# Training loop


@dataclass
class AdversarialConfig:
    out: str = "runs/adversarial"
    size: tuple[int, int] = data.LOWRES
    frames: int = data.NUM_FRAMES
    steps: int = 1000
    batch: int = 4
    lr_g: float = 2e-5
    lr_d: float = 2e-4
    lr_extra: float = 1e-2  # e.g. gate importances
    warmup: int = 50
    recon_weight: float = 0.1
    huber_c: float = 0.03
    r1_weight: float = 1e-2
    r1_every: int = 4
    d_p_mean: float = -1.0
    d_p_std: float = 1.0
    g_levels: int = 4
    g_top: int = 3
    spatial_heads: bool = True
    temporal_heads: bool = True
    # "pooled": space pooled before the convolutions over time (blind to translation; every run up to session 19)
    # "local": over time at every location, then pooled (SF-V's temporal heads)
    temporal_head: str = "pooled"
    head_width: int = 64
    ema_decay: float = 0.995
    aug_mean: float = -3.0
    aug_std: float = 0.5
    seed: int = 0
    data_seed: int = 1
    log_every: int = 10
    ckpt_every: int = 100
    num_workers: int = 1
    threads: int = 0
    # distillation onto the teacher's own samples (a deviation from the paper; 0 = the pure adversarial recipe):
    # the one-step output from sigma_max * eps regresses (pseudo-Huber) onto the teacher's clip from the same eps
    distill_weight: float = 0.0
    distill_steps: int = 8  # the teacher's Euler steps (x2 UNet evaluations with guidance)
    distill_guidance: tuple[float, float] = (1.0, 3.0)  # the teacher's CFG ramp over frames (1, 1: none)
    # + this x pseudo-Huber between the student's and the teacher's frame-to-frame differences: motion is a small
    # part of a clip's error, so the whole-clip term lets the student average it away (0: off)
    distill_motion_weight: float = 0.0
    # a teacher-pair store (explorer/training/teacher_pairs.py; "" = none): the clips, their conditioning and the
    # distillation targets are read from it instead of rendered, encoded and sampled online (5x cheaper per step)
    pairs: str = ""
    # distribution matching (explorer/training/dmd.py, DMD; a deviation from the paper, 0 = off): the one-step clip
    # from sigma_max * eps also gets DMD's gradient (a fake denoiser trained online on the student's clips, minus
    # the teacher with distill_guidance) x this weight, compared at log-uniform levels in [dmd_sigma_min, _max]
    dmd_weight: float = 0.0
    dmd_lr: float = 1e-4  # the fake denoiser's learning rate (one update per step)
    dmd_sigma_min: float = 0.1
    dmd_sigma_max: float = 80.0
    # a latent motion discriminator trained from scratch beside the heads (explorer/training/motion_disc.py; a
    # deviation from the paper, 0 = off): the generator's hinge term through it x this weight; its own noise
    # levels ln sigma ~ N(motion_d_p_mean, 1), learning rate lr_d, R1 as the heads
    motion_d_weight: float = 0.0
    motion_d_p_mean: float = -2.0
    motion_d_width: int = 64
    # what the motion discriminator calls real: "data" (the training clip; its fake is the generator's clip from the
    # noised real clip) or "teacher" (the teacher's clip from the pair's noise; its fake is the one-step clip from
    # sigma_max x that noise, what inference samples: LADD's use of teacher samples as real; needs pairs)
    motion_d_real: str = "data"
    # SF-V's own terms (the heads' hinge and the reconstruction, both on the generator's clip from the noised real
    # clip). False: none of them run, not even that generator pass: distillation / DMD / the teacher-judged motion
    # discriminator alone: one generator pass per step instead of two and no heads (the "pure distillation" row)
    sfv_terms: bool = True
    # held-out probe: discriminator accuracy on fixed validation clips vs the generator's (0 = off)
    probe_every: int = 0
    probe_clips: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def _twice(cond: Conditioning) -> Conditioning:
    """The conditioning of a batch repeated for a [real; generated] discriminator batch."""
    return Conditioning(torch.cat([cond.latents] * 2), torch.cat([cond.image_latents] * 2),
                        torch.cat([cond.image_embeds] * 2), torch.cat([cond.time_ids] * 2))


def one_step(unet: nn.Module, cond: Conditioning, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The one-step generator: x0_hat = D_G(x0 + s * eps; s)."""
    b = noise.shape[0]
    return edm.denoise(unet, cond.latents + sigma.view(b, 1, 1, 1, 1) * noise, sigma, cond.image_latents,
                       cond.image_embeds, cond.time_ids)


def _discriminator_step(
    cfg: AdversarialConfig, disc: nn.Module, opt: torch.optim.Optimizer, accelerator: Any, cond: Conditioning,
    fake: torch.Tensor, gen: RowRandom, randn: Callable[[], torch.Tensor], step: int,
) -> dict[str, torch.Tensor]:
    """One hinge (+ lazy R1) update of the heads; real and generated clips in one forward (one data-parallel
    pass per backward). Returns the values to log (tensors: read only on logging steps)."""
    b, device = cond.latents.shape[0], cond.latents.device
    s_real = discriminator_sigmas(b, gen, cfg.d_p_mean, cfg.d_p_std).to(device)
    s_fake = discriminator_sigmas(b, gen, cfg.d_p_mean, cfg.d_p_std).to(device)
    x_real = cond.latents + s_real.view(b, 1, 1, 1, 1) * randn()
    x_fake = fake + s_fake.view(b, 1, 1, 1, 1) * randn()
    do_r1 = cfg.r1_weight > 0 and step % cfg.r1_every == 0
    if do_r1:
        x_real.requires_grad_(True)
    both = (torch.cat([x_real, x_fake]), torch.cat([s_real, s_fake]), _twice(cond))
    if do_r1:  # R1 differentiates twice; only the math attention kernel supports that on every device
        with sdpa_kernel(SDPBackend.MATH):
            logits = disc(*both)
    else:
        logits = disc(*both)
    d_real = [o[: o.shape[0] // 2] for o in logits]
    d_fake = [o[o.shape[0] // 2:] for o in logits]
    loss = hinge_d(d_real, d_fake)
    r1 = torch.zeros((), device=device)
    if do_r1:
        grad, = torch.autograd.grad(sum(r.sum() for r in d_real), x_real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss = loss + 0.5 * cfg.r1_weight * cfg.r1_every * r1
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    opt.step()
    return {"loss_d": loss.detach(), "r1": r1.detach(),
            "d_real": sum(r.detach().mean() for r in d_real) / len(d_real),
            "d_fake": sum(f.detach().mean() for f in d_fake) / len(d_fake)}


def _motion_discriminator_step(
    cfg: AdversarialConfig, mdisc: nn.Module, opt: torch.optim.Optimizer, accelerator: Any, cond: Conditioning,
    fake: torch.Tensor, gen: RowRandom, randn: Callable[[], torch.Tensor], step: int,
    real: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One hinge (+ lazy R1) update of the latent motion discriminator on [real; generated] clips (real: the
    training clip unless given)."""
    b, device = cond.latents.shape[0], cond.latents.device
    s = torch.cat([discriminator_sigmas(b, gen, cfg.motion_d_p_mean, 1.0),
                   discriminator_sigmas(b, gen, cfg.motion_d_p_mean, 1.0)]).to(device)
    real = cond.latents if real is None else real
    x = torch.cat([real, fake]) + s.view(2 * b, 1, 1, 1, 1) * torch.cat([randn(), randn()])
    do_r1 = cfg.r1_weight > 0 and step % cfg.r1_every == 0
    if do_r1:
        x.requires_grad_(True)
    logits = mdisc(x, s, torch.cat([cond.image_latents] * 2), torch.cat([cond.time_ids] * 2))
    d_real, d_fake = [o[: o.shape[0] // 2] for o in logits], [o[o.shape[0] // 2:] for o in logits]
    loss = hinge_d(d_real, d_fake)
    r1 = torch.zeros((), device=device)
    if do_r1:
        grad, = torch.autograd.grad(sum(r.sum() for r in d_real), x, create_graph=True)
        r1 = grad[:b].pow(2).flatten(1).sum(1).mean()
        loss = loss + 0.5 * cfg.r1_weight * cfg.r1_every * r1
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    opt.step()
    return {"loss_md": loss.detach(), "md_real": d_real[0].detach().mean(), "md_fake": d_fake[0].detach().mean()}


def _generator_step(
    cfg: AdversarialConfig, unet: nn.Module, disc: nn.Module, opt: torch.optim.Optimizer, accelerator: Any,
    cond: Conditioning, fake: torch.Tensor | None, gen: RowRandom, randn: Callable[[], torch.Tensor],
    clipped: list[nn.Parameter], extra_loss: Callable[[nn.Module], torch.Tensor] | None,
    teacher: nn.Module, pair: tuple[torch.Tensor, torch.Tensor] | None = None,
    dmd_fake: nn.Module | None = None, mdisc: nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One update of the generator: hinge through the (just updated) discriminator on freshly noised one-step
    clips + ``cfg.recon_weight`` x pseudo-Huber to the real clip (+ the distillation term onto the teacher's clip
    from ``pair`` = (eps, target), or sampled online) (+ DMD's term through ``dmd_fake``) (+ the motion
    discriminator's hinge term through ``mdisc``) (+ ``extra_loss``).
    Without ``fake`` (``cfg.sfv_terms`` off) SF-V's two terms are left out.
    Returns the values to log and the one-step clips from sigma_max (detached; None when neither term is on)."""
    b, device = cond.latents.shape[0], cond.latents.device
    loss, out = torch.zeros((), device=device), {}
    if fake is not None:
        s_g = discriminator_sigmas(b, gen, cfg.d_p_mean, cfg.d_p_std).to(device)
        x_g = fake + s_g.view(b, 1, 1, 1, 1) * randn()
        adv = hinge_g(disc(x_g, s_g, cond))
        rec = pseudo_huber(fake, cond.latents, cfg.huber_c)
        loss = adv + cfg.recon_weight * rec
        out = {"adv": adv.detach(), "rec": rec.detach()}
    motion_on = mdisc is not None and cfg.motion_d_weight > 0

    def motion_term(clip: torch.Tensor) -> torch.Tensor:
        s_m = discriminator_sigmas(b, gen, cfg.motion_d_p_mean, 1.0).to(device)
        adv_m = hinge_g(mdisc(clip + s_m.view(b, 1, 1, 1, 1) * randn(), s_m, cond.image_latents, cond.time_ids))
        out["adv_motion"] = adv_m.detach()
        return cfg.motion_d_weight * adv_m

    if motion_on and cfg.motion_d_real == "data" and fake is not None:
        loss = loss + motion_term(fake)
    student = None
    teacher_motion = motion_on and cfg.motion_d_real == "teacher"
    if cfg.distill_weight > 0 or cfg.dmd_weight > 0 or teacher_motion:  # drawn last: off, the stream is unchanged
        if pair is not None:
            eps, target = pair
        else:
            eps = randn()
            target = teacher_sample(teacher, cond, eps, cfg.distill_steps, *cfg.distill_guidance) \
                if cfg.distill_weight > 0 else None
        sigma_max = torch.full((b,), edm.SIGMA_MAX, device=device)
        student = edm.denoise(unet, sigma_max.view(b, 1, 1, 1, 1) * eps, sigma_max, cond.image_latents,
                              cond.image_embeds, cond.time_ids)
        if cfg.distill_weight > 0:
            distill = pseudo_huber(student, target, cfg.huber_c)
            loss = loss + cfg.distill_weight * distill
            out["distill"] = distill.detach()
            if cfg.distill_motion_weight > 0:
                motion = motion_distance(student, target, cfg.huber_c)
                loss = loss + cfg.distill_motion_weight * motion
                out["distill_motion"] = motion.detach()
        if cfg.dmd_weight > 0 and dmd_fake is not None:
            dm = dmd_generator_loss(student, cond, teacher, dmd_fake, gen, _dmd_settings(cfg))
            loss = loss + cfg.dmd_weight * dm
            out["dmd"] = dm.detach()
        if teacher_motion:
            loss = loss + motion_term(student)
    if extra_loss is not None:
        loss = loss + extra_loss(accelerator.unwrap_model(unet))
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(clipped, 1.0)
    opt.step()
    return {"loss_g": loss.detach(), **out}, (student.detach() if student is not None else None)


def _dmd_settings(cfg: AdversarialConfig) -> DMDSettings:
    return DMDSettings(cfg.dmd_sigma_min, cfg.dmd_sigma_max, tuple(cfg.distill_guidance))


def _probe_inputs(cfg: AdversarialConfig, vae: nn.Module, image_encoder: nn.Module, device: torch.device
                  ) -> tuple[Conditioning, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The held-out probe's fixed inputs, drawn once: conditioning of the validation clips, the generator's
    noise, the discriminator's noise levels and its noise for the [real; generated] batch (so successive probes
    differ only by the models)."""
    gen = torch.Generator().manual_seed(int(cfg.seed) * 104729 + 17)
    batch = {k: v.to(device) for k, v in held_out_batch(tuple(cfg.size), cfg.frames, cfg.probe_clips).items()}
    cond = encode_batch(batch, vae, image_encoder, gen, cfg.aug_mean, cfg.aug_std, embed_grad=False)
    shape = cond.latents.shape
    g_noise = torch.randn(shape, generator=gen).to(device)
    sigmas = discriminator_sigmas(shape[0], gen, cfg.d_p_mean, cfg.d_p_std).to(device)
    d_noise = torch.randn((2 * shape[0], *shape[1:]), generator=gen).to(device)
    return cond, g_noise, sigmas, d_noise


@torch.no_grad()
def _probe(unet: nn.Module, disc: nn.Module, probe: tuple[Any, ...], mdisc: nn.Module | None = None
           ) -> dict[str, float]:
    """Held-out discriminator accuracy: fixed validation clips vs the generator's one-step clips from fixed noise
    (unwrapped models, main process only, so no data-parallel collective runs on one process); with ``mdisc``,
    the motion discriminator's too (keys prefixed ``motion_``, at the same noise)."""
    cond, g_noise, sigmas, d_noise = probe
    b = cond.latents.shape[0]
    was_training = unet.training
    unet.eval()
    fake = one_step(unet, cond, torch.full((b,), edm.SIGMA_MAX, device=g_noise.device), g_noise)
    unet.train(was_training)
    both_sigmas = torch.cat([sigmas, sigmas])
    noisy = torch.cat([cond.latents, fake]) + both_sigmas.view(2 * b, 1, 1, 1, 1) * d_noise
    out = discriminator_accuracy(disc(noisy, both_sigmas, _twice(cond)))
    if mdisc is not None:
        two = _twice(cond)
        acc = discriminator_accuracy(mdisc(noisy, both_sigmas, two.image_latents, two.time_ids))
        out.update({f"motion_{k}": v for k, v in acc.items()})
    return out


def train_adversarial(
    cfg: AdversarialConfig,
    unet: UNetSpatioTemporalConditionModel,
    teacher: UNetSpatioTemporalConditionModel,
    vae: AutoencoderKLTemporalDecoder,
    image_encoder: CLIPVisionModelWithProjection,
    extra_params: list[nn.Parameter] | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    on_log: Callable[[int], dict[str, Any]] | None = None,
    extra_state: dict[str, nn.Module] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Adversarially finetune ``unet`` to one step (resumable from ``cfg.out``); returns the EMA weights.

    ``extra_params`` (e.g. temporal gate importances) train with ``cfg.lr_extra``; ``extra_loss(unet)`` is added
    to the generator loss (e.g. L1 on blend weights); ``on_log(step)`` returns extra values to log (e.g. gate
    probabilities) and ``extra_state`` modules are checkpointed with the run.
    """
    accelerator, out = start_run(cfg.out, cfg.threads, (unet, teacher, vae))
    device = accelerator.device
    vae.requires_grad_(False).eval()
    image_encoder.requires_grad_(False).eval()
    image_dim = image_encoder.config.projection_dim
    disc = Discriminator(teacher, image_dim, width=cfg.head_width, spatial=cfg.spatial_heads,
                         temporal=cfg.temporal_heads, temporal_head=cfg.temporal_head)
    extra_params = list(extra_params or [])
    extra_ids = {id(p) for p in extra_params}
    g_params = [p for p in unet.parameters() if p.requires_grad and id(p) not in extra_ids]
    groups = [{"params": g_params, "lr": cfg.lr_g, "base_lr": cfg.lr_g}]
    if extra_params:
        groups.append({"params": extra_params, "lr": cfg.lr_extra, "base_lr": cfg.lr_extra})
    opt_g = torch.optim.AdamW(groups, betas=(0.0, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.head_parameters(), lr=cfg.lr_d, betas=(0.0, 0.99), weight_decay=0.0)
    ema = EMA(unet, decay=cfg.ema_decay, warmup=20)
    ckpt = Checkpointer(out / "state")
    log = JsonlLog(out / "log.jsonl")
    step = 0
    heads = nn.ModuleDict({"heads": nn.ModuleList([disc.cond, disc.spatial, disc.temporal])})
    mdisc, opt_md, md_optim = None, None, {}
    if cfg.motion_d_weight > 0:  # checkpointed inside the heads' entry, so runs without it load unchanged
        mdisc = LatentMotionDiscriminator(unet.config.out_channels, width=cfg.motion_d_width)
        opt_md = torch.optim.AdamW(mdisc.parameters(), lr=cfg.lr_d, betas=(0.0, 0.99), weight_decay=0.0)
        heads["motion"], md_optim = mdisc, {"md": opt_md}
    dmd_fake, opt_fake, dmd_state, dmd_optim = None, None, {}, {}
    if cfg.dmd_weight > 0:  # the fake denoiser starts as the teacher (DMD) and tracks the student's clips
        dmd_fake = copy.deepcopy(teacher).requires_grad_(True).train()
        opt_fake = torch.optim.AdamW(dmd_fake.parameters(), lr=cfg.dmd_lr, weight_decay=0.0)
        dmd_state, dmd_optim = {"dmd_fake": dmd_fake}, {"dmd": opt_fake}
    if ckpt.exists():
        models = {"unet": unet, "disc_heads": heads, **dmd_state, **(extra_state or {})}
        record = ckpt.load(models, {"g": opt_g, "d": opt_d, **dmd_optim, **md_optim})
        ema.load_state_dict(ckpt.load_tensors("ema"), record["ema_updates"])
        step = int(record["step"])
    # Under ``accelerate launch`` the generator and the discriminator are data-parallel (each process its own
    # clips); the VAE and image encoder only run forward, so they are just moved to the device.
    unet, disc, opt_g, opt_d = accelerator.prepare(unet, disc, opt_g, opt_d)
    if dmd_fake is not None:
        dmd_fake, opt_fake = accelerator.prepare(dmd_fake, opt_fake)
    if mdisc is not None:
        mdisc, opt_md = accelerator.prepare(mdisc, opt_md)
    vae.to(device)
    image_encoder.to(device)
    store = PairStore(cfg.pairs, expect=fingerprints(teacher, vae, image_encoder), seed=cfg.data_seed) \
        if cfg.pairs else None
    if store is not None and tuple(store.manifest["settings"]["size"]) != tuple(cfg.size):
        raise ValueError(f"teacher pairs at {cfg.pairs} are {store.manifest['settings']['size']}, not {cfg.size}")
    if cfg.motion_d_real not in ("data", "teacher"):
        raise ValueError(f"motion_d_real must be 'data' or 'teacher', not {cfg.motion_d_real!r}")
    if cfg.motion_d_weight > 0 and cfg.motion_d_real == "teacher" and store is None:
        raise ValueError("motion_d_real='teacher' judges the teacher's stored clips: it needs a pair store (pairs)")
    if not cfg.sfv_terms and (cfg.motion_d_weight > 0 and cfg.motion_d_real == "data"):
        raise ValueError("sfv_terms=False leaves no generator clip from the noised real clip for motion_d_real='data'")
    if not cfg.sfv_terms and not (cfg.distill_weight > 0 or cfg.dmd_weight > 0 or cfg.motion_d_weight > 0):
        raise ValueError("sfv_terms=False needs another term to train on (distill_weight, dmd_weight or the "
                         "teacher-judged motion discriminator)")
    if (cfg.distill_weight > 0 and store is None) or cfg.dmd_weight > 0:
        teacher.requires_grad_(False).eval().to(device)
    if cfg.probe_every and cfg.probe_every % cfg.log_every:
        raise ValueError(f"probe_every ({cfg.probe_every}) must be a multiple of log_every ({cfg.log_every})")
    probe = _probe_inputs(cfg, vae, image_encoder, device) if cfg.probe_every and accelerator.is_main_process \
        else None
    core = accelerator.unwrap_model
    main = accelerator.is_main_process
    g_levels = generator_sigmas(cfg.g_levels, cfg.g_top)
    clips_per_step = cfg.batch * accelerator.num_processes
    loader = None
    if store is None:
        stream = data.ClipStream("train", cfg.size, seed=cfg.data_seed, start=step * clips_per_step,
                                 batch=cfg.batch, process_index=accelerator.process_index,
                                 processes=accelerator.num_processes)
        loader = iter(torch.utils.data.DataLoader(stream, batch_size=cfg.batch, num_workers=cfg.num_workers,
                                                  persistent_workers=cfg.num_workers > 0))
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or not main, desc=out.name)
    t0, seen = time.time(), 0
    while step < cfg.steps:
        for g in opt_g.param_groups:
            g["lr"] = lr_at(step, g["base_lr"], cfg.warmup, cfg.steps, 0.5)
        # per-row draws: N processes x batch rows draw what one process with the combined batch draws
        gen = RowRandom.for_step(cfg.seed * 7919, step, cfg.batch, accelerator.process_index)
        pair = None
        if store is not None:
            idx = store.indices(step, cfg.batch, accelerator.process_index, accelerator.num_processes)
            cond, eps, target = store.batch(idx, device)
            pair = (eps, target)
        else:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(loader).items()}
            batch["frames"] = batch["frames"][:, : cfg.frames]
            cond = encode_batch(batch, vae, image_encoder, gen, cfg.aug_mean, cfg.aug_std, embed_grad=False)
        b = cond.latents.shape[0]

        def randn(shape: torch.Size = cond.latents.shape, rows: RowRandom = gen) -> torch.Tensor:
            return randomness.randn(rows, shape).to(device)

        unet.train()
        fake, d = None, {}
        if cfg.sfv_terms:
            sigma_g = g_levels[randomness.randint(gen, len(g_levels), b)].to(device)
            fake = one_step(unet, cond, sigma_g, randn())
            d = _discriminator_step(cfg, disc, opt_d, accelerator, cond, fake.detach(), gen, randn, step)
            if mdisc is not None and cfg.motion_d_real == "data":
                d.update(_motion_discriminator_step(cfg, mdisc, opt_md, accelerator, cond, fake.detach(), gen,
                                                    randn, step))
        g, student = _generator_step(cfg, unet, disc, opt_g, accelerator, cond, fake, gen, randn,
                                     g_params + extra_params, extra_loss, teacher, pair, dmd_fake, mdisc)
        if mdisc is not None and cfg.motion_d_real == "teacher":  # judges what the generator step just sampled
            d.update(_motion_discriminator_step(cfg, mdisc, opt_md, accelerator, cond, student, gen, randn, step,
                                                real=pair[1]))
        if dmd_fake is not None and student is not None:
            fake_loss = fake_denoiser_loss(dmd_fake, student, cond, gen, _dmd_settings(cfg))
            opt_fake.zero_grad(set_to_none=True)
            accelerator.backward(fake_loss)
            opt_fake.step()
            g["dmd_fake"] = fake_loss.detach()
        ema.update(core(unet))
        step += 1
        seen += clips_per_step
        bar.update(1)
        if step % cfg.log_every == 0 and main:
            el = time.time() - t0
            row = {"step": step, **{k: float(v) for k, v in {**d, **g}.items()}, "clips_per_s": seen / el,
                   "elapsed_s": el}
            if probe is not None and step % cfg.probe_every == 0:
                row.update(_probe(core(unet), core(disc), probe, core(mdisc) if mdisc is not None else None))
            if on_log is not None:
                row.update(on_log(step))
            log.write(**row)
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss_d", "adv", "rec", "distill") if k in row})
        if (step % cfg.ckpt_every == 0 or step == cfg.steps) and main:
            ckpt.save(step, {"unet": core(unet), "disc_heads": heads, "ema": ema.state_dict(),
                             **({"dmd_fake": core(dmd_fake)} if dmd_fake is not None else {}),
                             **(extra_state or {})}, {"g": opt_g, "d": opt_d, **dmd_optim, **md_optim},
                      meta={"ema_updates": ema.updates, "config": asdict(cfg)})
    bar.close()
    return {"ema_unet": ema.state_dict(), "log": str(log.path)}


__all__ = [
    "AdversarialConfig",
    "Discriminator",
    "FrozenEncoder",
    "discriminator_sigmas",
    "generator_sigmas",
    "hinge_d",
    "hinge_g",
    "motion_distance",
    "one_step",
    "pseudo_huber",
    "train_adversarial",
]


def finetune_one_step(
    cfg: AdversarialConfig,
    unet: UNetSpatioTemporalConditionModel,
    teacher: UNetSpatioTemporalConditionModel,
    vae: AutoencoderKLTemporalDecoder,
    image_encoder: CLIPVisionModelWithProjection,
    progress: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`train_adversarial`, then ``unet`` takes its EMA weights (what every one-step stage ships)."""
    res = train_adversarial(cfg, unet, teacher, vae, image_encoder, progress=progress, **kw)
    unet.load_state_dict({k: v.to(unet.state_dict()[k].dtype) for k, v in res["ema_unet"].items()})
    return res

