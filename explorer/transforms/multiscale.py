"""Temporal (and spatial) multiscaling of the SVD UNet (MobileVD, docs/paper.md §3, Table 3).

Temporal: right after the first down block the hidden state is down-sampled in time by ``temporal_factor``
(average of consecutive frame groups; a shorter last group for counts that do not divide, e.g. 25 -> 13 at
factor 2). Every deeper level (down blocks 1.., mid, up blocks ..-2) runs on the coarse frame grid: the time
embedding, the image context and ``image_only_indicator`` follow that grid, so the frame-index embeddings of
the deeper temporal transformers index the coarse frames 0..Fc-1. Before the LAST up block the hidden state is
up-sampled back to the original frame count by nearest neighbour (coarse frame j serves frames
j*f .. j*f+f-1). The level-0 skip connections (``conv_in`` and the first down block's resnet/attention outputs)
stay at the full frame rate; the first down block's final output (its down-sampled skip, consumed by the
second-to-last up block) is coarse, being the same tensor as the hidden state.

Spatial (Table 3 ablation): an extra ``spatial_factor`` x average pooling at the same place (ceil for odd
sizes) and a nearest up-sampling back to the level-0 size before the last up block: the second-to-last up
block's ``Upsample2D`` interpolates (nearest) straight to the level-0 size, so its conv runs at level-0
resolution exactly as in the original UNet (this placement gives 4.21 TFLOPs for spatial-only and 3.46 for
both on full SVD at 512x256x14, against the paper's 4.35 / 3.39). Both may be combined.

Implementation: the UNet's ``forward`` is replaced per instance (the class stays
``UNetSpatioTemporalConditionModel``), so config, ``save_pretrained`` and the pipeline's ``model_index.json``
are those of the base model and the transform is parameter-free: the parent's state dict loads strictly.
The settings live in ``unet.multiscale`` (a dict) — the stage record is what re-applies them on load.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput
from diffusers.utils.torch_utils import maybe_adjust_dtype_for_device

_BASE_FORWARD = UNetSpatioTemporalConditionModel.forward


def coarse_frames(frames: int, factor: int) -> int:
    """Frame count on the coarse grid (ceil): 14 -> 7, 25 -> 13 at factor 2."""
    return math.ceil(frames / factor)


def temporal_downsample(x: torch.Tensor, frames: int, factor: int) -> torch.Tensor:
    """Average groups of ``factor`` consecutive frames of ``x`` (batch*frames, ...); partial last group allowed."""
    if factor == 1:
        return x
    batch = x.shape[0] // frames
    fc = coarse_frames(frames, factor)
    xs = x.reshape(batch, frames, *x.shape[1:])
    pad = fc * factor - frames
    if pad:
        xs = torch.cat([xs, xs.new_zeros(batch, pad, *x.shape[1:])], dim=1)
    sums = xs.reshape(batch, fc, factor, *x.shape[1:]).sum(dim=2)
    counts = torch.full((fc,), float(factor), dtype=x.dtype, device=x.device)
    if pad:
        counts[-1] = factor - pad
    counts = counts.reshape(1, fc, *([1] * (x.ndim - 1)))
    return (sums / counts).reshape(batch * fc, *x.shape[1:])


def temporal_upsample(x: torch.Tensor, frames: int, factor: int) -> torch.Tensor:
    """Nearest-neighbour up-sampling of (batch*coarse_frames, ...) back to ``frames`` frames."""
    if factor == 1:
        return x
    fc = coarse_frames(frames, factor)
    batch = x.shape[0] // fc
    xs = x.reshape(batch, fc, *x.shape[1:])
    xs = xs.repeat_interleave(factor, dim=1, output_size=fc * factor)[:, :frames]
    return xs.reshape(batch * frames, *x.shape[1:])


def spatial_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average pooling by ``factor`` (ceil mode: a partial border window averages only its own pixels)."""
    if factor == 1:
        return x
    return F.avg_pool2d(x, kernel_size=factor, stride=factor, ceil_mode=True)


def spatial_upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour up-sampling to ``size`` (the level-0 skip size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")


def _multiscale_forward(
    self: UNetSpatioTemporalConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
    encoder_hidden_states: torch.Tensor,
    added_time_ids: torch.Tensor,
    return_dict: bool = True,
) -> UNetSpatioTemporalConditionOutput | tuple:
    """diffusers' forward with the multiscale down/up pair after the first / before the last level."""
    tf = int(self.multiscale["temporal_factor"])
    sf = int(self.multiscale["spatial_factor"])
    if tf == 1 and sf == 1:
        return _BASE_FORWARD(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict)

    # 1. time (as diffusers)
    timesteps = timestep
    if not torch.is_tensor(timesteps):
        dtype = maybe_adjust_dtype_for_device(
            torch.float64 if isinstance(timestep, float) else torch.int64, sample.device
        )
        timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
    elif len(timesteps.shape) == 0:
        timesteps = timesteps[None].to(sample.device)
    batch_size, num_frames = sample.shape[:2]
    timesteps = timesteps.expand(batch_size)
    t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
    emb = self.time_embedding(t_emb)
    time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape((batch_size, -1)).to(emb.dtype)
    emb = emb + self.add_embedding(time_embeds)

    coarse = coarse_frames(num_frames, tf)
    sample = sample.flatten(0, 1)
    emb_full = emb.repeat_interleave(num_frames, dim=0, output_size=batch_size * num_frames)
    ehs_full = encoder_hidden_states.repeat_interleave(
        num_frames, dim=0, output_size=encoder_hidden_states.shape[0] * num_frames
    )
    # The coarse grid's conditioning: the same pooling as the hidden state (per-frame values are identical).
    emb_coarse = temporal_downsample(emb_full, num_frames, tf)
    ehs_coarse = temporal_downsample(ehs_full, num_frames, tf)

    # 2. pre-process
    sample = self.conv_in(sample)
    iio_full = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)
    iio_coarse = torch.zeros(batch_size, coarse, dtype=sample.dtype, device=sample.device)

    down_block_res_samples: tuple[torch.Tensor, ...] = (sample,)
    for i, block in enumerate(self.down_blocks):
        full = i == 0
        kwargs: dict[str, Any] = {
            "hidden_states": sample,
            "temb": emb_full if full else emb_coarse,
            "image_only_indicator": iio_full if full else iio_coarse,
        }
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = ehs_full if full else ehs_coarse
        sample, res_samples = block(**kwargs)
        if full:
            # The multiscale down-sampling: the block's last output is both the hidden state and a skip.
            sample = spatial_downsample(temporal_downsample(sample, num_frames, tf), sf)
            res_samples = (*res_samples[:-1], sample)
        down_block_res_samples += res_samples

    # 4. mid
    sample = self.mid_block(
        hidden_states=sample, temb=emb_coarse, encoder_hidden_states=ehs_coarse, image_only_indicator=iio_coarse
    )

    # 5. up
    n_up = len(self.up_blocks)
    for i, block in enumerate(self.up_blocks):
        res_samples = down_block_res_samples[-len(block.resnets) :]
        down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
        final = i == n_up - 1
        upsample_size = None
        if not final:
            # Always explicit (nearest to an exact 2x size equals diffusers' scale_factor=2). The last coarse
            # block's Upsample2D thereby interpolates straight to the level-0 size (x2*spatial_factor) and
            # runs its conv at level-0 resolution, as in the original UNet.
            upsample_size = tuple(down_block_res_samples[-1].shape[2:])
        if final:
            # The multiscale up-sampling back to the level-0 grid (frames and pixels).
            sample = temporal_upsample(sample, num_frames, tf)
            sample = spatial_upsample(sample, tuple(res_samples[-1].shape[-2:]))
        kwargs = {
            "hidden_states": sample,
            "temb": emb_full if final else emb_coarse,
            "res_hidden_states_tuple": res_samples,
            "upsample_size": upsample_size,
            "image_only_indicator": iio_full if final else iio_coarse,
        }
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = ehs_full if final else ehs_coarse
        sample = block(**kwargs)

    # 6. post-process
    sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
    sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])
    if not return_dict:
        return (sample,)
    return UNetSpatioTemporalConditionOutput(sample=sample)


def apply_multiscale(
    unet: UNetSpatioTemporalConditionModel, temporal_factor: int = 2, spatial_factor: int = 1
) -> UNetSpatioTemporalConditionModel:
    """Make ``unet`` (in place) run its deeper levels on a coarser frame (and optionally pixel) grid.

    Parameter-free: the state dict is unchanged. Factors 1/1 restore diffusers' own forward. Needs at least
    two up blocks. Works on any device, meta included.
    """
    temporal_factor, spatial_factor = int(temporal_factor), int(spatial_factor)
    if temporal_factor < 1 or spatial_factor < 1:
        raise ValueError(f"factors must be >= 1, got temporal={temporal_factor}, spatial={spatial_factor}")
    if len(unet.up_blocks) < 2 or len(unet.down_blocks) < 2:
        raise ValueError("multiscaling needs a UNet with at least two levels")
    unet.multiscale = {"temporal_factor": temporal_factor, "spatial_factor": spatial_factor}
    if temporal_factor == 1 and spatial_factor == 1:
        unet.__dict__.pop("forward", None)
    else:
        unet.forward = types.MethodType(_multiscale_forward, unet)
    return unet


def multiscale_factors(unet: UNetSpatioTemporalConditionModel) -> tuple[int, int]:
    """(temporal_factor, spatial_factor) of ``unet``; (1, 1) when it is not multiscaled."""
    cfg = getattr(unet, "multiscale", None) or {}
    return int(cfg.get("temporal_factor", 1)), int(cfg.get("spatial_factor", 1))
