"""A latent motion discriminator for the one-step stages, trained from scratch beside SF-V's heads.

Why (issue 13, docs/training.md, sessions 16-21): every one-step student moves about half a reference pixel per
frame whatever the motion bucket asks for. The SF-V discriminator (heads on the frozen tiny encoder) never
separated real from generated clips, and the regression onto the teacher's clips asks the student to reproduce
the teacher's own noise-to-motion map, which it does not learn (its motion field is unrelated to the teacher's on
the same noise). This judge looks where the failure is: a small 3-D convolutional network over the latent clip
*and its frame-to-frame differences*, conditioned projection-style on the motion bucket, fps and noise
augmentation (the micro-conditioning ``time_ids``) and on the noise level it sees. "Too little motion for bucket
200" is then a first-layer feature, and the generator may choose any noise-to-direction map that gives motion of
the requested size: an adversarial loss is mode-seeking where regression averages directions away.
A deviation from the paper; off by default (``AdversarialConfig.motion_d_weight = 0``).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from explorer import edm


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class LatentMotionDiscriminator(nn.Module):
    """Per-frame logits for a latent clip (B, F, C, h, w) noised at ``sigma`` (B,).

    Input per frame: the noised latent (scaled by c_in), its difference to the previous frame (zero for frame 0)
    and the conditioning image latent. Body: 3-D convolutions (time x space), two spatial downsamplings; output:
    a per-location logit averaged over space, plus a projection of the space-pooled features onto the embedded
    conditioning (bucket, fps, augmentation, noise level).
    """

    def __init__(self, latent_channels: int, width: int = 64, cond_dim: int = 128) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv3d(3 * latent_channels, w, 3, padding=1), _norm(w), nn.SiLU(),
            nn.Conv3d(w, w, 3, stride=(1, 2, 2), padding=1), _norm(w), nn.SiLU(),
            nn.Conv3d(w, 2 * w, 3, stride=(1, 2, 2), padding=1), _norm(2 * w), nn.SiLU(),
            nn.Conv3d(2 * w, 2 * w, 3, padding=1), nn.SiLU(),
        )
        self.out = nn.Conv3d(2 * w, 1, 1)
        self.cond = nn.Sequential(nn.Linear(4 * 32, cond_dim), nn.SiLU(), nn.Linear(cond_dim, 2 * w))

    def embed(self, time_ids: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(B, 2w): Fourier features of fps-1, bucket, augmentation x 100 and c_noise x 250, through an MLP."""
        scalars = torch.cat([time_ids[:, :1], time_ids[:, 1:2], time_ids[:, 2:3] * 100.0,
                             (edm.c_noise(sigma) * 250.0).view(-1, 1)], dim=1)
        fourier = get_timestep_embedding(scalars.flatten(), 32).reshape(scalars.shape[0], -1)
        return self.cond(fourier.to(time_ids.dtype))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, image_latents: torch.Tensor,
                time_ids: torch.Tensor) -> list[torch.Tensor]:
        b, f = x.shape[:2]
        xin = x * edm.c_in(sigma.view(b, 1, 1, 1, 1))
        diff = torch.cat([torch.zeros_like(xin[:, :1]), xin.diff(dim=1)], dim=1)
        image = image_latents.unsqueeze(1).expand(b, f, *image_latents.shape[1:])
        h = self.body(torch.cat([xin, diff, image], dim=2).transpose(1, 2))  # (B, 2w, F, h', w')
        logits = self.out(h).mean(dim=(1, 3, 4))  # (B, F)
        pooled = h.mean(dim=(3, 4)).transpose(1, 2)  # (B, F, 2w)
        proj = (pooled * self.embed(time_ids, sigma).unsqueeze(1)).sum(-1) / math.sqrt(pooled.shape[-1])
        return [(logits + proj).reshape(-1)]  # one "head", (B*F,), as the hinge losses expect


__all__ = ["LatentMotionDiscriminator"]
