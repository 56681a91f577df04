"""Distribution matching (DMD, Yin et al. 2024) for the one-step stages: the teacher's score as the judge.

Why (issue 13, docs/training.md, session 20): regressing the one-step output onto the teacher's sample from the
same noise asks the student to reproduce the teacher's own noise-to-motion map, which it did not learn in 400
steps (its motion field is unrelated to the teacher's on the same noise: cosine 0.02), so it moves the same in
every motion bucket; and the SF-V discriminator on the frozen tiny encoder does not separate real from generated
clips. Distribution matching asks only that the student's clips, noised to any level, look to the teacher like
its own samples for that conditioning (motion bucket included): the gradient is the difference between a "fake"
denoiser (trained online on the student's clips) and the teacher's, so the student may pick any noise-to-motion
map that gives the teacher's distribution. DMD (v1) pairs it with exactly the regression onto stored teacher
pairs that the shipped recipe already has. A deviation from the paper, off by default
(``AdversarialConfig.dmd_weight = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer import edm, randomness
from explorer.randomness import Random
from explorer.training.denoise import Conditioning
from explorer.training.distill import guided_denoise


@dataclass(frozen=True)
class DMDSettings:
    sigma_min: float = 0.1  # the levels the two denoisers are compared at: log-uniform in [sigma_min, sigma_max]
    sigma_max: float = 80.0
    guidance: tuple[float, float] = (1.0, 3.0)  # the teacher's CFG ramp over frames (as the stored pairs)
    fake_p_mean: float = 0.7  # the fake denoiser's training levels (SVD's log-normal)
    fake_p_std: float = 1.6


def dmd_sigmas(n: int, generator: Random, settings: DMDSettings) -> torch.Tensor:
    lo, hi = math.log(settings.sigma_min), math.log(settings.sigma_max)
    return torch.exp(lo + (hi - lo) * randomness.rand(generator, n))


def dmd_generator_loss(student: torch.Tensor, cond: Conditioning, teacher: nn.Module, fake: nn.Module,
                       generator: Random, settings: DMDSettings) -> torch.Tensor:
    """A loss whose gradient with respect to ``student`` (the one-step clips, (B, F, C, h, w)) is DMD's
    distribution-matching gradient (fake denoiser minus teacher at a random level, normalised per clip by the
    teacher's mean absolute error) divided by the number of elements. Neither denoiser gets a gradient."""
    b = student.shape[0]
    sigma = dmd_sigmas(b, generator, settings).to(student.device)
    noise = randomness.randn(generator, student.shape).to(student.device)
    with torch.no_grad():
        noisy = student.detach() + sigma.view(b, 1, 1, 1, 1) * noise
        real = guided_denoise(teacher, noisy, sigma, cond, settings.guidance)
        fake_x0 = edm.denoise(fake, noisy, sigma, cond.image_latents, cond.image_embeds, cond.time_ids)
        scale = (student.detach() - real).abs().flatten(1).mean(1).clamp_min(1e-5).view(b, 1, 1, 1, 1)
        grad = (fake_x0 - real) / scale
    return 0.5 * F.mse_loss(student, (student - grad).detach())


def fake_denoiser_loss(fake: nn.Module, clips: torch.Tensor, cond: Conditioning, generator: Random,
                       settings: DMDSettings) -> torch.Tensor:
    """EDM-weighted denoising loss of the fake denoiser on the student's (detached) clips: it tracks the
    distribution the student generates now."""
    b = clips.shape[0]
    sigma = edm.lognormal_sigmas(b, settings.fake_p_mean, settings.fake_p_std, generator).to(clips.device)
    noise = randomness.randn(generator, clips.shape).to(clips.device)
    x0 = clips.detach()
    denoised = edm.denoise(fake, x0 + sigma.view(b, 1, 1, 1, 1) * noise, sigma, cond.image_latents,
                           cond.image_embeds, cond.time_ids)
    return (edm.loss_weight(sigma).view(b, 1, 1, 1, 1) * (denoised - x0) ** 2).mean()


__all__ = ["DMDSettings", "dmd_generator_loss", "dmd_sigmas", "fake_denoiser_loss"]
