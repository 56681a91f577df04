"""Ablations tab: the paper's Tables 3-6 beside the project's equal-budget tiny-scale runs
(``checkpoints/ablations/*.json``, written by scripts/run_ablations.py)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from explorer.records import ABLATION_TABLES, ablation_comparison, distinguishable, read_ablations

HEADERS = ["row", "paper FVD (25 fps)", "paper TFLOPs/NFE", "paper phone ms", "FVD-proxy", "FVD-proxy 95% interval",
           "first-frame PSNR", "PSNR vs first row (same clips)", "motion Spearman", "TFLOPs/NFE (full scale)", "source"]
NO_SPREAD = "not recorded"


def _interval(ci: Any) -> str:
    return f"{ci[0]:.2f} - {ci[1]:.2f}" if ci else NO_SPREAD


def _paired(d: Any) -> str | None:
    return None if not d else f"{d['mean']:+.2f} ({d['ci'][0]:+.2f} to {d['ci'][1]:+.2f})"


def paired_note(rows: list[dict[str, Any]]) -> str:
    """Rows whose first-frame PSNR differs from the table's first row on the same clips beyond the paired 95%
    interval (what the clips share cancels, so this separates rows the per-row intervals cannot)."""
    paired = [r for r in rows if r.get("psnr_vs_first")]
    if not paired:
        return ""
    first = paired[0]["psnr_vs_first"]["vs"]
    up = [r["label"] for r in paired if r["psnr_vs_first"]["ci"][0] > 0]
    down = [r["label"] for r in paired if r["psnr_vs_first"]["ci"][1] < 0]
    same = [r["label"] for r in paired if r["label"] not in up + down]
    parts = [f"First-frame PSNR on the same clips as *{first}* (paired 95% interval):"]
    for what, labels in (("higher", up), ("lower", down), ("no difference", same)):
        if labels:
            parts.append(f"{what}: {', '.join(labels)};")
    return " ".join(parts).rstrip(";") + "."


def spread_note(rows: list[dict[str, Any]]) -> str:
    """Which project rows differ from the best by more than the spread (95% bootstrap intervals over clips)."""
    d = distinguishable(rows)
    if d["best"] is None:
        return ""
    parts = [f"Lowest FVD-proxy: *{d['best']}*."]
    if d["beyond"]:
        parts.append("Worse beyond the spread (intervals do not overlap): " + ", ".join(d["beyond"]) + ".")
    if d["within"]:
        parts.append("Within the spread of it (not a real difference at this many clips): "
                     + ", ".join(d["within"]) + ".")
    if d["no_spread"]:
        parts.append("Recorded without a spread (before bootstrap intervals; re-run with "
                     "`python scripts/run_ablations.py --force`): " + ", ".join(d["no_spread"]) + ".")
    return " ".join(parts)


def _fmt(value: Any, digits: int = 2) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def view(ctx: AppContext, table: str) -> tuple[Any, list[list[Any]], str]:
    """Plot, joined table and a note for one paper table."""
    if table not in ABLATION_TABLES:
        table = next(iter(ABLATION_TABLES))
    project, problems = read_ablations(ctx.checkpoints)
    rows = ablation_comparison(table, project)
    grid = [[r["label"], r.get("paper_fvd"), r.get("paper_tflops"), r.get("paper_phone_ms"),
             _fmt(r.get("fvd_proxy")), _interval(r.get("fvd_proxy_ci")) if r.get("fvd_proxy") is not None else None,
             _fmt(r.get("first_frame_psnr")), _paired(r.get("psnr_vs_first")), _fmt(r.get("motion_spearman")),
             _fmt(r.get("tflops"), 3), r.get("source") or r.get("paper_source")] for r in rows]
    note = f"**{table}**: {ABLATION_TABLES[table]}."
    if spread := spread_note([r for r in rows if r.get("fvd_proxy") is not None]):
        note += " " + spread
    if paired := paired_note(rows):
        note += " " + paired
    if problems:
        note += " Project records: " + "; ".join(problems)
    return plots.ablation_bars(table, rows), grid, note


def build(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(
        "Each project row is a short run from the trained `adversarial-1step` tiny model with the same budget "
        "(steps, batch, data, seeds, and the shipped objective: adversarial + distillation onto the teacher's stored "
        "samples), scored at 1 NFE on the same test clips — see docs/ablations.md for the "
        "budget and which of the paper's findings the tiny scale reproduces. Paper FVD (UCF-101) and the "
        "project's FVD-proxy are different metrics: compare the ordering of rows, not values. TFLOPs: per NFE, "
        "2 x MAC, batch 1, UNet only, for the same architecture change on full SVD at 512x256x14.")
    choice = gr.Radio(list(ABLATION_TABLES), value="Table 3", label="table")
    note = gr.Markdown()
    plot = gr.Plot(label="ablation", elem_id="mvd-ablation-plot")
    # headers never one letter a line, and the source column wide enough not to make every row ten lines tall
    # (per column: the paired difference and the interval carry two numbers; "Spearman" must fit on one line)
    widths = ["15%", "6%", "6%", "6%", "6%", "8%", "6%", "10%", "7%", "7%", "23%"]
    grid = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, label="rows and their sources",
                        max_height=1600, column_widths=widths)

    def on_table(table: str) -> tuple[Any, list[list[Any]], str]:
        """One paper table (Table 3..6 or One-step): plot, rows and note."""
        return view(ctx, table)

    choice.change(on_table, choice, [plot, grid, note], api_name="ablations", queue=False)
    return {"load": [(on_table, [choice], [plot, grid, note])]}
