"""SVD's denoiser parameterisation (EDM with v-prediction), shared by training, distillation and sampling.

It mirrors diffusers' ``EulerDiscreteScheduler`` as SVD configures it (``prediction_type='v_prediction'``,
``timestep_type='continuous'``, Karras sigmas 0.002..700), so a UNet trained here samples correctly with the
stock ``StableVideoDiffusionPipeline``:

    c_in = 1 / sqrt(s^2 + 1)      (scheduler.scale_model_input)
    c_noise = 0.25 * ln(s)        (the UNet's timestep)
    D(x) = x / (s^2 + 1) - s / sqrt(s^2 + 1) * F(c_in x)   (c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1))

with sigma_data = 1 (latents are scaled to unit variance by the VAE's scaling factor).
"""

from __future__ import annotations

import torch
from torch import nn

from explorer import randomness
from explorer.randomness import Random

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.sqrt(sigma**2 + 1.0)


def c_skip(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (sigma**2 + 1.0)


def c_out(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma / torch.sqrt(sigma**2 + 1.0)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return 0.25 * torch.log(sigma)


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's lambda(s) = (s^2 + 1) / s^2: makes the x0 error equivalent to a unit-weight v error."""
    return (sigma**2 + 1.0) / sigma**2


def lognormal_sigmas(
    n: int, p_mean: float, p_std: float, generator: Random = None, device: str = "cpu"
) -> torch.Tensor:
    """Training noise levels ln(s) ~ N(p_mean, p_std^2) (EDM; SVD uses p_mean 0.7, p_std 1.6 for video);
    ``generator``: a torch.Generator or an :class:`explorer.randomness.RowRandom` (one stream per batch row)."""
    return torch.exp(p_mean + p_std * randomness.randn(generator, n)).to(device)


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0) -> torch.Tensor:
    """The ``n`` Karras noise levels from ``sigma_max`` down to ``sigma_min`` (descending)."""
    if n == 1:
        return torch.tensor([sigma_max])
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def added_time_ids(fps: torch.Tensor | float, motion_bucket: torch.Tensor | float, noise_aug: torch.Tensor | float,
                   batch: int | None = None) -> torch.Tensor:
    """SVD's micro-conditioning ``[fps - 1, motion_bucket_id, noise_aug_strength]`` (the pipeline subtracts 1)."""
    parts = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (fps, motion_bucket, noise_aug)]
    n = batch or max(p.numel() for p in parts)
    parts = [p.expand(n) if p.numel() == 1 else p for p in parts]
    return torch.stack([parts[0] - 1.0, parts[1], parts[2]], dim=1)


def denoise(
    unet: nn.Module,
    noisy: torch.Tensor,
    sigma: torch.Tensor,
    image_latents: torch.Tensor,
    image_embeds: torch.Tensor,
    time_ids: torch.Tensor,
) -> torch.Tensor:
    """D(x; s): the denoised latent clip from noisy latents (B, F, C, H, W) at per-sample noise ``sigma`` (B,).

    ``image_latents`` (B, C, H, W) is the unscaled VAE mode of the noise-augmented first frame, concatenated to
    every frame as SVD's pipeline does; ``image_embeds`` (B, 1, D) is the single cross-attention token.
    """
    b, f = noisy.shape[:2]
    s = sigma.reshape(b, 1, 1, 1, 1).to(noisy.dtype)
    cond = image_latents.unsqueeze(1).expand(b, f, *image_latents.shape[1:])
    model_in = torch.cat([noisy * c_in(s), cond], dim=2)
    timestep = c_noise(sigma.reshape(b)).to(noisy.dtype)
    out = unet(model_in, timestep, encoder_hidden_states=image_embeds, added_time_ids=time_ids).sample
    return c_skip(s) * noisy + c_out(s) * out


def guidance_ramp(frames: int, min_guidance: float, max_guidance: float) -> torch.Tensor:
    """SVD's classifier-free guidance scale, linear across frames from ``min`` to ``max``."""
    return torch.linspace(min_guidance, max_guidance, frames)


__all__ = [
    "SIGMA_MIN",
    "SIGMA_MAX",
    "added_time_ids",
    "c_in",
    "c_noise",
    "c_out",
    "c_skip",
    "denoise",
    "guidance_ramp",
    "karras_sigmas",
    "lognormal_sigmas",
    "loss_weight",
]
