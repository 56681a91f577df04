"""Temporal / spatial multiscaling: shapes, coarse grid inside, parameter-free, exact at factor 1, cheaper."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch.utils.flop_counter import FlopCounterMode

from explorer.models import build_unet, unet_inputs
from explorer.stages import Transform
from explorer.transforms import apply_transforms
from explorer.transforms.cross_attention import optimize_cross_attention
from explorer.transforms.multiscale import (
    apply_multiscale,
    coarse_frames,
    multiscale_factors,
    spatial_downsample,
    temporal_downsample,
    temporal_upsample,
)


@pytest.fixture(scope="module")
def micro() -> UNetSpatioTemporalConditionModel:
    return build_unet("micro", seed=2).eval()


def flops(unet: torch.nn.Module, height: int, width: int, frames: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(**unet_inputs(unet, height, width, frames, device="meta"))
    return counter.get_total_flops()


def test_resampling_operators() -> None:
    x = torch.arange(25.0).reshape(25, 1, 1, 1)  # batch 1, 25 frames
    down = temporal_downsample(x, 25, 2)
    assert down.shape[0] == coarse_frames(25, 2) == 13
    assert down[0].item() == 0.5 and down[-1].item() == 24.0  # pairs averaged; the lone last frame kept
    up = temporal_upsample(down, 25, 2)
    assert up.shape[0] == 25 and up[0].item() == up[1].item() == 0.5 and up[-1].item() == 24.0
    img = torch.ones(1, 1, 5, 3)
    assert torch.equal(spatial_downsample(img, 2), torch.ones(1, 1, 3, 2))  # ceil; partial windows averaged


@pytest.mark.parametrize("frames", [14, 25])
def test_shapes_and_coarse_grid(micro: UNetSpatioTemporalConditionModel, frames: int) -> None:
    unet = apply_multiscale(copy.deepcopy(micro), temporal_factor=2, spatial_factor=1)
    seen: dict[str, tuple[int, ...]] = {}
    unet.mid_block.register_forward_hook(lambda m, a, out: seen.__setitem__("mid", tuple(out.shape)))
    unet.up_blocks[-1].register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("last_up", tuple(kw["hidden_states"].shape)), with_kwargs=True
    )
    inputs = unet_inputs(unet, 8, 8, frames)
    with torch.no_grad():
        out = unet(**inputs).sample
    assert out.shape == inputs["sample"].shape[:2] + (4, 8, 8)
    assert torch.isfinite(out).all()
    assert seen["mid"][0] == coarse_frames(frames, 2)  # deeper levels run on 7 / 13 frames
    assert seen["last_up"][0] == frames  # up-sampled back before the last up block


def test_spatial_and_combined_shapes(micro: UNetSpatioTemporalConditionModel) -> None:
    # (factors, latent size, frames, mid-block size); 12x20 does not divide evenly: 6x10 -> pooled 3x5 -> 1x2
    cases = (((1, 2), (8, 16), 5, (1, 1)), ((2, 2), (12, 20), 3, (1, 2)))
    for (tf, sf), (height, width), frames, mid in cases:
        unet = apply_multiscale(copy.deepcopy(micro), temporal_factor=tf, spatial_factor=sf)
        seen: dict[str, tuple[int, ...]] = {}
        unet.mid_block.register_forward_hook(lambda m, a, out, seen=seen: seen.__setitem__("mid", tuple(out.shape)))
        with torch.no_grad():
            out = unet(**unet_inputs(unet, height, width, frames)).sample
        assert out.shape == (1, frames, 4, height, width)
        assert seen["mid"][-2:] == mid and seen["mid"][0] == coarse_frames(frames, tf)
        assert multiscale_factors(unet) == (tf, sf)


def test_parameter_free_strict_load_and_factor_one_exact(micro: UNetSpatioTemporalConditionModel) -> None:
    inputs = unet_inputs(micro, 8, 8, 3)
    with torch.no_grad():
        ref = micro(**inputs).sample
    parent = micro.state_dict()
    fresh = apply_transforms(build_unet("micro", seed=9), [Transform("temporal_multiscale", {"temporal_factor": 2})])
    assert type(fresh) is UNetSpatioTemporalConditionModel  # config / save_pretrained stay the base model's
    assert set(fresh.state_dict()) == set(parent)
    fresh.load_state_dict(parent, strict=True)
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).sample, ref)
    apply_multiscale(fresh, 1, 1)
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).sample, ref)
    twin = copy.deepcopy(apply_multiscale(fresh, 2, 1))  # the forward follows the copy
    assert twin.forward.__self__ is twin


def test_flops_drop_on_meta() -> None:
    unet = optimize_cross_attention(build_unet("full", "meta"))
    base = flops(unet, 32, 64, 14)
    temporal = flops(apply_multiscale(unet, 2, 1), 32, 64, 14)
    spatial = flops(apply_multiscale(unet, 1, 2), 32, 64, 14)
    both = flops(apply_multiscale(unet, 2, 2), 32, 64, 14)
    assert both < spatial < temporal < base
    # The paper's ratios (Table 2/3: 8.24 -> 5.42 temporal, 3.39 both) within 3% / 5%.
    assert abs(temporal / base - 5.42 / 8.24) < 0.03 * 5.42 / 8.24
    assert abs(both / base - 3.39 / 8.24) < 0.05 * 3.39 / 8.24
