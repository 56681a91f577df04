"""Channel funnels with coupled singular initialisation (MobileVD, docs/paper.md §3; Tables 4 and 5).

A funnel is a pair of trainable matrices inserted between two affine maps whose product is all that matters,
narrowing the width between them by the fun-factor ``r``. During finetuning the funnels are separate
parameters; :func:`merge_funnels` folds them into the neighbouring weights (plain narrower layers, no loss).

Placement (project choices, docs/paper.md, "ours"):
- every attention, per head, head dim ``d -> rd = round(r*d)``:
  * (W_q, W_k): the similarity of head h depends only on ``W_q_h^T W_k_h``; funnels ``F_q, F_k`` (rd x d) act
    after ``to_q``/``to_k``;
  * (W_v, W_o): head h contributes ``W_o_h W_v_h``; funnel ``F_v`` (rd x d) after ``to_v`` and ``G_o`` (d x rd)
    before ``to_out``;
  targets: spatial self-attention (``BasicTransformerBlock.attn1``), temporal self-attention
  (``TemporalBasicTransformerBlock.attn1``) and cross-attention (``attn2``). A cross-attention still in
  diffusers form gets both per-head pairs. A cross-attention already rewritten by the optimized
  cross-attention (one context token: its output is ``to_out(to_v(c))``, heads play no role) only has the
  (v, o) pair, funnelled as ONE funnel of the same total width ``H*rd`` across heads (the best rank-(H*rd)
  approximation of ``W_o W_v`` is at least as good as the per-head one, and merges to the same shapes).
- Attention scale: the merged attention keeps the ORIGINAL 1/sqrt(d). diffusers' default processor uses
  1/sqrt(head dim) of the tensors it gets (it ignores ``attn.scale``), so the merge folds sqrt(rd)/sqrt(d)
  into ``W_q`` (and ``b_q``) and sets ``attn.scale = rd**-0.5``: the merged module is a plain diffusers
  ``Attention`` that is correct under any diffusers processor. While funnels are separate, the funnel
  processor passes the original scale explicitly.
- Coupled singular initialisation (CSI): for a pair with product ``X^T Y`` (X, Y with d rows; biases
  appended as a column of Y), QR-factor ``X^T = Q_x R_x``, ``Y^T = Q_y R_y``, SVD ``R_x R_y^T = U S V^T`` and
  set ``F_x = (R_x^+ U_k S_k^{1/2})^T``, ``F_y = (R_y^+ V_k S_k^{1/2})^T``: then
  ``X^T F_x^T F_y Y = Q_x U_k S_k V_k^T Q_y^T``, the best rank-k approximation of ``X^T Y`` (Eckart-Young);
  at r = 1, ``F_x^T F_y = I`` and the network is unchanged. He initialisation is the Table 4 ablation.
- Convolution funnels (Table 5 ablation, ``convs=True``): in every spatial ``ResnetBlock2D`` between ``conv1``
  (+ the time-embedding projection, added before ``norm2``) and ``conv2``: ``F`` (1x1, C -> rC) after the
  time-embedding add, ``norm2`` rebuilt on rC channels, ``G`` (1x1, rC -> C) before ``conv2``. GroupNorm and
  SiLU sit between, so CSI does not apply; the analogue init ``select`` keeps whole GroupNorm groups (ranked
  by |gamma| x the norm of conv2's input weights), which leaves the kept channels' normalisation unchanged
  and the block exact at r = 1. The merge folds F into conv1/time_emb_proj and G into conv2 (exact).
- Truncated SVD of weights (Table 5 ablation): each attention projection W (out x in) -> two linears of rank
  ``round(r*min(out, in))`` from its SVD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock, TemporalBasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D, SpatioTemporalResBlock
from torch import nn

from explorer import stages as registry
from explorer.transforms.cross_attention import SingleTokenCrossAttention

ATTENTION_KINDS: tuple[str, ...] = ("spatial", "temporal", "cross")


def funnel_width(dim: int, fun_factor: float) -> int:
    """Narrowed width round(r*dim), at least 1."""
    return max(1, int(round(fun_factor * dim)))


def _is_meta(t: torch.Tensor) -> bool:
    return t.device.type == "meta"


# ----------------------------------------------------------------------------------------------------------
# Modules


class HeadFunnel(nn.Module):
    """Per-head linear map (heads x out x in): the funnel matrices of one projection, as a batched matmul."""

    def __init__(self, heads: int, in_dim: int, out_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, out_dim, in_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads, out_dim, in_dim = self.weight.shape
        xs = x.reshape(*x.shape[:-1], heads, in_dim)
        y = torch.einsum("...hi,hoi->...ho", xs, self.weight)
        return y.reshape(*x.shape[:-1], heads * out_dim)

    def extra_repr(self) -> str:
        h, o, i = self.weight.shape
        return f"heads={h}, in={i}, out={o}"


class FunnelAttnProcessor:
    """diffusers attention with funnels after to_q/to_k/to_v and before to_out, and an explicit scale."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if getattr(attn, "funnel_q", None) is not None:
            query = attn.funnel_q(query)
            key = attn.funnel_k(key)
        if getattr(attn, "funnel_v", None) is not None:
            value = attn.funnel_v(value)

        heads = attn.heads
        qk_dim, v_dim = key.shape[-1] // heads, value.shape[-1] // heads
        query = query.view(batch_size, -1, heads, qk_dim).transpose(1, 2)
        key = key.view(batch_size, -1, heads, qk_dim).transpose(1, 2)
        value = value.view(batch_size, -1, heads, v_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.funnel_scale
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, heads * v_dim).to(query.dtype)
        if getattr(attn, "funnel_o", None) is not None:
            hidden_states = attn.funnel_o(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class FunnelResnetBlock2D(ResnetBlock2D):
    """ResnetBlock2D with a conv funnel: F (1x1) after conv1 + temb, narrower norm2, G (1x1) before conv2."""

    conv_funnel_in: nn.Conv2d
    conv_funnel_out: nn.Conv2d

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        hidden_states = self.nonlinearity(self.norm1(input_tensor))
        hidden_states = self.conv1(hidden_states)
        if self.time_emb_proj is not None and temb is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            hidden_states = hidden_states + self.time_emb_proj(temb)[:, :, None, None]
        hidden_states = self.conv_funnel_in(hidden_states)
        hidden_states = self.dropout(self.nonlinearity(self.norm2(hidden_states)))
        hidden_states = self.conv2(self.conv_funnel_out(hidden_states))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / self.output_scale_factor


# ----------------------------------------------------------------------------------------------------------
# CSI


def csi_factors(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Funnels (F_x, F_y), each k x d, with X^T F_x^T F_y Y = the best rank-k approximation of X^T Y.

    ``x``: d x m, ``y``: d x n (computed in float64). Rows beyond the product's rank are zero.
    """
    d = x.shape[0]
    x64, y64 = x.detach().double(), y.detach().double()
    _, r_x = torch.linalg.qr(x64.T)  # X^T = Q_x R_x
    _, r_y = torch.linalg.qr(y64.T)
    u, s, vh = torch.linalg.svd(r_x @ r_y.T)
    kk = min(k, s.numel())
    root = s[:kk].sqrt()
    fx_t = torch.linalg.pinv(r_x) @ (u[:, :kk] * root)  # d x kk
    fy_t = torch.linalg.pinv(r_y) @ (vh[:kk].T * root)
    fx, fy = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, d, dtype=torch.float64)
    fx[:kk], fy[:kk] = fx_t.T, fy_t.T
    return fx, fy


def best_rank_approx(m: torch.Tensor, k: int) -> torch.Tensor:
    """Best rank-k approximation of ``m`` (truncated SVD), float64."""
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def _with_bias(linear: nn.Linear) -> torch.Tensor:
    """[W | b] (out x in+1), the affine map as one matrix (b = 0 when the layer has none)."""
    w = linear.weight.detach().double()
    b = linear.bias.detach().double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return torch.cat([w, b[:, None]], dim=1)


def _he(shape: Sequence[int], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / fan_in)


# ----------------------------------------------------------------------------------------------------------
# Targets


def attention_targets(unet: nn.Module, kinds: Sequence[str] = ATTENTION_KINDS) -> Iterator[tuple[str, nn.Module, str]]:
    """(path, attention module, kind) for every attention of the requested kinds."""
    bad = set(kinds) - set(ATTENTION_KINDS)
    if bad:
        raise ValueError(f"unknown attention kinds {sorted(bad)}; expected a subset of {ATTENTION_KINDS}")
    for name, module in list(unet.named_modules()):
        if isinstance(module, (BasicTransformerBlock, TemporalBasicTransformerBlock)):
            self_kind = "spatial" if isinstance(module, BasicTransformerBlock) else "temporal"
            if self_kind in kinds and module.attn1 is not None:
                yield f"{name}.attn1", module.attn1, self_kind
            if "cross" in kinds and getattr(module, "attn2", None) is not None:
                yield f"{name}.attn2", module.attn2, "cross"


def _spatial_resnets(unet: nn.Module) -> Iterator[tuple[str, ResnetBlock2D]]:
    for name, module in list(unet.named_modules()):
        if isinstance(module, SpatioTemporalResBlock):
            yield f"{name}.spatial_res_block", module.spatial_res_block


# ----------------------------------------------------------------------------------------------------------
# Attention funnels: insert, merge, structural narrow


def _head_dim(attn: Attention) -> int:
    return attn.to_k.out_features // attn.heads


def _check_adjacent(attn: Attention) -> None:
    if attn.norm_q is not None or attn.norm_k is not None:
        raise ValueError("q/k funnels need to_q/to_k and the similarity to be adjacent; this attention has norm_q/k")


def add_attention_funnel(attn: nn.Module, fun_factor: float, init: str = "csi", seed: int = 0) -> nn.Module:
    """Insert funnels into one attention (in place). ``init``: 'csi', 'he' or 'none' (structure only)."""
    if init not in ("csi", "he", "none"):
        raise ValueError(f"unknown funnel init {init!r}; expected 'csi', 'he' or 'none'")
    gen = torch.Generator().manual_seed(seed)
    meta = _is_meta(attn.to_v.weight)
    dev, dt = attn.to_v.weight.device, attn.to_v.weight.dtype
    if isinstance(attn, SingleTokenCrossAttention):
        heads, d = attn.heads, attn.dim_head
        inner = heads * d
        width = heads * funnel_width(d, fun_factor)
        attn.funnel_v = nn.Linear(inner, width, bias=False, device=dev, dtype=dt)
        attn.funnel_o = nn.Linear(width, inner, bias=False, device=dev, dtype=dt)
        if not meta and init != "none":
            with torch.no_grad():
                if init == "csi":
                    g_t, f_v = csi_factors(attn.to_out[0].weight.T, _with_bias(attn.to_v), width)
                    attn.funnel_v.weight.copy_(f_v)
                    attn.funnel_o.weight.copy_(g_t.T)
                else:
                    attn.funnel_v.weight.copy_(_he((width, inner), inner, gen))
                    attn.funnel_o.weight.copy_(_he((inner, width), width, gen))
        return attn
    if not isinstance(attn, Attention):
        raise TypeError(f"cannot funnel a {type(attn).__name__}")
    _check_adjacent(attn)
    heads, d = attn.heads, _head_dim(attn)
    rd = funnel_width(d, fun_factor)
    names = ("funnel_q", "funnel_k", "funnel_v", "funnel_o")
    shapes = ((d, rd), (d, rd), (d, rd), (rd, d))  # (in, out) per head
    for name, (i, o) in zip(names, shapes, strict=True):
        attn.add_module(name, HeadFunnel(heads, i, o, device=dev, dtype=dt))
    attn.funnel_scale = float(attn.scale)
    attn.set_processor(FunnelAttnProcessor())
    if meta or init == "none":
        return attn
    with torch.no_grad():
        wq, wk = _with_bias(attn.to_q), _with_bias(attn.to_k)
        wv, wo = _with_bias(attn.to_v), attn.to_out[0].weight.detach().double()
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)
            if init == "csi":
                fq, fk = csi_factors(wq[rows], wk[rows], rd)
                go_t, fv = csi_factors(wo[:, rows].T, wv[rows], rd)
            else:
                fq, fk, fv = (_he((rd, d), d, gen) for _ in range(3))
                go_t = _he((d, rd), rd, gen).T
            attn.funnel_q.weight[h].copy_(fq)
            attn.funnel_k.weight[h].copy_(fk)
            attn.funnel_v.weight[h].copy_(fv)
            attn.funnel_o.weight[h].copy_(go_t.T)
    return attn


def _new_linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(
        in_features, out_features, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
    )


def _narrow_attention_module(attn: nn.Module, rd: int) -> None:
    """Replace the projections of ``attn`` by narrower ones (head dim rd); values are set by the caller."""
    if isinstance(attn, SingleTokenCrossAttention):
        width = attn.heads * rd
        attn.to_v = _new_linear(attn.to_v, attn.to_v.in_features, width)
        attn.to_out[0] = _new_linear(attn.to_out[0], width, attn.to_out[0].out_features)
        attn.dim_head = rd
        attn.funnel_v = None
        attn.funnel_o = None
        return
    width = attn.heads * rd
    attn.to_q = _new_linear(attn.to_q, attn.to_q.in_features, width)
    attn.to_k = _new_linear(attn.to_k, attn.to_k.in_features, width)
    attn.to_v = _new_linear(attn.to_v, attn.to_v.in_features, width)
    attn.to_out[0] = _new_linear(attn.to_out[0], width, attn.to_out[0].out_features)
    attn.inner_dim = width
    attn.inner_kv_dim = width
    attn.scale = rd**-0.5
    for name in ("funnel_q", "funnel_k", "funnel_v", "funnel_o"):
        if name in attn._modules:
            del attn._modules[name]
    attn.__dict__.pop("funnel_scale", None)
    attn.set_processor(AttnProcessor2_0())


def has_funnel(attn: nn.Module) -> bool:
    """True when ``attn`` carries separate (unmerged) funnels."""
    return getattr(attn, "funnel_v", None) is not None


def merge_attention_funnel(attn: nn.Module) -> nn.Module:
    """Fold the funnels of one attention into plain narrower linears (in place), keeping the 1/sqrt(d) scale."""
    if not has_funnel(attn):
        return attn
    if isinstance(attn, SingleTokenCrossAttention):
        f_v, g_o = attn.funnel_v.weight.detach(), attn.funnel_o.weight.detach()
        old_v, old_o = attn.to_v, attn.to_out[0]
        width = f_v.shape[0]
        rd = width // attn.heads
        _narrow_attention_module(attn, rd)
        if not _is_meta(f_v):
            with torch.no_grad():
                attn.to_v.weight.copy_(f_v @ old_v.weight)
                if old_v.bias is not None:
                    attn.to_v.bias.copy_(f_v @ old_v.bias)
                attn.to_out[0].weight.copy_(old_o.weight @ g_o)
                if old_o.bias is not None:
                    attn.to_out[0].bias.copy_(old_o.bias)
        return attn
    heads = attn.heads
    fq, fk = attn.funnel_q.weight.detach(), attn.funnel_k.weight.detach()
    fv, go = attn.funnel_v.weight.detach(), attn.funnel_o.weight.detach()
    d, rd = fq.shape[2], fq.shape[1]
    q_gain = attn.funnel_scale * math.sqrt(rd)  # default processors use 1/sqrt(rd): keep the original scale
    old = {"q": attn.to_q, "k": attn.to_k, "v": attn.to_v, "o": attn.to_out[0]}
    _narrow_attention_module(attn, rd)
    if _is_meta(fq):
        return attn

    def rows(linear: nn.Linear, funnel: torch.Tensor, gain: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = linear.weight.detach().reshape(heads, d, -1)
        w_new = torch.einsum("hod,hdi->hoi", funnel, w).reshape(heads * rd, -1) * gain
        b_new = None
        if linear.bias is not None:
            b_new = torch.einsum("hod,hd->ho", funnel, linear.bias.detach().reshape(heads, d)).reshape(-1) * gain
        return w_new, b_new

    with torch.no_grad():
        for key, new, funnel, gain in (
            ("q", attn.to_q, fq, q_gain), ("k", attn.to_k, fk, 1.0), ("v", attn.to_v, fv, 1.0)
        ):
            w_new, b_new = rows(old[key], funnel, gain)
            new.weight.copy_(w_new)
            if b_new is not None:
                new.bias.copy_(b_new)
        wo = old["o"].weight.detach().reshape(-1, heads, d)
        attn.to_out[0].weight.copy_(torch.einsum("ohd,hdr->ohr", wo, go).reshape(wo.shape[0], heads * rd))
        if old["o"].bias is not None:
            attn.to_out[0].bias.copy_(old["o"].bias)
    return attn


# ----------------------------------------------------------------------------------------------------------
# Convolution funnels (Table 5 ablation)


def _conv_groups(block: ResnetBlock2D) -> tuple[int, int]:
    """(number of GroupNorm groups, channels per group) of ``norm2``."""
    groups = block.norm2.num_groups
    return groups, block.norm2.num_channels // groups


def conv_funnel_width(block: ResnetBlock2D, fun_factor: float) -> tuple[int, int]:
    """(kept groups, kept channels) for a conv funnel: whole GroupNorm groups, at least one."""
    groups, size = _conv_groups(block)
    kept = max(1, int(round(fun_factor * groups)))
    return kept, kept * size


def add_conv_funnel(block: ResnetBlock2D, fun_factor: float, init: str = "select", seed: int = 0) -> ResnetBlock2D:
    """Insert a conv funnel into one spatial resnet (in place). ``init``: 'select' ('csi' maps here), 'he', 'none'."""
    if block.upsample is not None or block.downsample is not None or block.time_embedding_norm != "default":
        raise ValueError("conv funnels support ResnetBlock2D without up/down-sampling and default temb norm")
    init = "select" if init == "csi" else init
    if init not in ("select", "he", "none"):
        raise ValueError(f"unknown conv funnel init {init!r}")
    channels = block.conv1.out_channels
    kept_groups, width = conv_funnel_width(block, fun_factor)
    dev, dt = block.conv1.weight.device, block.conv1.weight.dtype
    old_norm = block.norm2
    block.conv_funnel_in = nn.Conv2d(channels, width, 1, bias=False, device=dev, dtype=dt)
    block.conv_funnel_out = nn.Conv2d(width, channels, 1, bias=False, device=dev, dtype=dt)
    block.norm2 = nn.GroupNorm(kept_groups, width, eps=old_norm.eps, affine=old_norm.affine, device=dev, dtype=dt)
    block.__class__ = FunnelResnetBlock2D
    if _is_meta(block.conv1.weight) or init == "none":
        return block
    with torch.no_grad():
        if init == "select":
            groups, size = old_norm.num_groups, old_norm.num_channels // old_norm.num_groups
            score = block.conv2.weight.detach().double().pow(2).sum(dim=(0, 2, 3)).sqrt()
            if old_norm.affine:
                score = score * old_norm.weight.detach().double().abs()
            group_score = score.reshape(groups, size).sum(1)
            keep = sorted(torch.argsort(group_score, descending=True)[:kept_groups].tolist())
            chans = torch.cat([torch.arange(g * size, (g + 1) * size) for g in keep])
            sel = torch.zeros(width, channels, dtype=dt, device=dev)
            sel[torch.arange(width), chans] = 1.0
            block.conv_funnel_in.weight.copy_(sel[:, :, None, None])
            block.conv_funnel_out.weight.copy_(sel.T[:, :, None, None])
            if old_norm.affine:
                block.norm2.weight.copy_(old_norm.weight[chans])
                block.norm2.bias.copy_(old_norm.bias[chans])
        else:
            gen = torch.Generator().manual_seed(seed)
            block.conv_funnel_in.weight.copy_(_he((width, channels, 1, 1), channels, gen))
            block.conv_funnel_out.weight.copy_(_he((channels, width, 1, 1), width, gen))
    return block


def _narrow_conv_block(block: ResnetBlock2D, width: int, groups: int) -> None:
    dev, dt = block.conv1.weight.device, block.conv1.weight.dtype
    c1, c2 = block.conv1, block.conv2
    block.conv1 = nn.Conv2d(c1.in_channels, width, c1.kernel_size, c1.stride, c1.padding, bias=c1.bias is not None,
                            device=dev, dtype=dt)
    if block.time_emb_proj is not None:
        block.time_emb_proj = _new_linear(block.time_emb_proj, block.time_emb_proj.in_features, width)
    old_norm = block.norm2
    if old_norm.num_channels != width:
        block.norm2 = nn.GroupNorm(groups, width, eps=old_norm.eps, affine=old_norm.affine, device=dev, dtype=dt)
    block.conv2 = nn.Conv2d(width, c2.out_channels, c2.kernel_size, c2.stride, c2.padding, bias=c2.bias is not None,
                            device=dev, dtype=dt)
    for name in ("conv_funnel_in", "conv_funnel_out"):
        if name in block._modules:
            del block._modules[name]
    block.__class__ = ResnetBlock2D


def merge_conv_funnel(block: ResnetBlock2D) -> ResnetBlock2D:
    """Fold a conv funnel into conv1 / time_emb_proj / conv2 (in place): plain narrower ResnetBlock2D."""
    if not isinstance(block, FunnelResnetBlock2D):
        return block
    f = block.conv_funnel_in.weight.detach()[:, :, 0, 0]  # width x C
    g = block.conv_funnel_out.weight.detach()[:, :, 0, 0]  # C x width
    old_c1, old_t, old_c2, norm = block.conv1, block.time_emb_proj, block.conv2, block.norm2
    _narrow_conv_block(block, f.shape[0], norm.num_groups)
    block.norm2 = norm
    if _is_meta(f):
        return block
    with torch.no_grad():
        block.conv1.weight.copy_(torch.einsum("wc,cikl->wikl", f, old_c1.weight))
        if old_c1.bias is not None:
            block.conv1.bias.copy_(f @ old_c1.bias)
        if old_t is not None:
            block.time_emb_proj.weight.copy_(f @ old_t.weight)
            if old_t.bias is not None:
                block.time_emb_proj.bias.copy_(f @ old_t.bias)
        block.conv2.weight.copy_(torch.einsum("ockl,cw->owkl", old_c2.weight, g))
        if old_c2.bias is not None:
            block.conv2.bias.copy_(old_c2.bias)
    return block


# ----------------------------------------------------------------------------------------------------------
# Whole-UNet entry points


def add_funnels(
    unet: nn.Module,
    fun_factor: float,
    init: str = "csi",
    kinds: Sequence[str] = ATTENTION_KINDS,
    convs: bool = False,
    attention: bool = True,
    seed: int = 0,
) -> nn.Module:
    """Insert separate (trainable) funnels everywhere requested; CSI/He need weight values (skipped on meta)."""
    if not 0 < fun_factor <= 1:
        raise ValueError(f"fun_factor must be in (0, 1], got {fun_factor}")
    if attention:
        for i, (_path, attn, _kind) in enumerate(list(attention_targets(unet, kinds))):
            add_attention_funnel(attn, fun_factor, init, seed=seed + i)
    if convs:
        for i, (_path, block) in enumerate(list(_spatial_resnets(unet))):
            add_conv_funnel(block, fun_factor, "he" if init == "he" else ("none" if init == "none" else "select"),
                            seed=seed + 10_000 + i)
    return unet


def merge_funnels(unet: nn.Module) -> nn.Module:
    """Fold every funnel of ``unet`` into plain narrower layers (in place; exact up to float rounding)."""
    for module in list(unet.modules()):
        if isinstance(module, (Attention, SingleTokenCrossAttention)):
            merge_attention_funnel(module)
        elif isinstance(module, FunnelResnetBlock2D):
            merge_conv_funnel(module)
    return unet


def narrow_architecture(
    unet: nn.Module,
    fun_factor: float,
    kinds: Sequence[str] = ATTENTION_KINDS,
    convs: bool = False,
    attention: bool = True,
) -> nn.Module:
    """The merged funnel architecture built structurally (no weight values needed; works on meta).

    Gives exactly the parameter shapes of :func:`add_funnels` + :func:`merge_funnels`, so a saved merged
    stage loads strictly into it.
    """
    if attention:
        for _path, attn, _kind in list(attention_targets(unet, kinds)):
            d = attn.dim_head if isinstance(attn, SingleTokenCrossAttention) else _head_dim(attn)
            if not isinstance(attn, SingleTokenCrossAttention):
                _check_adjacent(attn)
            _narrow_attention_module(attn, funnel_width(d, fun_factor))
    if convs:
        for _path, block in list(_spatial_resnets(unet)):
            groups, width = conv_funnel_width(block, fun_factor)
            _narrow_conv_block(block, width, groups)
    return unet


def apply_channel_funnels(
    unet: nn.Module,
    fun_factor: float = 0.5,
    init: str = "csi",
    merged: bool = False,
    kinds: Sequence[str] = ATTENTION_KINDS,
    convs: bool = False,
    attention: bool = True,
    structural: bool | None = None,
    seed: int = 0,
) -> nn.Module:
    """The ``channel_funnels`` transform.

    ``merged=False``: separate funnels (finetuning state), initialised by ``init`` when weights exist.
    ``merged=True``: the narrower merged architecture. With ``structural`` (default: on meta) the shapes are
    built directly without weights (for strict loading); otherwise funnels are initialised and merged
    (the "merged before finetuning" ablation when followed by training).
    """
    meta = next(unet.parameters()).device.type == "meta"
    structural = meta if structural is None else structural
    if merged and structural:
        return narrow_architecture(unet, fun_factor, kinds, convs=convs, attention=attention)
    add_funnels(unet, fun_factor, "none" if structural else init, kinds, convs=convs, attention=attention, seed=seed)
    return merge_funnels(unet) if merged else unet


# ----------------------------------------------------------------------------------------------------------
# Truncated SVD of weights (Table 5 ablation)


class LowRankLinear(nn.Sequential):
    """W ~ B A with A: rank x in (no bias), B: out x rank (original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, device=None, dtype=None) -> None:
        super().__init__(
            nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype),
            nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype),
        )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


def truncated_svd_linear(linear: nn.Linear, rank_factor: float) -> LowRankLinear:
    """Rank-round(r*min(out,in)) factorisation of ``linear`` by truncated SVD (structure only on meta)."""
    rank = max(1, int(round(rank_factor * min(linear.in_features, linear.out_features))))
    low = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None,
                        device=linear.weight.device, dtype=linear.weight.dtype)
    if not _is_meta(linear.weight):
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
            root = s[:rank].sqrt()
            low[0].weight.copy_(root[:, None] * vh[:rank])
            low[1].weight.copy_(u[:, :rank] * root)
            if linear.bias is not None:
                low[1].bias.copy_(linear.bias)
    return low


def apply_truncated_svd(unet: nn.Module, rank_factor: float, kinds: Sequence[str] = ATTENTION_KINDS) -> nn.Module:
    """Replace every attention projection (q, k, v, out) of the given kinds by its truncated SVD (in place)."""
    for _path, attn, _kind in list(attention_targets(unet, kinds)):
        for name in ("to_q", "to_k", "to_v"):
            layer = getattr(attn, name, None)
            if isinstance(layer, nn.Linear):
                setattr(attn, name, truncated_svd_linear(layer, rank_factor))
        if isinstance(attn.to_out[0], nn.Linear):
            attn.to_out[0] = truncated_svd_linear(attn.to_out[0], rank_factor)
    return unet


# ----------------------------------------------------------------------------------------------------------
# The stage's architecture at another fun-factor (the Funnels tab's slider and its FLOPs)


def funnel_chain(r: float) -> list[Any]:
    """The channel-funnels stage's architecture transforms with fun-factor ``r`` (rounded to 4 digits, so that
    a slider value and a typed one give the same architecture and the same cached count)."""
    chain = []
    for t in registry.architecture_transforms("channel-funnels"):
        if t.name == "channel_funnels":
            t = registry.Transform(t.name, {**t.params, "fun_factor": round(float(r), 4)})
        chain.append(t)
    return chain


def attention_widths(r: float, scale: str = "full") -> list[dict[str, Any]]:
    """Per attention layer: kind, heads, head dim and q/k/v/o widths before (temporal-pruning) and after
    channel funnels at fun-factor ``r`` (the merged architecture built on the meta device)."""
    from explorer.architecture import build_stage_unet

    before, _ = build_stage_unet("temporal-pruning", scale, device="meta")
    after, _ = build_stage_unet("channel-funnels", scale, device="meta", transforms=funnel_chain(r))

    def widths(unet: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for path, attn, kind in attention_targets(unet):
            heads = int(attn.heads)
            qk = int(attn.to_q.out_features) if getattr(attn, "to_q", None) is not None else None
            v = int(attn.to_v.out_features)
            out[path] = {"kind": kind, "heads": heads, "qk": qk, "v": v, "head_dim_v": v // heads,
                         "head_dim_qk": (qk // heads) if qk else None, "in": int(attn.to_v.in_features)}
        return out

    wb, wa = widths(before), widths(after)
    rows = []
    for path, b in wb.items():
        a = wa.get(path, {})
        rows.append({"layer": path, "kind": b["kind"], "heads": b["heads"],
                     "head_dim_before": b["head_dim_v"], "head_dim_after": a.get("head_dim_v"),
                     "qk_before": b["qk"], "qk_after": a.get("qk"), "vo_before": b["v"], "vo_after": a.get("v")})
    return rows
