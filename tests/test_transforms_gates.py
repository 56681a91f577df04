"""Temporal gates and pruning: enumeration, exact open gates, exactly-n sampling, STE, pruning, defaults."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch.utils.flop_counter import FlopCounterMode

from explorer.flops import block_cost_paths, block_costs, kept_range
from explorer.models import build_unet, unet_inputs
from explorer.stages import Transform
from explorer.transforms import apply_transforms
from explorer.transforms.multiscale import apply_multiscale
from explorer.transforms.temporal_gates import (
    TemporalGates,
    default_kept_blocks,
    gates_from_mask,
    l1_blend_penalty,
    l1_kept_blocks,
    project_capped_simplex,
    prune_temporal_blocks,
    systematic_sample,
    temporal_blocks,
    temporal_weights,
)

KEEP = [1, 3, 5, 12, 15, 20, 21, 30, 33, 36, 37]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def flops(unet: torch.nn.Module, height: int = 8, width: int = 8, frames: int = 4) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(**unet_inputs(unet, height, width, frames, device="meta"))
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def micro64() -> UNetSpatioTemporalConditionModel:
    unet = build_unet("micro", seed=3).double().eval()
    with torch.no_grad():  # distinct blend weights per block
        for name, p in unet.named_parameters():
            if name.endswith("mix_factor"):
                p.normal_()
    return unet


@pytest.fixture(scope="module")
def reference(micro64: UNetSpatioTemporalConditionModel) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = unet_inputs(micro64, 8, 8, 3, dtype=torch.float64, seed=4)
    with torch.no_grad():
        return inputs, micro64(**inputs).sample


def test_enumeration_full_svd() -> None:
    blocks = temporal_blocks(build_unet("full", "meta"))
    assert len(blocks) == 38
    assert sum(b.kind == "resnet" for b in blocks) == 22 and sum(b.kind == "transformer" for b in blocks) == 16
    assert [b.index for b in blocks] == list(range(38))
    first, last = blocks[0], blocks[-1]
    assert (first.path, first.kind, first.level, first.side) == (
        "down_blocks.0.resnets.0.temporal_res_block", "resnet", 0, "down")
    assert (last.path, last.kind, last.level, last.side) == (
        "up_blocks.3.attentions.2.temporal_transformer_blocks.0", "transformer", 0, "up")
    mid = [b for b in blocks if b.side == "mid"]
    assert [b.kind for b in mid] == ["resnet", "transformer", "resnet"] and all(b.level == "mid" for b in mid)
    assert blocks[1].mixer_path == "down_blocks.0.attentions.0.time_mixer"


def test_projection_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 5, 11, 37):
        s = (torch.randn(38, generator=gen, dtype=torch.float64) * 2).sigmoid().requires_grad_()
        p = project_capped_simplex(s, n)
        pd = p.detach()
        assert abs(float(pd.sum()) - n) < 1e-9 and float(pd.min()) >= 0 and float(pd.max()) <= 1
        # KKT of the Euclidean projection: p = clip(s - tau, 0, 1) with one tau for all coordinates
        sd = s.detach()
        free = (pd > 1e-12) & (pd < 1 - 1e-12)
        tau = (sd - pd)[free]
        assert float(tau.max() - tau.min()) < 1e-9
        assert torch.allclose(pd, (sd - tau[0]).clamp(0, 1), atol=1e-9)
        for _ in range(20):  # and no other feasible point is closer to s
            q = project_capped_simplex(torch.rand(38, generator=gen, dtype=torch.float64), n)
            assert float((s - pd).detach().norm()) <= float((s - q).detach().norm()) + 1e-12
        p.sum().backward()  # the sum is constant: its gradient vanishes
        assert float(s.grad.abs().max()) < 1e-9


def test_exactly_n_and_marginals() -> None:
    gates = TemporalGates(38, 11, seed=0)
    with torch.no_grad():
        gates.importance.copy_(torch.randn(38, generator=torch.Generator().manual_seed(1)) * 1.5)
    p = gates.probabilities().detach()
    counts = torch.zeros(38, dtype=torch.float64)
    for _ in range(2000):
        z = gates.sample().detach()
        assert set(z.unique().tolist()) <= {0.0, 1.0} and int(z.sum()) == 11
        counts += z
    assert float((counts / 2000 - p).abs().max()) < 0.03
    # p_i = 1 and p_i = 0 items are always / never chosen
    fixed = torch.tensor([1.0, 0.0, 0.5, 0.5, 1.0, 0.0])
    for _ in range(50):
        chosen = set(systematic_sample(fixed, 3).tolist())
        assert len(chosen) == 3 and {0, 4} <= chosen and not {1, 5} & chosen


def test_all_open_reproduces_original(micro64, reference) -> None:
    inputs, ref = reference
    unet = copy.deepcopy(micro64)
    gates = TemporalGates.attach(unet, n=11, mode="open")
    assert set(unet.state_dict()) == set(micro64.state_dict())  # parameter-free wiring
    with torch.no_grad():
        assert rel(unet(**inputs).sample, ref) == 0.0
        gates.set_mode("fixed", [1.0] * 38)  # the gated residual form with every gate at 1
        assert rel(unet(**inputs).sample, ref) < 1e-6


def test_sampled_mode_gradients_and_eval(micro64, reference) -> None:
    inputs, _ = reference
    unet = copy.deepcopy(micro64)
    gates = TemporalGates.attach(unet, n=11, mode="sampled", seed=0).double()
    gates.train()
    out = unet(**inputs).sample
    assert len(gates.open_blocks()) == 11
    out.pow(2).mean().backward()
    grad = gates.importance.grad
    assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    gates.eval()  # deterministic: the top-n by importance
    with torch.no_grad():
        gates.importance.copy_(torch.arange(38, dtype=torch.float64))
        unet(**inputs)
    assert gates.open_blocks() == list(range(27, 38)) == gates.kept_blocks()


def test_pruning_removes_blocks_and_matches_gates(micro64, reference) -> None:
    inputs, _ = reference
    gated = copy.deepcopy(micro64)
    gates_from_mask(gated, KEEP)
    pruned = prune_temporal_blocks(copy.deepcopy(micro64), KEEP)
    with torch.no_grad():
        assert rel(pruned(**inputs).sample, gated(**inputs).sample) < 1e-6
    kept_paths = {b.path for b in temporal_blocks(pruned)}
    assert [b.index for b in temporal_blocks(pruned)] == KEEP
    all_blocks = temporal_blocks(micro64)
    names = {n for n, _ in pruned.named_modules()}
    for b in all_blocks:
        assert (b.path in names) == (b.path in kept_paths)
        if b.kind == "resnet":
            assert (b.mixer_path in names) == (b.path in kept_paths)
    # transformer models with no temporal layer left lose their frame embedding and mixer too
    gone = [b for b in all_blocks if b.kind == "transformer" and b.index not in KEEP]
    assert gone and all(f"{b.container}.time_pos_embed" not in names for b in gone)
    removed = sum(p.numel() for n, p in micro64.named_parameters()
                  if any(n.startswith(b.path + ".") or n.startswith(b.mixer_path) for b in all_blocks
                         if b.index not in KEEP and (b.kind == "resnet" or b.layer == 0)))
    removed += sum(sum(p.numel() for p in micro64.get_submodule(f"{b.container}.time_pos_embed").parameters())
                   for b in gone)
    assert sum(p.numel() for p in micro64.parameters()) - sum(p.numel() for p in pruned.parameters()) == removed


def test_pruning_flops_additive_and_structural_on_meta() -> None:
    base = apply_multiscale(build_unet("micro", "meta"), 2, 1)
    floor_of_model, costs = block_costs(base, unet_inputs(base, 8, 8, 4, device="meta"))
    per_block = dict(enumerate(costs))  # block index = position
    none = prune_temporal_blocks(copy.deepcopy(base), [])
    some = apply_transforms(copy.deepcopy(base), [Transform("temporal_pruning", {"kept": 11, "blocks": KEEP})])
    floor, total = flops(none), flops(base)
    assert floor < flops(some) < total
    assert flops(some) == floor + sum(per_block[i] for i in KEEP)  # costs are additive
    assert total == floor + sum(per_block.values())
    assert floor_of_model == floor  # the floor derived from one count is the all-pruned model's count
    low, high = kept_range(0, costs, 11)
    assert low <= sum(per_block[i] for i in KEEP) <= high
    assert all(p.device.type == "meta" for p in some.parameters())
    info = temporal_blocks(base)[1]
    assert block_cost_paths(info)[-1].endswith("time_pos_embed")
    with pytest.raises(ValueError, match="38"):
        apply_transforms(copy.deepcopy(base), [Transform("temporal_pruning", {"kept": 11, "total": 40})])


def test_default_kept_blocks() -> None:
    unet = build_unet("full", "meta")
    kept = default_kept_blocks(unet, 11)
    assert kept == default_kept_blocks(unet, 11) and len(set(kept)) == 11
    assert kept == [1, 3, 5, 7, 21, 27, 29, 31, 33, 35, 37]  # documented: finest-level temporal attention first
    pruned = apply_transforms(unet, [Transform("temporal_pruning", {"kept": 11, "total": 38})])
    assert [b.index for b in temporal_blocks(pruned)] == kept


def test_l1_baseline(micro64) -> None:
    unet = copy.deepcopy(micro64)
    weights = temporal_weights(unet)
    assert len(weights) == 38
    penalty = l1_blend_penalty(unet)
    penalty.backward()
    assert all(p.grad is not None for n, p in unet.named_parameters() if n.endswith("mix_factor"))
    kept = l1_kept_blocks(unet, 11)
    weights = {i: float(w.detach()) for i, w in weights.items()}
    smallest_kept = min(weights[i] for i in kept)
    assert all(weights[i] <= smallest_kept for i in weights if i not in kept)


def test_multi_layer_transformers_share_the_mixer() -> None:
    from explorer.models import unet_config

    unet = build_unet({**unet_config("micro"), "transformer_layers_per_block": 2}, seed=6).double().eval()
    blocks = temporal_blocks(unet)
    assert len(blocks) == 22 + 2 * 16
    first_model = [b for b in blocks if b.container == "down_blocks.0.attentions.0"]
    assert [b.layer for b in first_model] == [0, 1]
    assert {b.mixer_path for b in first_model} == {"down_blocks.0.attentions.0.time_mixer"}
    inputs = unet_inputs(unet, 8, 8, 2, dtype=torch.float64)
    with torch.no_grad():
        ref = unet(**inputs).sample
    keep = [b.index for b in blocks if b.index != first_model[0].index]
    gated = copy.deepcopy(unet)
    gates = gates_from_mask(gated, [b.index for b in blocks])
    with torch.no_grad():
        assert rel(gated(**inputs).sample, ref) < 1e-6
        gates.set_mode("fixed", keep)
        closed_one = gated(**inputs).sample
    pruned = prune_temporal_blocks(copy.deepcopy(unet), keep)
    model = pruned.get_submodule("down_blocks.0.attentions.0")
    assert model.temporal_transformer_blocks[0] is None and model.temporal_transformer_blocks[1] is not None
    assert model.time_pos_embed is not None and model.time_mixer is not None  # still used by layer 1
    with torch.no_grad():
        assert rel(pruned(**inputs).sample, closed_one) < 1e-6
    prune_temporal_blocks(pruned, [i for i in keep if i != first_model[1].index])
    assert model.temporal_transformer_blocks is None and model.time_pos_embed is None
