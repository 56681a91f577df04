"""The Gradio interface: seven tabs (Compare, FLOPs, Temporal gates, Funnels, Trade-off, Ablations, Latency).

No model logic lives here: every number comes from explorer/ (through explorer.serving and explorer.records).
Startup only discovers stages (JSON files); models load in a background thread and FLOPs are counted in another,
so the page is up in seconds and a stage that is missing or broken is shown as unavailable with the reason.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import gradio as gr

from app import tab_ablations, tab_compare, tab_flops, tab_funnels, tab_gates, tab_latency, tab_tradeoff
from app.context import AppContext
from explorer.records import ACCOUNTING
from explorer.serving import MAX_QUEUE, PLACEHOLDER_NOTE

CSS = """
.gradio-container {max-width: 1500px !important;}
.mvd-acc, .mvd-banner {font-size: 0.92em;}
.mvd-banner {background: #fff4e5; border: 1px solid #f0b429; border-radius: 8px; padding: 8px 12px; margin: 4px 0;}
.mvd-banner.base {background: #eef6ff; border-color: #7aa7e0;}
.mvd-src {display: inline-block; font-size: 0.72em; padding: 0 5px; border-radius: 8px; color: white;
          line-height: 1.5em; vertical-align: middle; cursor: help; white-space: nowrap;}
.mvd-src.m {background: #d9534f;} .mvd-src.p {background: #4C78A8;} .mvd-src.e {background: #8c8c8c;}
.mvd-src.s {background: #c9c9c9; color: #333;}
.mvd-board {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;}
.mvd-board-head {font-weight: 600; margin-bottom: 4px; font-size: 0.9em;}
.mvd-prog-row {display: flex; align-items: center; gap: 8px; margin: 3px 0; font-size: 0.85em;}
.mvd-prog-name {width: 150px; font-family: monospace; overflow: hidden; text-overflow: ellipsis;}
.mvd-prog-bar {flex: 1; height: 9px; background: #eee; border-radius: 5px; overflow: hidden;}
.mvd-prog-fill {height: 100%; background: #4C78A8; transition: width .25s;}
.mvd-prog-fill.ok {background: #54A24B;} .mvd-prog-fill.bad {background: #d9534f;}
.mvd-prog-state {width: 230px; font-size: 0.9em; color: #555; overflow: hidden; text-overflow: ellipsis;
                 white-space: nowrap;}
.mvd-prog-state.bad {color: #b52b27;}
.mvd-card {font-size: 0.82em;}
.mvd-card-title {font-weight: 700; font-family: monospace; font-size: 1.05em; margin-bottom: 2px;}
.mvd-warn {background: #fff4e5; color: #8a5300; border-radius: 6px; padding: 1px 6px; margin: 2px 0;
           font-size: 0.92em;}
.mvd-note {color: #555; font-size: 0.92em;}
.mvd-err {color: #b52b27; margin-top: 4px;}
.mvd-cached {background: #54A24B; color: white; border-radius: 6px; padding: 0 5px; font-size: 0.8em;}
table.mvd-stats {width: 100%; border-collapse: collapse; margin-top: 2px;}
.mvd-card table.mvd-stats, .mvd-card table.mvd-stats tr, .mvd-card table.mvd-stats td {
  border-width: 0 0 1px 0 !important; border-style: solid !important; border-color: #eee !important;}
table.mvd-stats td {padding: 1px 4px !important;}
table.mvd-stats td.v {font-family: monospace; text-align: right;}
.mvd-cardrow {display: flex; gap: 12px; flex-wrap: wrap;} .mvd-cardrow .mvd-card {flex: 1; min-width: 240px;}
#mvd-cards {flex-wrap: wrap; gap: 10px;}
/* the stats table's long cells (time split) wrap, so every stage's column stays in view */
#mvd-stats td, #mvd-stats td span {white-space: normal !important; overflow-wrap: anywhere; max-width: 380px;}
.mvd-card-col {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px !important;
               max-width: 340px;}
"""

HEAD = """
<div style="display:flex;align-items:baseline;gap:14px;flex-wrap:wrap">
<h1 style="margin:0">MobileVD Explorer</h1>
<span>Mobile Video Diffusion (Ben Yahia et al., Qualcomm AI Research, arXiv 2412.07583) — the compression path of
Stable Video Diffusion's UNet, stage by stage: what each model generates, what it costs and why.</span>
</div>
"""


def status_rows(ctx: AppContext) -> list[list[Any]]:
    rows = []
    for s in ctx.catalog.status_rows():
        state = s["status"]
        if state == "ready" and s["load_seconds"] is not None:
            state = f"ready ({s['load_seconds']:.1f} s)"
        if state == "pending" and s["scale"] == "full":
            state = "loads on first use"
        rows.append([s["key"], s["kind"], s["scale"], s["size"] or "—", s["steps"] or "—", state,
                     s["reason"] or s["note"] or (s["folder"] or "")])
    return rows


def banner(ctx: AppContext) -> str:
    cat = ctx.catalog
    parts = []
    placeholders = [e.key for e in cat.entries.values() if e.kind == "placeholder"]
    trained = [e.key for e in cat.entries.values() if e.kind == "trained" and e.folder]
    if placeholders:
        where = html.escape(str(cat.checkpoints))
        which = (f"No trained stage folders were found in <code>{where}</code>, so every stage is"
                 if not trained else
                 f"Trained here: {', '.join(trained)}. Every other stage ({', '.join(placeholders)}) has no folder "
                 f"in <code>{where}</code> yet and is")
        parts.append(
            f'<div class="mvd-banner"><b>{PLACEHOLDER_NOTE}.</b> {which} a <b>randomly initialised</b> '
            f"{cat.placeholder_scale} model built by the project's transforms: the architecture, step counts and "
            "FLOPs are real, the pictures are noise. Trained folders take precedence as soon as they exist.</div>")
    unavailable = [e for e in cat.entries.values() if e.status == "unavailable"]
    if unavailable and not placeholders:
        parts.append(f'<div class="mvd-banner">{len(unavailable)} stage(s) unavailable — see "Stages" below '
                     "for the reasons; everything else works.</div>")
    if cat.base:
        parts.append(f'<div class="mvd-banner base"><b>--base</b> <code>{html.escape(str(cat.base))}</code>: '
                     "the base/* stages run the pretrained pipeline; <i>svd-512, prune-zs and funnels-zs are not "
                     "finetuned</i> (zero-shot).</div>")
    return "".join(parts)


def build_app(
    checkpoints: str | None = None,
    base: str | None = None,
    placeholders: str = "auto",
    placeholder_scale: str = "tiny",
    preload: bool = True,
    warm_flops: bool = True,
    cache_dir: str | None = None,
    ctx: AppContext | None = None,
    queue_size: int = MAX_QUEUE,
) -> gr.Blocks:
    """Build the UI. ``placeholders``: 'auto' (random stages only when no stage folder exists), 'all', 'off'.
    ``queue_size``: requests that may wait in the queue (beyond it they are refused with "queue is full")."""
    ctx = ctx or AppContext.create(checkpoints, base, placeholders, placeholder_scale, cache_dir)
    if ctx.upload_roots is None:  # a request may only name files gradio received (uploads) or the app wrote
        from gradio.utils import get_upload_folder

        ctx.upload_roots = [Path(get_upload_folder()), ctx.out_dir]
    # gradio's own copies of uploads and outputs: deleted hourly once older than an hour
    with gr.Blocks(title="MobileVD Explorer", fill_width=False, delete_cache=(3600, 3600)) as demo:
        gr.HTML(HEAD)
        banner_html = gr.HTML(banner(ctx))
        gr.Markdown(f"**Cost accounting (everywhere):** {ACCOUNTING}. Each number carries its source: "
                    "<span class='mvd-src m'>measured</span> measured here · <span class='mvd-src p'>paper</span> "
                    "from the paper · <span class='mvd-src e'>estimate</span> derived by a stated rule.",
                    elem_classes=["mvd-acc"])
        with gr.Accordion("Stages: what is loaded, from where, and why not", open=False):
            status = gr.Dataframe(value=status_rows(ctx), headers=["stage", "kind", "scale", "size", "steps",
                                                                   "status", "reason / note / folder"],
                                  interactive=False, wrap=True, elem_id="mvd-status")
            status_json = gr.JSON(visible=False, label="stages")
        timer = gr.Timer(2.0, active=True)
        with gr.Tabs():
            with gr.Tab("Compare", id="compare") as t_compare:
                compare = tab_compare.build(ctx)
            with gr.Tab("FLOPs", id="flops") as t_flops:
                flops = tab_flops.build(ctx)
            with gr.Tab("Temporal gates", id="gates") as t_gates:
                gates = tab_gates.build(ctx, compare)
            with gr.Tab("Funnels", id="funnels") as t_funnels:
                funnels = tab_funnels.build(ctx)
            with gr.Tab("Trade-off", id="tradeoff") as t_trade:
                trade = tab_tradeoff.build(ctx)
            with gr.Tab("Ablations", id="ablations") as t_abl:
                abl = tab_ablations.build(ctx)
            with gr.Tab("Latency", id="latency") as t_lat:
                lat = tab_latency.build(ctx)

        def tick() -> tuple[Any, ...]:
            settled = ctx.catalog.all_settled()
            return status_rows(ctx), banner(ctx), gr.Timer(active=not settled)

        timer.tick(tick, None, [status, banner_html, timer], queue=False, api_visibility="private")

        def stage_status() -> list[dict[str, Any]]:
            """Every stage the app knows: kind, scale, status and the reason when unavailable."""
            return ctx.catalog.status_rows()

        t_compare.select(stage_status, None, status_json, api_name="stages", queue=False)
        fn, ins, outs = flops["count"]
        t_flops.select(fn, ins, outs, api_visibility="private", concurrency_id="flops").then(
            *flops["path"], api_visibility="private", concurrency_id="flops")
        for tab, handles in ((t_gates, gates), (t_funnels, funnels), (t_trade, trade), (t_abl, abl), (t_lat, lat)):
            for fn, ins, outs in handles["load"]:
                tab.select(fn, ins, outs, api_visibility="private", concurrency_id="flops")
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    demo.mvd_context = ctx  # type: ignore[attr-defined]
    ctx.start(preload=preload, warm=warm_flops, delay=float(os.environ.get("MOBILEVD_START_DELAY", "3")))
    return demo


def launch_kwargs(ctx_dir: Path | None = None) -> dict[str, Any]:
    """Arguments of ``Blocks.launch`` that gradio 6 takes there (theme, css) and the upload limit."""
    return {"theme": gr.themes.Soft(primary_hue="indigo"), "css": CSS, "max_file_size": "50mb",
            "allowed_paths": [str(ctx_dir)] if ctx_dir else None}


def server_defaults() -> tuple[str, int]:
    """Host/port defaults: localhost:7860, unless a Space (or the user) sets GRADIO_SERVER_NAME/PORT."""
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
