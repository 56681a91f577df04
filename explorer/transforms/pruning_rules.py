"""The temporal-pruning rules every view shares: how many blocks a pruned fraction keeps, which blocks a pruned
stage keeps on a UNet of another scale (the one rule), the zero-shot choice without trained gates, and the block
layout of each scale.

Why one module: the FLOPs tab, the gates slider, the Compare cards, the README and ``python -m explorer.flops``
must give a pruned stage the same cost; each used to carry its own copy of the rule.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

from explorer import stages as registry

HEURISTICS: tuple[str, ...] = ("blend", "structural")


def zero_shot_kept(unet: Any, n: int, heuristic: str = "blend") -> list[int]:
    """Kept temporal blocks for zero-shot pruning without trained gates (documented in docs/app.md).

    ``blend``: rank blocks by the weight the pretrained blend gives the temporal branch, (1 - a_i) with
    a_i = sigmoid(mix_factor) (``explorer.transforms.temporal_gates.temporal_weights``): a block the pretrained
    model barely mixes in is the cheapest to delete. Ties (e.g. untrained mixers, all equal) are broken by the
    structural order. ``structural``: ``default_kept_blocks`` (temporal attention at the finest levels first).
    """
    from explorer.transforms.temporal_gates import default_kept_blocks, temporal_blocks, temporal_weights

    infos = temporal_blocks(unet)
    n = max(0, min(int(n), len(infos)))
    if heuristic == "structural":
        return sorted(default_kept_blocks(unet, n))
    if heuristic != "blend":
        raise ValueError(f"unknown heuristic {heuristic!r}; expected one of {HEURISTICS}")
    rank = _structural_rank(unet)
    weights = {i: float(w.detach().float()) for i, w in temporal_weights(unet).items()}
    ranked = sorted(weights, key=lambda i: (-round(weights[i], 6), rank.get(i, i)))
    return sorted(ranked[:n])


def _structural_rank(unet: Any) -> dict[int, int]:
    """Rank of every block in the structural heuristic's order (0 = kept first)."""
    from explorer.transforms.temporal_gates import default_kept_blocks, temporal_blocks

    total = len(temporal_blocks(unet))
    rank: dict[int, int] = {}
    previous: set[int] = set()
    for n in range(1, total + 1):
        now = set(default_kept_blocks(unet, n))
        for i in now - previous:
            rank[i] = n - 1
        previous = now
    return rank


def pruned_fraction() -> float:
    """The temporal-pruning stage's pruned fraction (0.7, as the paper: 11 of SVD's 38 blocks kept)."""
    for t in registry.get_stage("temporal-pruning").transforms:
        if t.name == "temporal_pruning" and t.params.get("pruned_fraction") is not None:
            return float(t.params["pruned_fraction"])
    return 0.7


def default_kept(total: int) -> int:
    """Default number of temporal blocks kept out of ``total``: ``kept_count(total, pruned_fraction())``
    (38 -> 11, the tiny UNet's 33 -> 10)."""
    return registry.kept_count(int(total), pruned_fraction())


_BLOCK_COUNTS: dict[str, int] = {}


def temporal_block_count(scale: str = "full") -> int:
    """Temporal blocks of the unpruned UNet at ``scale`` (full and micro: 38; tiny: 33), built on the meta
    device once per scale."""
    if scale not in _BLOCK_COUNTS:
        from explorer.models import build_unet
        from explorer.transforms.temporal_gates import num_temporal_blocks

        _BLOCK_COUNTS[scale] = num_temporal_blocks(build_unet(scale, "meta"))
    return _BLOCK_COUNTS[scale]


def scale_for_count(total: int) -> str | None:
    """The named scale whose UNet has ``total`` temporal blocks (full preferred over micro: same layout)."""
    from explorer.models import UNET_CONFIGS

    for scale in ("full", "tiny", *sorted(UNET_CONFIGS)):
        if scale in UNET_CONFIGS and temporal_block_count(scale) == total:
            return scale
    return None



def fraction_for(kept: int, total: int) -> float:
    """The pruned fraction that keeping ``kept`` of ``total`` blocks stands for: the stage's own fraction at its
    default count (so the trained stage reads the same number everywhere), else ``1 - kept / total``."""
    return pruned_fraction() if kept == default_kept(total) else 1 - kept / total


def transforms_for_scale(
    transforms: Sequence[registry.Transform] | None, scale: str
) -> tuple[list[registry.Transform] | None, str]:
    """A stage's recorded transforms rebuilt for another scale's UNet, and what was changed (or "").

    Pruning learned on the tiny UNet names its kept blocks by index among tiny's 33 temporal blocks; full SVD has
    38, and tiny has no level-0 transformers, so the learned choice has no counterpart at full scale. The one rule
    used everywhere (FLOPs tab, README, cards, ``python -m explorer.flops``): at another scale a pruned stage keeps
    the documented default blocks (``round(0.3 x blocks)``, ``default_kept_blocks``) for its pruned fraction."""
    if transforms is None:
        return None, ""
    target = temporal_layout(scale)
    out, note = [], ""
    for t in transforms:
        total = t.params.get("total")
        if t.name == "temporal_pruning" and total is not None and int(total) != len(target):
            t = registry.Transform(t.name, {k: v for k, v in t.params.items() if k not in ("total", "kept", "blocks")})
            kept = registry.kept_count(len(target), float(t.params.get("pruned_fraction", pruned_fraction())))
            note = (f"{scale} scale: the documented default {kept} of {len(target)} temporal blocks (the blocks "
                    f"learned on the {int(total)}-block tiny UNet have no full-scale counterpart)")
        out.append(t)
    return out, note


def temporal_layout(scale: str = "full") -> list[dict[str, Any]]:
    """The temporal blocks (index, kind, level, side, path, channels) of the unpruned architecture at ``scale``
    (meta device): 38 for full SVD and micro, 33 for tiny. Cached per scale (a copy is returned)."""
    return copy.deepcopy(_temporal_layout(scale))


@functools.lru_cache(maxsize=8)
def _temporal_layout(scale: str) -> list[dict[str, Any]]:
    from explorer.architecture import build_stage_unet
    from explorer.transforms.temporal_gates import temporal_blocks

    unet, _ = build_stage_unet("temporal-multiscale", scale, device="meta")
    return [b.to_dict() for b in temporal_blocks(unet)]


def structural_order(scale: str = "full") -> list[int]:
    """Block indices in the order the documented default heuristic keeps them (first = kept first)."""
    from explorer.architecture import build_stage_unet

    unet, _ = build_stage_unet("temporal-multiscale", scale, device="meta")
    rank = _structural_rank(unet)
    return sorted(rank, key=lambda i: rank[i])


__all__ = [
    "HEURISTICS", "default_kept", "fraction_for", "pruned_fraction", "scale_for_count",
    "structural_order", "temporal_block_count", "temporal_layout", "transforms_for_scale", "zero_shot_kept",
]
