"""Optimized cross-attention (MobileVD, docs/paper.md §3): exact rewrite of single-token cross-attention.

SVD's cross-attention context is ONE token (the CLIP image embedding; for temporal blocks, the first frame's
token per spatial position). A softmax over a single key is exactly 1, so every query receives the same value
row: ``attn(x, c) = to_out(to_v(c))``. The rewrite skips ``to_q``, ``to_k``, the similarity map and the
softmax, computes ``to_out(to_v(c))`` once per context token and broadcasts it over the queries.

Choice: the rewritten module DROPS ``to_q`` and ``to_k`` (they can never influence the output). Its
state-dict keys are ``attn2.to_v.*``, ``attn2.to_out.0.*`` (and ``attn2.norm_cross.*`` when present), i.e. a
subset of the original keys. Consequences for loading:
- a stage folder saved after this transform lacks ``attn2.to_q/to_k``; rebuilding the architecture with
  :func:`optimize_cross_attention` (which works on the meta device) and loading strictly matches exactly;
- a parent (pre-transform) state dict loads into a rewritten UNet after :func:`strip_dropped_keys`, or load
  the parent weights first and apply the transform afterwards (it copies the kept modules, not their values).
Only plain linear ops are used, so ``torch.utils.flop_counter`` sees every FLOP.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock, TemporalBasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn

# Sub-keys of an Attention that the rewrite removes (relative to the attention module).
DROPPED_SUBMODULES: tuple[str, ...] = ("to_q", "to_k")


class SingleTokenCrossAttention(nn.Module):
    """Drop-in replacement for a diffusers ``Attention`` used as cross-attention on a one-token context.

    Keeps ``to_v``, ``to_out`` (and ``norm_cross``) under their original names so their weights keep their
    state-dict keys. ``heads``/``dim_head`` are kept as metadata (channel funnels need the head layout).
    """

    def __init__(
        self,
        to_v: nn.Linear,
        to_out: nn.ModuleList,
        heads: int,
        dim_head: int,
        norm_cross: nn.Module | None = None,
        residual_connection: bool = False,
        rescale_output_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.to_v = to_v
        self.to_out = to_out
        self.norm_cross = norm_cross
        self.heads = heads
        self.dim_head = dim_head
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor
        # Optional (v, o) channel funnel, set by explorer.transforms.funnels (None = no funnel).
        self.funnel_v: nn.Module | None = None
        self.funnel_o: nn.Module | None = None

    @classmethod
    def from_attention(cls, attn: Attention) -> SingleTokenCrossAttention:
        """Build from an existing cross-attention, sharing (not copying) its kept submodules.

        ``spatial_norm``, ``group_norm``, ``norm_q``/``norm_k`` only touch queries/keys, which no longer matter.
        """
        return cls(
            to_v=attn.to_v,
            to_out=attn.to_out,
            heads=attn.heads,
            dim_head=attn.to_v.out_features // attn.heads,
            norm_cross=attn.norm_cross,
            residual_connection=bool(attn.residual_connection),
            rescale_output_factor=float(attn.rescale_output_factor),
        )

    def context_value(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """``to_out(to_v(c))`` for every context token: (batch, 1, out_dim)."""
        ctx = encoder_hidden_states
        if self.norm_cross is not None:
            if isinstance(self.norm_cross, nn.GroupNorm):
                ctx = self.norm_cross(ctx.transpose(1, 2)).transpose(1, 2)
            else:
                ctx = self.norm_cross(ctx)
        value = self.to_v(ctx)
        if self.funnel_v is not None:
            value = self.funnel_v(value)
        if self.funnel_o is not None:
            value = self.funnel_o(value)
        value = self.to_out[0](value)
        return self.to_out[1](value)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("SingleTokenCrossAttention needs a context (encoder_hidden_states); got None")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-2] != 1:
            raise ValueError(
                "optimized cross-attention is exact only for a ONE-token context; got encoder_hidden_states of "
                f"shape {tuple(encoder_hidden_states.shape)} ({encoder_hidden_states.shape[-2]} tokens). "
                "Use the original diffusers Attention for multi-token contexts."
            )
        if attention_mask is not None:
            raise ValueError("optimized cross-attention does not support an attention mask")
        value = self.context_value(encoder_hidden_states)  # (B, 1, C)
        if hidden_states.ndim == 4:  # (B, C, H, W) input layout of diffusers' Attention
            out = value.transpose(1, 2)[..., None].expand(-1, -1, *hidden_states.shape[-2:])
        else:
            out = value.expand(hidden_states.shape[0], hidden_states.shape[1], value.shape[-1])
        if self.residual_connection:
            out = out + hidden_states
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out


def cross_attention_paths(unet: nn.Module) -> list[str]:
    """Module paths of every cross-attention (``attn2`` of spatial and temporal transformer blocks)."""
    paths = []
    for name, module in unet.named_modules():
        if isinstance(module, (BasicTransformerBlock, TemporalBasicTransformerBlock)):
            attn2 = getattr(module, "attn2", None)
            if attn2 is not None:
                paths.append(f"{name}.attn2" if name else "attn2")
    return paths


def optimize_cross_attention(unet: nn.Module) -> nn.Module:
    """Replace every cross-attention of ``unet`` (in place) by :class:`SingleTokenCrossAttention`.

    Works on any device including meta (it re-uses the existing ``to_v``/``to_out`` modules). Idempotent.
    """
    for module in unet.modules():
        if isinstance(module, (BasicTransformerBlock, TemporalBasicTransformerBlock)):
            attn2 = getattr(module, "attn2", None)
            if isinstance(attn2, Attention):
                if not attn2.is_cross_attention:
                    continue  # attn2 without a cross_attention_dim is self-attention: not rewritable
                module.attn2 = SingleTokenCrossAttention.from_attention(attn2)
    return unet


def is_optimized(unet: nn.Module) -> bool:
    """True when every cross-attention of ``unet`` is the single-token rewrite."""
    attns = [m.attn2 for m in unet.modules() if isinstance(m, (BasicTransformerBlock, TemporalBasicTransformerBlock))]
    attns = [a for a in attns if a is not None]
    return bool(attns) and all(isinstance(a, SingleTokenCrossAttention) for a in attns)


_DROPPED_KEY = re.compile(r"(^|\.)(transformer_blocks|temporal_transformer_blocks)\.\d+\.attn2\.(to_q|to_k)\.")


def strip_dropped_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A parent (pre-rewrite) state dict without the cross-attention ``to_q``/``to_k`` entries.

    Lets a parent checkpoint load strictly into a UNet rewritten by :func:`optimize_cross_attention`.
    """
    return {k: v for k, v in state_dict.items() if not _DROPPED_KEY.search(k)}
