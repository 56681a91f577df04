"""Exact CPU speed-ups for diffusers' video modules (same parameters, same state-dict keys, same outputs).

PyTorch's CPU backend runs ``nn.Conv3d`` through its slow reference kernel, while SVD's temporal convolutions
(kernel (k, 1, 1) in the temporal resnets and the VAE's temporal decoder) are really 1-D convolutions over time.
Running them as ``conv2d`` over (time, height*width) uses the fast oneDNN path: identical maths, several times
faster on the 2-core machines this project targets. Nothing changes on GPUs, where the swap is not applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv3d(nn.Conv3d):
    """A ``(k, 1, 1)`` Conv3d evaluated as a Conv2d over (time, height*width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, T, H, W)
        b, c, t, h, w = x.shape
        y = F.conv2d(
            x.reshape(b, c, t, h * w), self.weight.squeeze(-1), self.bias,
            stride=(self.stride[0], 1), padding=(self.padding[0], 0), dilation=(self.dilation[0], 1),
            groups=self.groups,
        )
        return y.reshape(b, y.shape[1], y.shape[2], h, w)


def _is_temporal(conv: nn.Conv3d) -> bool:
    return (
        tuple(conv.kernel_size[1:]) == (1, 1)
        and tuple(conv.stride[1:]) == (1, 1)
        and tuple(conv.padding[1:]) == (0, 0)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def use_fast_temporal_convs(model: nn.Module) -> int:
    """Swap every temporal-only Conv3d of ``model`` to :class:`TemporalConv3d` in place; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv3d and _is_temporal(module):
            module.__class__ = TemporalConv3d
            swapped += 1
    return swapped
