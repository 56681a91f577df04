"""Optimized cross-attention: exact on one-token contexts, loud on more, lighter in FLOPs and parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_processor import Attention
from torch.utils.flop_counter import FlopCounterMode

from explorer.models import build_unet, unet_inputs
from explorer.stages import Transform
from explorer.transforms import apply_transforms
from explorer.transforms.cross_attention import (
    SingleTokenCrossAttention,
    cross_attention_paths,
    is_optimized,
    optimize_cross_attention,
    strip_dropped_keys,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.fixture(scope="module")
def micro64() -> torch.nn.Module:
    unet = build_unet("micro", seed=1).double()
    with torch.no_grad():  # random blends so no branch is trivially weighted
        for name, p in unet.named_parameters():
            if name.endswith("mix_factor"):
                p.normal_()
    return unet.eval()


@pytest.fixture(scope="module")
def reference(micro64: torch.nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = unet_inputs(micro64, 8, 8, 3, dtype=torch.float64, seed=3)
    with torch.no_grad():
        return inputs, micro64(**inputs).sample


def test_rewrite_is_exact_on_random_micro(micro64: torch.nn.Module, reference) -> None:
    inputs, ref = reference
    fast = optimize_cross_attention(copy.deepcopy(micro64))
    assert is_optimized(fast) and not is_optimized(micro64)
    assert len(cross_attention_paths(fast)) == 32  # 16 spatial + 16 temporal transformer blocks
    with torch.no_grad():
        out = fast(**inputs).sample
        other = dict(inputs, encoder_hidden_states=torch.randn_like(inputs["encoder_hidden_states"]))
        moved = fast(**other).sample
    assert rel(out, ref) < 1e-6
    assert rel(moved, out) > 1e-3  # the context matters: the check is not vacuous


def test_module_matches_attention_on_3d_and_4d_inputs() -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).double()
    fast = SingleTokenCrossAttention.from_attention(attn)
    x, c = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 1, 12, dtype=torch.float64)
    assert rel(fast(x, encoder_hidden_states=c), attn(x, encoder_hidden_states=c)) < 1e-12
    attn4 = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, residual_connection=True,
                      rescale_output_factor=2.0).double()
    fast4 = SingleTokenCrossAttention.from_attention(attn4)
    x4 = torch.randn(3, 16, 2, 3, dtype=torch.float64)
    assert rel(fast4(x4, encoder_hidden_states=c), attn4(x4, encoder_hidden_states=c)) < 1e-12


def test_multi_token_context_raises(micro64: torch.nn.Module) -> None:
    fast = optimize_cross_attention(copy.deepcopy(micro64))
    inputs = unet_inputs(micro64, 8, 8, 2, dtype=torch.float64)
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"].repeat(1, 2, 1)
    with pytest.raises(ValueError, match="ONE-token"), torch.no_grad():
        fast(**inputs)
    attn = SingleTokenCrossAttention.from_attention(Attention(query_dim=8, cross_attention_dim=4, heads=1, dim_head=8))
    with pytest.raises(ValueError, match="ONE-token"):
        attn(torch.randn(1, 3, 8), encoder_hidden_states=torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="context"):
        attn(torch.randn(1, 3, 8))


def test_drops_to_q_to_k_and_parent_weights_load(micro64: torch.nn.Module, reference) -> None:
    inputs, ref = reference
    parent_sd = micro64.state_dict()
    fast = apply_transforms(build_unet("micro", seed=5).double(), [Transform("optimized_cross_attention")])
    keys = set(fast.state_dict())
    assert not any(".attn2.to_q." in k or ".attn2.to_k." in k for k in keys)
    assert keys < set(parent_sd)
    fast.load_state_dict(strip_dropped_keys(parent_sd), strict=True)
    with torch.no_grad():
        assert rel(fast(**inputs).sample, ref) < 1e-6


def test_full_size_on_meta_fewer_flops_and_params() -> None:
    def count(unet: torch.nn.Module) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(**unet_inputs(unet, 16, 32, 4, device="meta"))
        return counter.get_total_flops()

    base = build_unet("full", "meta")
    fast = optimize_cross_attention(build_unet("full", "meta"))
    assert all(p.device.type == "meta" for p in fast.parameters())
    assert count(fast) < count(base)
    dropped = sum(p.numel() for p in base.parameters()) - sum(p.numel() for p in fast.parameters())
    assert dropped > 40e6  # to_q + to_k of 32 cross-attentions
