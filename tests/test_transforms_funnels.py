"""Channel funnels: CSI exactness at r=1, best rank-rd products, lossless merge, structural narrowing."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import Attention
from torch.utils.flop_counter import FlopCounterMode

from explorer.models import build_unet, unet_inputs
from explorer.stages import Transform, architecture_transforms
from explorer.transforms import apply_transforms
from explorer.transforms.cross_attention import SingleTokenCrossAttention, optimize_cross_attention
from explorer.transforms.funnels import (
    FunnelResnetBlock2D,
    HeadFunnel,
    add_funnels,
    attention_targets,
    best_rank_approx,
    csi_factors,
    merge_funnels,
    narrow_architecture,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def aug(linear: torch.nn.Linear) -> torch.Tensor:
    w = linear.weight.detach().double()
    b = linear.bias.detach().double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    return torch.cat([w, b[:, None]], 1)


def shapes(unet: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


@pytest.fixture(scope="module")
def micro64() -> UNetSpatioTemporalConditionModel:
    unet = build_unet("micro", seed=4).double().eval()
    with torch.no_grad():  # non-zero biases so the affine (bias) handling is exercised
        for name, p in unet.named_parameters():
            if name.endswith(("to_out.0.bias", "mix_factor")):
                p.normal_(0, 0.1)
    return unet


@pytest.fixture(scope="module")
def reference(micro64) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = unet_inputs(micro64, 8, 8, 3, dtype=torch.float64, seed=5)
    with torch.no_grad():
        return inputs, micro64(**inputs).sample


def test_csi_factors_give_best_rank_product() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 40, generator=gen, dtype=torch.float64), torch.randn(16, 33, generator=gen,
                                                                                 dtype=torch.float64)
    for k in (4, 8, 16):
        fx, fy = csi_factors(x, y, k)
        assert fx.shape == fy.shape == (k, 16)
        approx = x.T @ fx.T @ fy @ y
        assert rel(approx, best_rank_approx(x.T @ y, k)) < 1e-10
    fx, fy = csi_factors(x, y, 16)
    assert torch.allclose(fx.T @ fy, torch.eye(16, dtype=torch.float64), atol=1e-10)  # r = 1: identity


def test_csi_r1_leaves_unet_unchanged(micro64, reference) -> None:
    inputs, ref = reference
    unet = add_funnels(copy.deepcopy(micro64), 1.0, "csi", convs=True)
    assert any(isinstance(m, HeadFunnel) for m in unet.modules())
    assert any(isinstance(m, FunnelResnetBlock2D) for m in unet.modules())
    with torch.no_grad():
        assert rel(unet(**inputs).sample, ref) < 1e-5


def test_merged_products_are_best_rank_approximations(micro64) -> None:
    unet = add_funnels(copy.deepcopy(micro64), 0.5, "csi")
    originals = {path: attn for path, attn, _ in attention_targets(micro64)}
    merge_funnels(unet)
    checked = 0
    for path, attn, _kind in attention_targets(unet):
        orig = originals[path]
        heads, d = orig.heads, orig.to_k.out_features // orig.heads
        rd = attn.to_k.out_features // heads
        assert rd == d // 2 and attn.scale == rd**-0.5
        q0, k0, v0, q1, k1, v1 = (aug(m) for m in (orig.to_q, orig.to_k, orig.to_v, attn.to_q, attn.to_k, attn.to_v))
        o0, o1 = orig.to_out[0].weight.detach().double(), attn.to_out[0].weight.detach().double()
        for h in range(heads):
            a, b = slice(h * d, (h + 1) * d), slice(h * rd, (h + 1) * rd)
            # similarity map incl. the attention scale: merged (scale 1/sqrt(rd)) vs the original 1/sqrt(d)
            merged_qk = attn.scale * q1[b].T @ k1[b]
            best_qk = best_rank_approx(orig.scale * q0[a].T @ k0[a], rd)
            assert rel(merged_qk, best_qk) < 1e-8
            assert rel(o1[:, b] @ v1[b], best_rank_approx(o0[:, a] @ v0[a], rd)) < 1e-8
            checked += 1
    assert checked == 2 * 64  # 16 models x (spatial self, temporal self, 2 cross) attentions x 2 heads


@pytest.mark.parametrize("convs", [False, True])
def test_merge_is_lossless_and_structure_loads(micro64, reference, convs: bool) -> None:
    inputs, ref = reference
    base = optimize_cross_attention(copy.deepcopy(micro64))  # cross-attention: one (v, o) funnel across heads
    unet = add_funnels(copy.deepcopy(base), 0.5, "csi", convs=convs)
    assert all(m.funnel_v is not None for m in unet.modules() if isinstance(m, SingleTokenCrossAttention))
    with torch.no_grad():
        unmerged = unet(**inputs).sample
        merge_funnels(unet)
        merged = unet(**inputs).sample
    assert rel(merged, unmerged) < 1e-5
    assert 0 < rel(merged, ref) < 1  # an approximation, not the original
    assert not any(isinstance(m, (HeadFunnel, FunnelResnetBlock2D)) for m in unet.modules())
    assert all(type(m.processor).__name__ == "AttnProcessor2_0" for m in unet.modules() if isinstance(m, Attention))
    narrow = narrow_architecture(copy.deepcopy(base), 0.5, convs=convs)
    assert shapes(narrow) == shapes(unet)
    narrow.load_state_dict(unet.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(narrow(**inputs).sample, merged)


def test_he_init_and_stage_transform_on_meta() -> None:
    unet = add_funnels(build_unet("micro", seed=1), 0.5, "he")
    funnel = next(m for m in unet.modules() if isinstance(m, HeadFunnel))
    assert torch.isfinite(funnel.weight).all() and float(funnel.weight.detach().std()) > 0
    with pytest.raises(ValueError):
        add_funnels(build_unet("micro", seed=1), 1.5)
    # The channel-funnels stage on the full architecture: structural, on meta, strict-loadable shapes.
    chain = architecture_transforms("channel-funnels")
    meta = apply_transforms(build_unet("full", "meta"), chain)
    attn1 = meta.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn1.to_q.weight.shape == (160, 320) and attn1.to_out[0].weight.shape == (320, 160)
    merged_cpu = apply_transforms(build_unet("micro", seed=1), chain)
    merged_meta = apply_transforms(build_unet("micro", "meta"), chain)
    assert shapes(merged_cpu) == shapes(merged_meta)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(**unet_inputs(meta, 8, 16, 4, device="meta"))
    with FlopCounterMode(display=False) as before, torch.no_grad():
        parent = apply_transforms(build_unet("full", "meta"), architecture_transforms("temporal-pruning"))
        parent(**unet_inputs(parent, 8, 16, 4, device="meta"))
    assert counter.get_total_flops() < before.get_total_flops()


def test_truncated_svd_ablation(micro64, reference) -> None:
    inputs, ref = reference
    exact = apply_transforms(copy.deepcopy(micro64), [Transform("truncated_svd", {"rank_factor": 1.0})])
    low = apply_transforms(copy.deepcopy(micro64), [Transform("truncated_svd", {"rank_factor": 0.25})])
    with torch.no_grad():
        assert rel(exact(**inputs).sample, ref) < 1e-6
        assert torch.isfinite(low(**inputs).sample).all()
    layer = low.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert layer.rank == 8 and layer[0].weight.shape == (8, 32)
