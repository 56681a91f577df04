"""FLOPs tab: per-layer FLOPs of any stage at any size and scale, the path by layer type, diffs, CSV."""

from __future__ import annotations

import csv
from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from explorer import stages as registry
from explorer.models import UNET_CONFIGS
from explorer.records import ACCOUNTING
from explorer.serving import safe_name, shorten
from explorer.transforms.pruning_rules import temporal_block_count

SCALES = ["full", "tiny"]
PRUNED = ("temporal-pruning", "channel-funnels", "mobilevd-hd")  # stages whose kept temporal blocks can be typed


def _dim(value: Any, name: str, lo: int, hi: int) -> int | None:
    """A size field: blank/0 = the stage's default; otherwise an integer in [lo, hi]."""
    if value in (None, "", 0, 0.0):
        return None
    try:
        v = int(float(value))
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number") from None
    if not lo <= v <= hi:
        raise gr.Error(f"{name} must be in {lo}..{hi} (0 = stage default), got {v}")
    return v


def _kept(text: Any, total: int) -> list[int] | None:
    """Kept temporal-block indices typed by the user; ``total`` = blocks of the scale's unpruned UNet."""
    if text is None or not str(text).strip():
        return None
    try:
        out = sorted({int(x) for x in str(text).replace(";", ",").split(",") if x.strip()})
    except ValueError:
        raise gr.Error(f"kept blocks: comma-separated block indices 0..{total - 1}, e.g. 0,1,4,5") from None
    if any(not 0 <= i < total for i in out):
        raise gr.Error(f"kept blocks must be indices in 0..{total - 1} (this scale's UNet has {total} temporal "
                       "blocks)")
    return out


def count(ctx: AppContext, slug: str, scale: str, width: Any, height: Any, frames: Any, kept: Any
          ) -> dict[str, Any]:
    """Cached per-layer FLOPs with user-facing errors."""
    try:
        slug = registry.resolve(str(slug))
    except ValueError:
        raise gr.Error(f"unknown stage {shorten(repr(str(slug)), 60)}; valid stages: "
                       f"{', '.join(registry.SLUGS)}") from None
    if scale not in SCALES:
        raise gr.Error(f"scale must be one of: {', '.join(SCALES)}")
    kept_blocks = _kept(kept, temporal_block_count(scale))
    if kept_blocks is not None and slug not in PRUNED:
        raise gr.Error(f"{slug} is not a pruned stage; leave 'kept blocks' empty")
    try:
        return ctx.flops.stage(slug, scale, _dim(width, "width", 16, 4096), _dim(height, "height", 16, 4096),
                               _dim(frames, "frames", 1, 64), kept_blocks=kept_blocks)
    except ValueError as exc:
        raise gr.Error(f"Cannot count FLOPs: {exc}") from None


def summary_md(res: dict[str, Any]) -> str:
    paper = res.get("paper_tflops")
    lines = [
        f"### {res['stage']} — {res['tflops']:.4g} TFLOPs per NFE",
        f"{res['scale']} scale, {res['width']}x{res['height']} px, {res['frames']} frames, {res['params_m']:.2f} M "
        f"parameters. <span class='mvd-src m'>measured here</span> torch FLOP counter on the meta device "
        f"(counts {res['counted_ops']}; norms and element-wise ops are not counted).",
    ]
    if paper:
        own = registry.get_stage(res["stage"]).size("full")
        if (res["width"], res["height"], res["frames"]) == (*own, registry.get_stage(res["stage"]).frames):
            lines.append(f"Paper: {paper} TFLOPs <span class='mvd-src p'>paper</span> "
                         f"({100 * (res['tflops'] / paper - 1):+.1f}% here).")
        else:  # a percentage against a number measured at another size would mean nothing
            lines.append(f"Paper: {paper} TFLOPs <span class='mvd-src p'>paper</span> at {own[0]}x{own[1]}x14 only; "
                         f"no comparison at {res['width']}x{res['height']}x{res['frames']}.")
    if res.get("kept_blocks") is not None:
        rng = res.get("tflops_range")
        total = temporal_block_count(res["scale"]) if res["scale"] in UNET_CONFIGS else "?"
        lines.append(f"Kept temporal blocks ({len(res['kept_blocks'])} of {total}, {res.get('kept_blocks_source')}): "
                     f"`{res['kept_blocks']}`" + (f"; any choice of that many: {rng[0]:.4g}-{rng[1]:.4g} TFLOPs."
                                                  if rng else "."))
    return "\n\n".join(lines)


def write_csv(ctx: AppContext, res: dict[str, Any]) -> str:
    path = ctx.out_dir / (f"flops-{safe_name(res['stage'])}-{res['scale']}-{res['width']}x{res['height']}x"
                          f"{res['frames']}.csv")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["stage", "scale", "width", "height", "frames", "layer", "type", "block", "flops", "params",
                    "accounting"])
        for layer in res["layers"]:
            w.writerow([res["stage"], res["scale"], res["width"], res["height"], res["frames"], layer["name"],
                        layer["type"], layer["block"], layer["flops"], layer["params"], ACCOUNTING])
    return str(path)


def top_layers(res: dict[str, Any], n: int = 25) -> list[list[Any]]:
    total = max(1, sum(layer["flops"] for layer in res["layers"]))
    rows = sorted(res["layers"], key=lambda layer: -layer["flops"])[:n]
    return [[layer["name"], layer["type"], layer["block"], round(layer["flops"] / 1e9, 3),
             round(100 * layer["flops"] / total, 2), round(layer["params"] / 1e6, 3)] for layer in rows]


def path_chart(ctx: AppContext, scale: str, progress: Any = None) -> Any:
    results = []
    for i, slug in enumerate(registry.SLUGS):
        if progress is not None:
            progress((i, len(registry.SLUGS)), desc=f"counting {slug} ({scale})")
        results.append(ctx.flops.stage(slug, scale))
    return plots.by_type_stacked(results, scale)


def build(ctx: AppContext) -> dict[str, Any]:
    slugs = list(registry.SLUGS)
    gr.Markdown(
        f"**Accounting:** {ACCOUNTING}. Counted by torch's FLOP counter on the meta device (no weights): "
        "matmul, convolution and scaled-dot-product attention. Full SVD counts 44.80 TFLOPs vs the paper's 45.43 "
        "(-1.4%: the paper counts more op kinds).", elem_classes=["mvd-acc"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            stage = gr.Dropdown(slugs, value="channel-funnels", label="stage", elem_id="mvd-flops-stage",
                                allow_custom_value=True)
            scale = gr.Radio(SCALES, value="full", label="scale")
            with gr.Row():
                width = gr.Number(value=0, precision=0, label="width (0 = stage's)", min_width=80,
                                  elem_id="mvd-flops-width")
                height = gr.Number(value=0, precision=0, label="height", min_width=80, elem_id="mvd-flops-height")
                frames = gr.Number(value=0, precision=0, label="frames", min_width=80)
            kept = gr.Textbox(value="", label="kept temporal blocks (pruned stages; empty = the stage's choice; "
                              f"indices 0..{temporal_block_count('full') - 1} at full scale, "
                              f"0..{temporal_block_count('tiny') - 1} at tiny)", placeholder="e.g. 0,1,4,5,...")
            chart = gr.Radio(["treemap", "sunburst"], value="treemap", label="chart")
            other = gr.Dropdown(slugs, value="temporal-pruning", label="diff against", allow_custom_value=True)
            btn = gr.Button("Count FLOPs", variant="primary", elem_id="mvd-flops-go")
            csv_file = gr.File(label="per-layer CSV", interactive=False)
        with gr.Column(scale=5):
            summary = gr.Markdown(label="summary", elem_id="mvd-flops-summary")
            tree = gr.Plot(label="per-layer FLOPs", elem_id="mvd-flops-tree")
    with gr.Row():
        with gr.Column():
            path_plot = gr.Plot(label="path by layer type", elem_id="mvd-flops-path")
        with gr.Column():
            diff_plot = gr.Plot(label="diff", elem_id="mvd-flops-diff")
    with gr.Accordion("Largest layers", open=False):
        top = gr.Dataframe(headers=["layer", "type", "block", "GFLOPs", "% of NFE", "M params"], interactive=False,
                           label="largest layers")

    def on_count(
        stage: str, scale: str, width: Any, height: Any, frames: Any, kept_blocks: Any, chart: str, diff_against: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        """Per-layer FLOPs of a stage (0 = the stage's own width/height/frames; kept_blocks = comma-separated
        temporal block indices for pruned stages, empty = the stage's choice): summary, hierarchy plot, diff plot
        against another stage, CSV path, largest layers."""
        progress(0.1, desc=f"counting {stage}")
        res = count(ctx, stage, scale, width, height, frames, kept_blocks)
        progress(0.6, desc=f"counting {diff_against}")
        same = registry.get_stage(diff_against).size(scale) == registry.get_stage(stage).size(scale)
        # typed kept blocks apply to both sides of the diff when both are pruned stages (not to one side only)
        other_kept = kept_blocks if registry.resolve(str(diff_against)) in PRUNED else None  # typed text
        other_res = count(ctx, diff_against, scale, width if same else 0, height if same else 0, frames, other_kept)
        return (summary_md(res), plots.hierarchy(res, chart), plots.diff(other_res, res), write_csv(ctx, res),
                top_layers(res))

    outputs = [summary, tree, diff_plot, csv_file, top]
    inputs = [stage, scale, width, height, frames, kept, chart, other]
    btn.click(on_count, inputs, outputs, api_name="flops", concurrency_id="flops", concurrency_limit=2)
    # every control updates the view (counts are cached: a chart switch or a second look costs nothing)
    for control in (stage, scale, chart, other):
        control.change(on_count, inputs, outputs, concurrency_id="flops", show_progress="minimal")
    for box in (width, height, frames, kept):
        box.submit(on_count, inputs, outputs, concurrency_id="flops", show_progress="minimal")

    def on_path(scale: str, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
        """FLOPs by layer type for every stage of the path at the given scale (each at its own size)."""
        return path_chart(ctx, scale, progress)

    scale.change(on_path, [scale], [path_plot], api_name="flops_path", concurrency_id="flops")
    return {"count": (on_count, inputs, outputs), "path": (on_path, [scale], [path_plot])}
