"""Trade-off tab: quality vs cost, the paper's points and the project's measured tiny points, never mixed."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from explorer import stages as registry
from explorer.records import MEASURED, PAPER, read_metrics
from explorer.serving import entry_flops


def project_points(ctx: AppContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], str]:
    """(points, baselines, problems, scale) from metrics.json files x the FLOP counter."""
    points, baselines, problems = [], [], []
    scale = "tiny"
    seen_baselines = set()
    for e in ctx.catalog.entries.values():
        if e.kind != "trained" or not e.folder or e.record is None:
            continue
        m = read_metrics(e.folder)
        if m is None:
            continue
        if not m.get("ok"):
            problems.append(m.get("reason", f"{e.key}: unreadable metrics.json"))
            continue
        rec = e.record
        scale = e.scale
        tf = entry_flops(ctx.flops, ctx.catalog, e, rec.width, rec.height, rec.frames).get("gen")
        nfe = m.get("nfe") or rec.steps * (2 if rec.max_guidance > 1 else 1)
        points.append({"stage": e.key, "fvd_proxy": m["fvd_proxy"], "nfe": nfe, "tflops_nfe": tf,
                       "x": nfe * tf if tf is not None else None, "clips": m.get("clips"),
                       "psnr": m.get("first_frame_psnr"), "spearman": m.get("motion_spearman")})
        for b in m.get("baselines", []):
            k = (b["stage"], b.get("resolution"))
            if k not in seen_baselines:
                seen_baselines.add(k)
                baselines.append(b)
    return points, baselines, problems, scale


def table(points: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for s in registry.STAGES:
        p = s.paper
        rows.append([s.slug, "paper (Table 2)", p.fvd_25fps, p.fvd_7fps, None, s.steps, p.tflops,
                     round(s.steps * p.tflops, 2) if p.tflops else None, p.gpu_ms, str(p.phone_ms), PAPER])
    for r in registry.PEERS:
        if r.label in ("SVD", "MobileVD", "MobileVD-HD"):
            continue
        rows.append([r.label, "paper (Table 1, peer)", None, r.fvd_7fps, None, r.nfe, r.tflops,
                     round(r.nfe * r.tflops, 2) if r.nfe and r.tflops else None, r.gpu_ms, None, PAPER])
    for p in points:
        rows.append([p["stage"], "project (tiny)", None, None, round(p["fvd_proxy"], 4), p["nfe"],
                     p["tflops_nfe"], p["x"], None, None, f"{MEASURED} (evaluate.py + explorer.flops)"])
    return rows


def build(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(
        "Left: **the paper's numbers only** (FVD on UCF-101). Right: **the project's measured tiny models** "
        "(FVD-proxy, the project's own metric — not comparable to FVD). The two are never drawn on one axis. "
        "Paper per-clip cost = NFE x per-NFE without counting CFG (the convention behind the paper's 523x); "
        "project per-clip cost counts a CFG batch of 2 as 2 NFE.")
    with gr.Row():
        x_axis = gr.Radio(list(plots.X_AXES), value="TFLOPs per NFE", label="paper x-axis")
        fvd = gr.Radio(["7 fps", "25 fps"], value="7 fps", label="paper FVD column")
    with gr.Row(equal_height=False):
        with gr.Column():
            paper_plot = gr.Plot(label="paper", elem_id="mvd-trade-paper")
        with gr.Column():
            proj_plot = gr.Plot(label="project", elem_id="mvd-trade-project")
    problems = gr.Markdown(label="problems")
    rows = gr.Dataframe(headers=["point", "from", "FVD 25 fps", "FVD 7 fps", "FVD-proxy", "NFE", "TFLOPs/NFE",
                                 "TFLOPs/clip", "GPU ms", "phone ms", "source"], interactive=False,
                        label="every point and its source", wrap=True)

    def on_paper(x_axis: str, fvd_column: str) -> Any:
        """The paper's quality-vs-cost plot for the chosen axes."""
        return plots.tradeoff_paper(x_axis, fvd_column)

    def on_project() -> tuple[Any, ...]:
        """The project's measured points (metrics.json x FLOP counter) and the full table."""
        pts, base, probs, scale = project_points(ctx)
        note = "" if not probs else "Unreadable metrics: " + "; ".join(probs)
        return plots.tradeoff_project(pts, base, scale), table(pts), note

    x_axis.change(on_paper, [x_axis, fvd], paper_plot, api_name="tradeoff", queue=False)
    fvd.change(on_paper, [x_axis, fvd], paper_plot, api_visibility="private", queue=False)
    return {"load": [(on_paper, [x_axis, fvd], [paper_plot]), (on_project, [], [proj_plot, rows, problems])]}
