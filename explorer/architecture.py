"""Build a stage's UNet architecture from the registry: base config + the recorded transforms.

This is the one place that turns (stage, scale) into a module tree; the FLOPs tool, the loaders and the
training scripts all go through it so that they can never disagree about what a stage is.
"""

from __future__ import annotations

from typing import Any, Literal

from diffusers import UNetSpatioTemporalConditionModel

from explorer import stages as registry
from explorer.models import build_unet
from explorer.models import unet_config as base_config

KeptBlocks = list[int] | Literal["all"] | None


def pruning_transform(
    slug: str, transforms: list[registry.Transform] | None = None
) -> registry.Transform | None:
    """The temporal-pruning transform in ``slug``'s lineage (or in ``transforms``), if any."""
    chain = transforms if transforms is not None else registry.architecture_transforms(slug)
    for t in chain:
        if t.name == "temporal_pruning":
            return t
    return None


def kept_choice(
    pruning: registry.Transform, unet: UNetSpatioTemporalConditionModel, kept_blocks: list[int] | None = None
) -> tuple[list[int], str]:
    """The temporal blocks a pruning transform keeps on an unpruned ``unet``, and where the choice comes from.

    ``kept_blocks`` given: exactly those; else the transform's recorded ``blocks``; else the documented default
    heuristic for ``kept`` (or ``pruned_fraction``) blocks, which depends only on the module structure.
    """
    from explorer.transforms.temporal_gates import default_kept_blocks, num_temporal_blocks

    if kept_blocks is not None:
        return sorted(int(i) for i in kept_blocks), "given"
    if pruning.params.get("blocks") is not None:
        return sorted(int(i) for i in pruning.params["blocks"]), "trained (stage record)"
    n = pruning.params.get("kept")
    if n is None:
        n = registry.kept_count(num_temporal_blocks(unet), float(pruning.params.get("pruned_fraction", 0.7)))
    return sorted(default_kept_blocks(unet, int(n))), "default heuristic (no trained importances)"


def build_stage_unet(
    slug: str,
    scale: str = "full",
    device: str = "meta",
    kept_blocks: KeptBlocks = None,
    unet_config: dict[str, Any] | None = None,
    transforms: list[registry.Transform] | None = None,
    seed: int | None = 0,
) -> tuple[UNetSpatioTemporalConditionModel, dict[str, Any]]:
    """The UNet of stage ``slug`` at ``scale`` with random (or meta) weights, and how it was built.

    ``kept_blocks``: for pruned stages, ``None`` = the recorded choice (a ``blocks`` parameter of the
    pruning transform) or else the documented default; a list = keep exactly those temporal blocks;
    ``"all"`` = build the unpruned parent architecture (used to cost each block).
    """
    from explorer.transforms import apply_transforms

    chain = list(transforms) if transforms is not None else registry.architecture_transforms(slug)
    unet = build_unet(unet_config or base_config(scale), device=device, seed=seed)
    info: dict[str, Any] = {"stage": registry.resolve(slug), "scale": scale, "transforms": []}
    for t in chain:
        if t.name == "temporal_pruning":
            if kept_blocks == "all":
                continue
            blocks, source = kept_choice(t, unet, kept_blocks)
            t = registry.Transform(t.name, {**t.params, "blocks": blocks})
            info["kept_blocks"], info["kept_blocks_source"] = blocks, source
        unet = apply_transforms(unet, [t])
        info["transforms"].append(t.to_dict())
    return unet, info
