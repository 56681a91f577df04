"""Architecture transforms of the MobileVD compression path, on diffusers' ``UNetSpatioTemporalConditionModel``.

Each transform acts in place on any SVD-family UNet (full size, tiny, micro) and returns it. Every
transform can be applied on the meta device (structure only), which is how stage folders are loaded:
build the base UNet, :func:`apply_transforms` with the stage record's transforms, load weights strictly.

Names (``explorer.stages.Transform.name``) and parameters:
- ``optimized_cross_attention``: no parameters (:mod:`.cross_attention`).
- ``temporal_multiscale``: ``temporal_factor`` (2), ``spatial_factor`` (1) (:mod:`.multiscale`).
- ``temporal_pruning``: ``kept`` or ``pruned_fraction`` (kept = round((1 - f) * blocks)), ``total`` (checked
  against the UNet), optional ``blocks`` = kept block
  indices; without ``blocks`` the documented default :func:`.temporal_gates.default_kept_blocks`
  (:mod:`.temporal_gates`).
- ``channel_funnels``: ``fun_factor`` (0.5), ``init`` ('csi' | 'he'), ``merged`` (bool), optional ``kinds``
  (subset of spatial/temporal/cross), ``convs`` (bool, Table 5 conv funnels), ``attention`` (bool)
  (:mod:`.funnels`).
- ``truncated_svd``: ``rank_factor`` (Table 5 ablation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from explorer.stages import Transform, kept_count
from explorer.transforms.cross_attention import optimize_cross_attention
from explorer.transforms.funnels import apply_channel_funnels, apply_truncated_svd
from explorer.transforms.multiscale import apply_multiscale
from explorer.transforms.temporal_gates import default_kept_blocks, num_temporal_blocks, prune_temporal_blocks


def _optimized_cross_attention(unet: nn.Module, **params: Any) -> nn.Module:
    if params:
        raise ValueError(f"optimized_cross_attention takes no parameters, got {sorted(params)}")
    return optimize_cross_attention(unet)


def _temporal_multiscale(unet: nn.Module, temporal_factor: int = 2, spatial_factor: int = 1) -> nn.Module:
    return apply_multiscale(unet, temporal_factor=temporal_factor, spatial_factor=spatial_factor)


def _temporal_pruning(
    unet: nn.Module, kept: int | None = None, total: int | None = None, blocks: Sequence[int] | None = None,
    pruned_fraction: float | None = None,
) -> nn.Module:
    count = num_temporal_blocks(unet)
    if total is not None and int(total) != count:
        raise ValueError(f"temporal_pruning expects {total} temporal blocks, this UNet has {count}")
    if blocks is None:
        if kept is None and pruned_fraction is None:
            raise ValueError("temporal_pruning needs 'kept', 'pruned_fraction' or 'blocks'")
        n = int(kept) if kept is not None else kept_count(count, float(pruned_fraction))
        blocks = default_kept_blocks(unet, n)
    return prune_temporal_blocks(unet, [int(i) for i in blocks])


def _channel_funnels(
    unet: nn.Module,
    fun_factor: float = 0.5,
    init: str = "csi",
    merged: bool = False,
    kinds: Sequence[str] = ("spatial", "temporal", "cross"),
    convs: bool = False,
    attention: bool = True,
    structural: bool | None = None,
) -> nn.Module:
    return apply_channel_funnels(
        unet, fun_factor, init=init, merged=merged, kinds=tuple(kinds), convs=convs, attention=attention,
        structural=structural,
    )


def _truncated_svd(unet: nn.Module, rank_factor: float = 0.5, kinds: Sequence[str] = ("spatial", "temporal", "cross")
                   ) -> nn.Module:
    return apply_truncated_svd(unet, rank_factor, kinds=tuple(kinds))


TRANSFORMS: dict[str, Callable[..., nn.Module]] = {
    "optimized_cross_attention": _optimized_cross_attention,
    "temporal_multiscale": _temporal_multiscale,
    "temporal_pruning": _temporal_pruning,
    "channel_funnels": _channel_funnels,
    "truncated_svd": _truncated_svd,
}


def apply_transforms(unet: nn.Module, transforms: Sequence[Transform | dict[str, Any]]) -> nn.Module:
    """Apply ``transforms`` in order (in place) and return the UNet. Unknown names raise a ValueError."""
    for t in transforms:
        t = t if isinstance(t, Transform) else Transform.from_dict(t)
        if t.name not in TRANSFORMS:
            raise ValueError(f"unknown transform {t.name!r}; known: {sorted(TRANSFORMS)}")
        fn = TRANSFORMS[t.name]
        try:
            inspect.signature(fn).bind(unet, **t.params)
        except TypeError as err:
            raise ValueError(f"bad parameters for transform {t.name!r}: {t.params} ({err})") from err
        unet = fn(unet, **t.params)
    return unet


__all__ = ["TRANSFORMS", "apply_transforms"]
