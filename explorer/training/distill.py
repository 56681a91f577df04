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

import torch
from torch import nn

from explorer import data, edm
from explorer.training.denoise import Conditioning


def guided_denoise(teacher: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                   guidance: tuple[float, float]) -> torch.Tensor:
    """The teacher's denoised estimate at ``sigma`` (B,) with SVD's classifier-free guidance ramp over frames (the
    unconditional branch gets zero image latents and a zero image embedding, as SVD's pipeline does); a single
    conditional evaluation when neither end of the ramp exceeds 1."""
    if max(guidance) <= 1.0:
        return edm.denoise(teacher, x, sigma, cond.image_latents, cond.image_embeds, cond.time_ids)
    f = x.shape[1]
    both = edm.denoise(teacher, torch.cat([x, x]), torch.cat([sigma, sigma]),
                       torch.cat([torch.zeros_like(cond.image_latents), cond.image_latents]),
                       torch.cat([torch.zeros_like(cond.image_embeds), cond.image_embeds]),
                       torch.cat([cond.time_ids, cond.time_ids]))
    uncond, conditional = both.chunk(2)
    scale = edm.guidance_ramp(f, *guidance).to(x.device, x.dtype).view(1, f, 1, 1, 1)
    return uncond + scale * (conditional - uncond)


@torch.no_grad()
def teacher_sample(teacher: nn.Module, cond: Conditioning, noise: torch.Tensor, steps: int = 8,
                   min_guidance: float = 1.0, max_guidance: float = 3.0) -> torch.Tensor:
    """The teacher's clip from ``sigma_max * noise``: EDM Euler steps over ``steps`` Karras levels, then the
    denoised estimate at the last level, with SVD's classifier-free guidance ramp over frames (the unconditional
    branch gets zero image latents and a zero image embedding, as SVD's pipeline does). (B, F, C, h, w)."""
    if steps < 1:
        raise ValueError(f"teacher steps must be >= 1, got {steps}")
    b = noise.shape[0]
    sigmas = edm.karras_sigmas(steps).to(noise.device, noise.dtype)

    def denoised(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_denoise(teacher, x, sigma.expand(b), cond, (min_guidance, max_guidance))

    x = noise * sigmas[0]
    for sigma, following in zip(sigmas[:-1], sigmas[1:], strict=True):
        x0 = denoised(x, sigma)
        x = x0 + (x - x0) * (following / sigma)  # Euler on the probability-flow ODE: dx/ds = (x - D) / s
    return denoised(x, sigmas[-1])


def held_out_batch(size: tuple[int, int], frames: int, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` fixed validation clips (never trained on) as one batch, for the held-out discriminator probe."""
    clips = data.eval_clips("val", n, size, seed=seed)
    return {"frames": torch.stack([c.frames[:frames] for c in clips]),
            "motion_bucket_id": torch.tensor([c.motion_bucket_id for c in clips], dtype=torch.long),
            "fps": torch.tensor([c.fps for c in clips], dtype=torch.long)}


def discriminator_accuracy(logits: list[torch.Tensor]) -> dict[str, float]:
    """How often the discriminator's heads call real clips real (logit > 0) and generated ones generated
    (logit < 0), from the logits of a [real; generated] batch (one tensor per head, real rows first). Chance is
    0.5; a discriminator that has not separated them scores about 0.5 on both, one that has collapsed to a
    constant scores 1 on one side.

    ``heldout_rank``: how often row i's real clip gets a higher logit than row i's generated clip (same
    conditioning, same noise level): threshold-free. Why (session 20): the 0-threshold accuracy also measures
    calibration; the logits' offset moves with the noise level and the conditioning, so a head that ranks real
    above generated can still score 0.5 there, and the generator's gradient does not depend on that offset."""
    half = [(o[: o.shape[0] // 2], o[o.shape[0] // 2:]) for o in logits]
    acc_real = torch.stack([(r > 0).float().mean() for r, _ in half]).mean()
    acc_fake = torch.stack([(f < 0).float().mean() for _, f in half]).mean()
    rank = torch.stack([(r > f).float().mean() for r, f in half]).mean()
    return {"heldout_acc_real": float(acc_real), "heldout_acc_fake": float(acc_fake),
            "heldout_acc": float((acc_real + acc_fake) / 2), "heldout_rank": float(rank)}


__all__ = ["discriminator_accuracy", "guided_denoise", "held_out_batch", "teacher_sample"]
