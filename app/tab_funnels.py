"""Funnels tab: widths before/after channel funnels, fun-factor -> FLOPs, CSI vs He ablation records."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from explorer import stages as registry
from explorer.records import read_ablations
from explorer.transforms.funnels import attention_widths

PAPER_R = (0.25, 0.5, 0.75, 1.0)


def widths_summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Per attention kind: how many layers, head dim before -> after, q/k and v/o widths."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["kind"]].append(r)
    out = []
    for kind in ("spatial", "temporal", "cross"):
        rs = groups.get(kind, [])
        if not rs:
            continue
        hb = sorted({r["head_dim_before"] for r in rs})
        ha = sorted({r["head_dim_after"] for r in rs if r["head_dim_after"] is not None})
        qk = "absent (optimized cross-attention drops q/k)" if all(r["qk_before"] is None for r in rs) else \
            f"{sorted({r['qk_before'] for r in rs})} -> {sorted({r['qk_after'] for r in rs})}"
        out.append([kind, len(rs), f"{hb} -> {ha}", qk,
                    f"{sorted({r['vo_before'] for r in rs})} -> {sorted({r['vo_after'] for r in rs})}"])
    return out


def view(ctx: AppContext, r: float, scale: str) -> tuple[Any, ...]:
    """Everything the tab shows for fun-factor r at a scale."""
    try:
        r = round(float(r), 4)
    except (TypeError, ValueError):
        raise gr.Error("fun-factor must be a number in (0, 1]") from None
    if not 0 < r <= 1:
        raise gr.Error(f"fun-factor must be in (0, 1], got {r}")
    if scale not in ("full", "tiny"):
        raise gr.Error("scale must be 'full' or 'tiny'")
    current = ctx.flops.funnels(r, scale)
    base = ctx.flops.stage("temporal-pruning", scale)
    points = {r: current["tflops"]}
    for x in PAPER_R:
        points[x] = ctx.flops.funnels(x, scale)["tflops"]
    rows = attention_widths(r, scale)
    stage = registry.get_stage("channel-funnels")
    w, h = stage.size(scale)
    text = (f"**r = {r:g} → {current['tflops']:.4g} TFLOPs per NFE** ({scale}, {w}x{h}x{stage.frames}) vs "
            f"{base['tflops']:.4g} without funnels ({100 * (current['tflops'] / base['tflops'] - 1):+.1f}%). "
            "<span class='mvd-src m'>measured here</span> (merged funnels = plain narrower layers; the FLOP "
            f"counter on the meta device). Paper at r = 0.5: {stage.paper.tflops} TFLOPs "
            "<span class='mvd-src p'>paper</span>.")
    table = [[x["layer"], x["kind"], x["heads"], x["head_dim_before"], x["head_dim_after"], x["qk_before"],
              x["qk_after"], x["vo_before"], x["vo_after"]] for x in rows]
    return text, plots.funnel_curve(points, r, base["tflops"] if scale == "full" else None), widths_summary(rows), \
        table


def ablation_view(ctx: AppContext) -> tuple[Any, list[list[Any]], str]:
    project, problems = read_ablations(ctx.checkpoints)
    # funnel records: Tables 4/5, or an untabled record configured with an init or a fun-factor (Table 6's
    # pruning records also carry a 'method' and belong to the Ablations tab only)
    funnel_rows = [p for p in project if p["table"] in ("Table 4", "Table 5")
                   or (not p["table"] and {"init", "fun_factor"} & set(p["config"]))]
    init_rows = [p for p in funnel_rows if p["table"] == "Table 4" or (not p["table"] and "init" in p["config"])]
    paper5 = [[r.table, r.label, r.fvd_25fps, r.tflops, r.phone_ms, "paper"] for r in registry.ablation_rows("Table 5")]
    paper5 += [[p["table"], p["label"], p["fvd_proxy"], p["tflops"], None, p["source"]] for p in funnel_rows]
    note = "" if not problems else "Project records: " + "; ".join(problems)
    return plots.funnel_ablations(init_rows), paper5, note


def build(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(
        "A funnel pair narrows the width between two affine maps (attention's (W_q, W_k) and (W_v, W_o), per head) "
        "by the fun-factor r; after finetuning it is merged into plain narrower layers. Coupled singular "
        "initialisation (CSI) starts the pair at the best rank-r·d approximation of the original product.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            r = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="fun-factor r", elem_id="mvd-funnel-r")
            scale = gr.Radio(["full", "tiny"], value="full", label="scale")
            text = gr.Markdown(label="summary")
        with gr.Column(scale=3):
            curve = gr.Plot(label="FLOPs vs r", elem_id="mvd-funnel-curve")
    # full width, so that the width lists ("[320, 640, 1280] -> [160, 320, 640]") and the sources are not cut off
    summary = gr.Dataframe(headers=["attention", "layers", "head dim", "q/k width", "v/o width"],
                           interactive=False, wrap=True, label="widths before -> after, per kind",
                           column_widths=["14%", "8%", "18%", "30%", "30%"])
    with gr.Accordion("Per-layer widths", open=False):
        table = gr.Dataframe(headers=["layer", "kind", "heads", "head dim before", "head dim after", "q/k before",
                                      "q/k after", "v/o before", "v/o after"], interactive=False,
                             label="per-layer widths")
    gr.Markdown("#### Ablations: initialisation and width reduction")
    abl = gr.Plot(label="CSI vs He", elem_id="mvd-funnel-ablation")
    t5 = gr.Dataframe(headers=["table", "label", "FVD / FVD-proxy", "TFLOPs", "phone ms", "source"],
                      interactive=False, wrap=True, max_height=900, label="Table 5 (paper) and project records",
                      column_widths=["8%", "24%", "12%", "8%", "8%", "40%"])
    abl_note = gr.Markdown()

    def on_r(fun_factor: float, scale: str) -> tuple[Any, ...]:
        """FLOPs and widths of the channel-funnels architecture at fun-factor r."""
        return view(ctx, fun_factor, scale)

    outs = [text, curve, summary, table]
    r.release(on_r, [r, scale], outs, api_name="funnels", concurrency_id="flops", concurrency_limit=2)
    r.change(on_r, [r, scale], outs, api_visibility="private", concurrency_id="flops", trigger_mode="always_last")
    scale.change(on_r, [r, scale], outs, api_visibility="private", concurrency_id="flops")

    def on_abl() -> tuple[Any, ...]:
        return ablation_view(ctx)

    return {"load": [(on_r, [r, scale], outs), (on_abl, [], [abl, t5, abl_note])]}
