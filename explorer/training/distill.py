"""What one-step finetuning needs besides the adversarial game: the teacher's own samples as regression targets,
and a held-out measure of whether the discriminator separates real from generated clips at all.

Why (issue 13, docs/training.md): at tiny scale the discriminator never separated real from generated clips
(hinge loss stayed at its zero-logit value 2), so the generator learned only the 0.1 x pseudo-Huber term, the
mean over every motion a seed could mean: a blur that fades. Regressing the one-step output onto the teacher's
multi-step sample *from the same noise* makes each seed commit to one motion (a deviation from the paper, off
by default: ``AdversarialConfig.distill_weight = 0``), and the held-out accuracy shows whether the adversarial
term does anything.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from explorer import data, edm
from explorer.training.denoise import Conditioning


@torch.no_grad()
def teacher_sample(teacher: nn.Module, cond: Conditioning, noise: torch.Tensor, steps: int = 8,
                   min_guidance: float = 1.0, max_guidance: float = 3.0) -> torch.Tensor:
    """The teacher's clip from ``sigma_max * noise``: EDM Euler steps over ``steps`` Karras levels, then the
    denoised estimate at the last level, with SVD's classifier-free guidance ramp over frames (the unconditional
    branch gets zero image latents and a zero image embedding, as SVD's pipeline does). (B, F, C, h, w)."""
    if steps < 1:
        raise ValueError(f"teacher steps must be >= 1, got {steps}")
    b, f = noise.shape[:2]
    sigmas = edm.karras_sigmas(steps).to(noise.device, noise.dtype)
    scale = edm.guidance_ramp(f, min_guidance, max_guidance).to(noise.device, noise.dtype).view(1, f, 1, 1, 1)
    guided = max_guidance > 1.0 or min_guidance > 1.0
    x = noise * sigmas[0]
    for i, sigma in enumerate(sigmas):
        s = sigma.expand(b)
        if guided:
            both = edm.denoise(teacher, torch.cat([x, x]), torch.cat([s, s]),
                               torch.cat([torch.zeros_like(cond.image_latents), cond.image_latents]),
                               torch.cat([torch.zeros_like(cond.image_embeds), cond.image_embeds]),
                               torch.cat([cond.time_ids, cond.time_ids]))
            uncond, conditional = both.chunk(2)
            x0 = uncond + scale * (conditional - uncond)
        else:
            x0 = edm.denoise(teacher, x, s, cond.image_latents, cond.image_embeds, cond.time_ids)
        if i == len(sigmas) - 1:
            return x0
        x = x0 + (x - x0) * (sigmas[i + 1] / sigma)  # Euler on the probability-flow ODE: dx/ds = (x - D) / s
    return x  # unreachable


def held_out_batch(size: tuple[int, int], frames: int, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` fixed validation clips (never trained on) as one batch, for the held-out discriminator probe."""
    clips = data.eval_clips("val", n, size, seed=seed)
    return {"frames": torch.stack([c.frames[:frames] for c in clips]),
            "motion_bucket_id": torch.tensor([c.motion_bucket_id for c in clips], dtype=torch.long),
            "fps": torch.tensor([c.fps for c in clips], dtype=torch.long)}


@torch.no_grad()
def discriminator_accuracy(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, sigmas: torch.Tensor,
                           noise: tuple[torch.Tensor, torch.Tensor], cond: Conditioning) -> dict[str, float]:
    """How often the discriminator's heads call held-out real clips real (logit > 0) and generated ones generated
    (logit < 0), both noised at ``sigmas`` with the given noise. Chance is 0.5; a discriminator that has not
    separated them scores about 0.5 on both, one that has collapsed to a constant scores 1 on one side."""
    b = real.shape[0]
    s = sigmas.view(b, 1, 1, 1, 1)
    twice = Conditioning(torch.cat([cond.latents] * 2), torch.cat([cond.image_latents] * 2),
                         torch.cat([cond.image_embeds] * 2), torch.cat([cond.time_ids] * 2))
    logits = disc(torch.cat([real + s * noise[0], fake + s * noise[1]]), torch.cat([sigmas, sigmas]), twice)
    acc_real = torch.stack([(o[:b] > 0).float().mean() for o in logits]).mean()
    acc_fake = torch.stack([(o[b:] < 0).float().mean() for o in logits]).mean()
    return {"heldout_acc_real": float(acc_real), "heldout_acc_fake": float(acc_fake),
            "heldout_acc": float((acc_real + acc_fake) / 2)}


def probe_inputs(cfg: Any, vae: nn.Module, image_encoder: nn.Module, device: torch.device
                 ) -> tuple[Conditioning, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The held-out probe's fixed inputs, drawn once: conditioning of the validation clips, the generator's
    noise, the discriminator's noise levels and its two noise draws (so successive probes differ only by the
    models)."""
    from explorer.training.adversarial import discriminator_sigmas
    from explorer.training.denoise import encode_batch

    gen = torch.Generator().manual_seed(int(cfg.seed) * 104729 + 17)
    batch = held_out_batch(tuple(cfg.size), cfg.frames, cfg.probe_clips, seed=0)
    batch = {k: v.to(device) for k, v in batch.items()}
    cond = encode_batch(batch, vae, image_encoder, gen, cfg.aug_mean, cfg.aug_std, embed_grad=False)
    shape = cond.latents.shape
    g_noise = torch.randn(shape, generator=gen).to(device)
    sigmas = discriminator_sigmas(shape[0], gen, cfg.d_p_mean, cfg.d_p_std).to(device)
    d_noise = (torch.randn(shape, generator=gen).to(device), torch.randn(shape, generator=gen).to(device))
    return cond, g_noise, sigmas, d_noise


__all__ = ["discriminator_accuracy", "held_out_batch", "probe_inputs", "teacher_sample"]
