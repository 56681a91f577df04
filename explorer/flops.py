"""Per-layer FLOPs of any stage at any size, counted by torch's own FLOP counter on the meta device.

Accounting (the project's one accounting, everywhere): FLOPs = 2 x multiply-accumulates, for ONE UNet
evaluation (NFE), batch 1, UNet only (no VAE, no image encoder). Counted ops: matrix multiplies, convolutions
and scaled-dot-product attention (torch.utils.flop_counter's registry). Normalisations, activations and
element-wise ops are not counted; that is why full SVD counts 44.80 instead of the paper's 45.43 TFLOPs
(-1.4%). Counting happens on the meta device: no weights, no memory, about a second at full scale.

CLI::

    python -m explorer.flops --stage mobilevd --scale full --json
    python -m explorer.flops --all
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explorer import stages as registry
from explorer.models import VAE_FACTOR, unet_inputs

LAYER_TYPES: tuple[str, ...] = (
    "spatial conv",
    "temporal conv",
    "spatial self-attention",
    "temporal self-attention",
    "cross-attention",
    "feed-forward",
    "funnel",
    "other",
)
COUNTED_OPS = "matmul, convolution, scaled-dot-product attention"


@dataclass
class Layer:
    name: str
    type: str
    block: str
    flops: int
    params: int


@dataclass
class FlopsReport:
    """FLOPs of one UNet evaluation; ``layers`` partition ``flops`` exactly (residual goes to 'other')."""

    flops: int
    params: int
    layers: list[Layer] = field(default_factory=list)
    # every module path's FLOPs, children included, as the counter saw them (empty for a report derived by pruning
    # a counted parent, whose containers' counts would still include the removed blocks)
    modules: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def tflops(self) -> float:
        return self.flops / 1e12

    def by_type(self) -> dict[str, int]:
        out = {t: 0 for t in LAYER_TYPES}
        for layer in self.layers:
            out[layer.type] += layer.flops
        return out

    def by_block(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for layer in self.layers:
            out[layer.block] += layer.flops
        return dict(out)

    def subtree(self, prefix: str) -> int:
        """FLOPs of all layers under module path ``prefix``."""
        return sum(layer.flops for layer in self.layers if layer.name == prefix or layer.name.startswith(prefix + "."))


def _is_funnel(module: nn.Module) -> bool:
    return "funnel" in type(module).__name__.lower()


def _is_attention(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("attn1", "attn2")


def _is_feed_forward(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("ff", "ff_in")


def classify(name: str, module: nn.Module) -> str | None:
    """Layer type of a module, or None when it is not a reported layer (a container)."""
    if _is_funnel(module):
        return "funnel"
    if _is_attention(name):
        if name.endswith("attn2"):
            return "cross-attention"
        return "temporal self-attention" if "temporal_transformer_blocks" in name else "spatial self-attention"
    if _is_feed_forward(name):
        return "feed-forward"
    if isinstance(module, nn.Conv3d) or (isinstance(module, nn.Conv2d) and "temporal" in name):
        return "temporal conv"
    if isinstance(module, nn.Conv2d):
        return "spatial conv"
    if isinstance(module, nn.Linear):
        return "other"
    return None


def block_of(name: str) -> str:
    """Top-level UNet block of a module path: 'down_blocks.0', 'mid_block', 'up_blocks.3' or 'stem'."""
    parts = name.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    if parts[0] == "mid_block":
        return "mid_block"
    return "stem"


def _layers_of(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """Reported layers: the outermost classified module on each path, plus every funnel (always split out)."""
    chosen: list[tuple[str, str, nn.Module]] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        if not name:
            continue
        kind = classify(name, module)
        if kind is None:
            continue
        inside = any(name.startswith(t + ".") for t in taken)
        if inside and kind != "funnel":
            continue
        chosen.append((name, kind, module))
        if kind != "funnel":
            taken.append(name)
    return chosen


def count_unet_flops(model: nn.Module, inputs: dict[str, torch.Tensor]) -> FlopsReport:
    """Run ``model(**inputs)`` under torch's FLOP counter and attribute the count to layers."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    root = type(model).__name__
    modules = {key[len(root) + 1:]: int(sum(ops.values())) for key, ops in counter.get_flop_counts().items()
               if key.startswith(root + ".")}
    report = _attribute(model, modules, int(counter.get_total_flops()))
    report.modules = modules
    return report


def _attribute(model: nn.Module, modules: dict[str, int], total: int) -> FlopsReport:
    """Split ``total`` over ``model``'s reported layers, given each module path's FLOPs (children included)."""
    layers: list[Layer] = []
    reported = _layers_of(model)
    funnel_names = [n for n, k, _ in reported if k == "funnel"]
    # parameters of every funnel module, found once (a scan of named_modules per layer made counting 2x slower)
    funnel_params = {f: sum(p.numel() for p in m.parameters()) for f, m in model.named_modules() if _is_funnel(m)}
    for name, kind, module in reported:
        flops = modules.get(name, 0)
        params = sum(p.numel() for p in module.parameters())
        if kind != "funnel":
            flops -= sum(modules.get(f, 0) for f in funnel_names if f.startswith(name + "."))
            params -= sum(n for f, n in funnel_params.items() if f.startswith(name + "."))
        layers.append(Layer(name=name, type=kind, block=block_of(name), flops=flops, params=params))
    residual = total - sum(layer.flops for layer in layers)
    if residual:
        layers.append(Layer(name="(unattributed)", type="other", block="stem", flops=residual, params=0))
    params = sum(p.numel() for p in model.parameters())
    return FlopsReport(flops=total, params=params, layers=layers)


def latent_size(width: int, height: int, scale: str) -> tuple[int, int]:
    """Latent (height, width) for a pixel size; the size must be a multiple of the VAE factor."""
    factor = VAE_FACTOR["full" if scale == "full" else scale]
    if width % factor or height % factor:
        raise ValueError(f"{width}x{height} px is not a multiple of the {scale} VAE factor {factor}")
    return height // factor, width // factor


def unet_flops(model: nn.Module, width: int, height: int, frames: int, scale: str) -> FlopsReport:
    """FLOPs of one NFE of ``model`` at a pixel size (batch 1, one-token context)."""
    lat_h, lat_w = latent_size(width, height, scale)
    device = next(model.parameters()).device
    inputs = unet_inputs(model, lat_h, lat_w, frames, device=device)
    return count_unet_flops(model, inputs)


@dataclass
class StageFlops:
    stage: str
    scale: str
    width: int
    height: int
    frames: int
    tflops: float
    params_m: float
    accounting: str
    counted_ops: str
    by_type: dict[str, float]
    layers: list[dict[str, Any]]
    paper_tflops: float | None = None
    kept_blocks: list[int] | None = None
    tflops_range: tuple[float, float] | None = None
    kept_blocks_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_flops(
    slug: str,
    scale: str = "full",
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    kept_blocks: list[int] | None = None,
    unet_config: dict[str, Any] | None = None,
    transforms: list[registry.Transform] | None = None,
) -> StageFlops:
    """Per-layer FLOPs of a stage (its architecture built on the meta device).

    ``kept_blocks`` overrides the kept temporal blocks of pruned stages; without it, the trained choice
    recorded in a stage folder is used when the caller passes ``transforms`` from that folder, else the
    documented default (``explorer.transforms.temporal_gates.default_kept_blocks``).
    """
    from explorer.architecture import build_stage_unet, pruning_transform

    stage = registry.get_stage(slug)
    default_w, default_h = stage.size(scale)
    width = width or default_w
    height = height or default_h
    frames = frames or stage.frames
    pruning = pruning_transform(stage.slug, transforms)
    if pruning is None:
        model, _ = build_stage_unet(stage.slug, scale, device="meta", unet_config=unet_config, transforms=transforms)
        report = unet_flops(model, width, height, frames, scale)
    else:
        report, kept, source, floor, costs = _pruned_stage_report(
            stage.slug, pruning, scale, width, height, frames, kept_blocks, unet_config, transforms)
    result = StageFlops(
        stage=stage.slug,
        scale=scale,
        width=width,
        height=height,
        frames=frames,
        tflops=report.tflops,
        params_m=report.params / 1e6,
        accounting=registry.ACCOUNTING,
        counted_ops=COUNTED_OPS,
        by_type={k: v / 1e12 for k, v in report.by_type().items()},
        layers=[asdict(layer) for layer in report.layers],
        paper_tflops=stage.paper.tflops if scale == "full" else None,
    )
    if pruning is not None:
        low, high = kept_range(floor, costs, len(kept))
        result.kept_blocks, result.kept_blocks_source, result.tflops_range = kept, source, (low / 1e12, high / 1e12)
    return result


def _pruned_stage_report(
    slug: str,
    pruning: registry.Transform,
    scale: str,
    width: int,
    height: int,
    frames: int,
    kept_blocks: list[int] | None,
    unet_config: dict[str, Any] | None,
    transforms: list[registry.Transform] | None,
) -> tuple[FlopsReport, list[int], str, int, list[int]]:
    """A pruned stage's report, kept blocks and their source, and its block costs, from ONE count.

    The unpruned parent is built and counted once; its block costs give the range over all choices, and
    pruning it in place removes exactly those blocks' layers (temporal blocks are independent, so every
    other layer keeps its count: ``tests/test_flops.py`` checks the result against counting the pruned model).
    """
    from explorer.architecture import build_stage_unet, kept_choice
    from explorer.transforms import apply_transforms

    model, _ = build_stage_unet(slug, scale, device="meta", kept_blocks="all", unet_config=unet_config,
                                transforms=transforms)
    parent = unet_flops(model, width, height, frames, scale)
    floor, costs = costs_in_report(parent, model)
    kept, source = kept_choice(pruning, model, kept_blocks)
    apply_transforms(model, [registry.Transform(pruning.name, {**pruning.params, "blocks": kept})])
    report = _attribute(model, parent.modules, floor + sum(costs[i] for i in kept))
    return report, kept, source, floor, costs


def temporal_block_costs(
    slug: str,
    scale: str,
    width: int,
    height: int,
    frames: int,
    unet_config: dict[str, Any] | None = None,
    transforms: list[registry.Transform] | None = None,
) -> tuple[int, list[int]]:
    """(FLOPs with every temporal block pruned, FLOPs of each temporal block) for a pruned stage.

    Temporal blocks are independent of each other, so the cost of any kept set is the first number plus
    the sum of the kept blocks' costs; this is what makes the min/max range over all choices exact. For the same
    reason the floor is the all-kept count less every block's cost (one count, not two: ``tests/test_flops.py``
    checks it against counting the all-pruned model).
    """
    from explorer.architecture import build_stage_unet

    full, _ = build_stage_unet(slug, scale, device="meta", kept_blocks="all", unet_config=unet_config,
                               transforms=transforms)
    lat_h, lat_w = latent_size(width, height, scale)
    return block_costs(full, unet_inputs(full, lat_h, lat_w, frames, device="meta"))


def block_costs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[int, list[int]]:
    """(FLOPs with every temporal block pruned, FLOPs of each temporal block, in block order) of an unpruned
    ``model`` on ``inputs``: the one cost model of temporal blocks (FLOPs tab, gates slider, cards, tests)."""
    return costs_in_report(count_unet_flops(model, inputs), model)


def costs_in_report(report: FlopsReport, model: nn.Module) -> tuple[int, list[int]]:
    """:func:`block_costs` from an existing count of the unpruned ``model``."""
    from explorer.transforms.temporal_gates import temporal_blocks

    costs = [sum(report.subtree(path) for path in block_cost_paths(b)) for b in temporal_blocks(model)]
    return report.flops - sum(costs), costs


def block_cost_paths(block: Any) -> list[str]:
    """Modules whose compute disappears with a temporal block: the block, and for a transformer its frame
    position embedding (SVD has one temporal layer per transformer, so the embedding goes with it)."""
    if block.kind == "transformer":
        return [block.path, f"{block.container}.time_pos_embed"]
    return [block.path]


def kept_range(floor: float, costs: Sequence[float], kept: int) -> tuple[float, float]:
    """(min, max) FLOPs over all choices of ``kept`` of the blocks costing ``costs`` (exact: costs add)."""
    ordered = sorted(costs)
    return floor + sum(ordered[:kept]), floor + (sum(ordered[len(ordered) - kept:]) if kept else 0)


def pruning_range(
    slug: str,
    scale: str,
    width: int,
    height: int,
    frames: int,
    kept: int,
    unet_config: dict[str, Any] | None = None,
    transforms: list[registry.Transform] | None = None,
) -> tuple[float, float]:
    """(min, max) TFLOPs over all choices of ``kept`` temporal blocks."""
    floor, costs = temporal_block_costs(slug, scale, width, height, frames, unet_config, transforms)
    low, high = kept_range(floor, costs, kept)
    return low / 1e12, high / 1e12


def all_stage_flops(scale: str = "full", **kwargs: Any) -> list[StageFlops]:
    return [stage_flops(slug, scale, **kwargs) for slug in registry.SLUGS]


def _table(rows: list[StageFlops]) -> str:
    lines = [f"{'stage':<22}{'size':>12}{'TFLOPs':>10}{'paper':>8}{'diff':>8}{'params M':>10}  range (pruned)"]
    for r in rows:
        paper = f"{r.paper_tflops:.2f}" if r.paper_tflops else "-"
        diff = f"{100 * (r.tflops / r.paper_tflops - 1):+.1f}%" if r.paper_tflops else "-"
        rng = f"{r.tflops_range[0]:.2f}-{r.tflops_range[1]:.2f}" if r.tflops_range else ""
        size = f"{r.width}x{r.height}"
        lines.append(f"{r.stage:<22}{size:>12}{r.tflops:>10.3f}{paper:>8}{diff:>8}{r.params_m:>10.1f}  {rng}")
    lines.append(f"accounting: {registry.ACCOUNTING}; counted ops: {COUNTED_OPS}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.flops", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stage", help="stage slug (or alias, e.g. mobilevd)")
    target.add_argument("--all", action="store_true", help="every stage of the path")
    parser.add_argument("--scale", default="full", choices=["full", "tiny", "micro"])
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--kept-blocks", help="comma-separated temporal block indices to keep (pruned stages)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--layers", action="store_true", help="with the table: also print per-layer rows")
    args = parser.parse_args(argv)
    kept = [int(i) for i in args.kept_blocks.split(",") if i.strip()] if args.kept_blocks else None
    try:
        if args.all:
            rows = all_stage_flops(args.scale, width=args.width, height=args.height, frames=args.frames)
        else:
            rows = [stage_flops(args.stage, args.scale, args.width, args.height, args.frames, kept_blocks=kept)]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = [r.to_dict() for r in rows]
        print(json.dumps(out if args.all else out[0], indent=1))
    else:
        print(_table(rows))
        if args.layers:
            for r in rows:
                for layer in r.layers:
                    print(f"  {r.stage:<20}{layer['type']:<25}{layer['flops'] / 1e9:>12.3f} GF  {layer['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "LAYER_TYPES",
    "FlopsReport",
    "Layer",
    "StageFlops",
    "count_unet_flops",
    "stage_flops",
    "all_stage_flops",
    "pruning_range",
    "temporal_block_costs",
    "unet_flops",
]
