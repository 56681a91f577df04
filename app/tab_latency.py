"""Latency tab: the QNN runner's and the benchmark script's records in Qualcomm AI Hub's conventions, beside the
paper's reference rows."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from explorer.records import paper_latency_rows, read_latency

HEADERS = ["stage", "device", "chipset", "runtime", "precision", "compute unit", "status", "median ms", "min ms",
           "max ms", "runs", "first load ms", "speed-up", "peak memory", "scale", "resolution", "includes", "source",
           "file"]

HOW_TO = """
**How to add records.** `python scripts/benchmark.py --help` (PyTorch on this machine's CPU or a GPU) and
`python scripts/qnn_runner.py --help` (a Qualcomm NPU through QNN / Qualcomm AI Hub) write one JSON record per
stage x component x device x runtime x precision into `checkpoints/latency/`. Each record holds `stage`, `scale`,
`device`, `chipset`, `runtime`, `precision`, `compute_unit`, `median_ms` / `min_ms` / `max_ms` (per NFE, warm runs;
first load reported separately by the tools), `peak_memory` (a range), `status` (`passed` / `oom` / `failed`) and
`source` (`paper`, `measured here: ...` or `estimate`). Press *Reload* after a run. All latencies here are
**per NFE, batch 1, UNet only** unless the row's *includes* column says otherwise.
"""


def rows_view(ctx: AppContext) -> tuple[list[list[Any]], Any, str]:
    """Measured records, plus the paper's rows unless a paper record file already holds them."""
    measured, problems = read_latency(ctx.checkpoints)
    has_paper = any(str(r.get("source", "")).startswith("paper") for r in measured)
    paper = [] if has_paper else paper_latency_rows()
    allrows = measured + paper

    def ms(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    def speed(r: dict[str, Any]) -> str:
        v = r.get("speedup_vs_baseline")
        return "—" if v is None else f"{v:.2f}x vs {r.get('baseline_stage') or '?'}"

    table = [[r.get("stage"), r.get("device"), r.get("chipset") or "—", r.get("runtime"), r.get("precision"),
              r.get("compute_unit"), str(r.get("status", "")).upper(), ms(r.get("median_ms")), ms(r.get("min_ms")),
              ms(r.get("max_ms")), "—" if r.get("runs") is None else int(r["runs"]), ms(r.get("first_load_ms")),
              speed(r), r.get("peak_memory") or "—", r.get("scale"), r.get("resolution") or "—", r.get("includes"),
              r.get("source"), r.get("file")] for r in allrows]
    n_paper = sum(1 for r in allrows if str(r.get("source", "")).startswith("paper"))
    note = (f"{len(allrows) - n_paper} measured record(s) and {n_paper} paper reference rows "
            f"({'from checkpoints/latency/paper.json' if has_paper else 'built in'}).")
    if problems:
        note += " Not shown: " + "; ".join(problems)
    return table, plots.latency(allrows), note


def build(ctx: AppContext) -> dict[str, Any]:
    note = gr.Markdown(label="note")
    plot = gr.Plot(label="latency per NFE", elem_id="mvd-latency-plot")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, label="records (measured) and paper rows",
                         max_height=2400)  # every row on the page, not in an inner scroll
    reload_btn = gr.Button("Reload records", size="sm")
    gr.Markdown(HOW_TO)

    def on_reload() -> tuple[Any, ...]:
        """Latency records (checkpoints/latency/*.json) and the paper's reference rows."""
        t, p, n = rows_view(ctx)
        return t, p, n

    reload_btn.click(on_reload, [], [table, plot, note], api_name="latency", queue=False)
    return {"load": [(on_reload, [], [table, plot, note])]}
