"""The Compare tab's HTML pieces: the progress board, each stage's card, the side-by-side numbers table."""

from __future__ import annotations

import html
from typing import Any

from app.plots import fmt
from explorer.serving import NOT_FINETUNED, StageOutcome

STATS_ROWS: tuple[tuple[str, str], ...] = (
    ("nfe", "NFE (UNet evaluations per clip)"),
    ("steps", "denoising steps"),
    ("guidance", "guidance (first -> last frame)"),
    ("size", "size"),
    ("tflops_nfe_gen", "TFLOPs per NFE, at the size run"),
    ("tflops_nfe_full", "TFLOPs per NFE, full scale (paper size)"),
    ("tflops_nfe_paper", "TFLOPs per NFE, paper"),
    ("tflops_clip_gen", "TFLOPs per clip, at the size run"),
    ("tflops_clip_full", "TFLOPs per clip, full scale"),
    ("wall_s", "wall time (s)"),
    ("unet_s", "UNet time (s)"),
    ("wall_over_unet", "wall time / UNet time"),
    ("time_split", "time split (s)"),
    ("peak_memory", "peak memory added (MB)"),
    ("fvd_proxy", "FVD-proxy (evaluate.py)"),
    ("first_frame_psnr", "first-frame PSNR (dB)"),
    ("consecutive_psnr", "consecutive-frame PSNR (dB; flicker)"),
    ("motion_spearman", "motion Spearman"),
    ("seed", "seed"),
)


def progress_board(order: list[str], board: dict[str, dict[str, Any]], header: str) -> str:
    rows = []
    for key in order:
        b = board.get(key, {})
        total = max(1, int(b.get("total") or 1))
        done = min(total, int(b.get("done") or 0))
        state = b.get("state", "queued")
        pct = 100 if state in ("done", "cached") else int(100 * done / total)
        cls = {"done": "ok", "cached": "ok", "unavailable": "bad", "failed": "bad"}.get(state, "run")
        text = html.escape(str(b.get("text", state)))
        rows.append(
            f'<div class="mvd-prog-row"><span class="mvd-prog-name">{html.escape(key)}</span>'
            f'<div class="mvd-prog-bar"><div class="mvd-prog-fill {cls}" style="width:{pct}%"></div></div>'
            f'<span class="mvd-prog-state {cls}">{text}</span></div>'
        )
    return f'<div class="mvd-board"><div class="mvd-board-head">{html.escape(header)}</div>{"".join(rows)}</div>'


def source_badge(source: str) -> str:
    s = str(source)
    if s.startswith("measured"):
        cls, short = "m", "measured"
    elif s.startswith("paper"):
        cls, short = "p", "paper"
    elif s.startswith("estimate"):
        cls, short = "e", "estimate"
    else:
        cls, short = "s", "setting"
    return f'<span class="mvd-src {cls}" title="{html.escape(s)}">{short}</span>'


def card_head(o: StageOutcome) -> str:
    """Title of one stage's card and, where it applies, the warning that its weights are not trained."""
    tag = ""
    if o.kind == "placeholder":
        tag = '<div class="mvd-warn">untrained (random weights) — development placeholder</div>'
    elif NOT_FINETUNED in (o.note or ""):
        tag = '<div class="mvd-warn">not finetuned (zero-shot)</div>'
    elif o.note:
        tag = f'<div class="mvd-note">{html.escape(o.note)}</div>'
    model = (o.stats or {}).get("model")
    if model and model.get("value"):  # say beside the result that it is a tiny model, and how it was trained
        tag += f'<div class="mvd-note">{html.escape(str(model["value"]))}</div>'
    cached = ' <span class="mvd-cached">cached</span>' if o.status == "cached" else ""
    return f'<div class="mvd-card"><div class="mvd-card-title">{html.escape(o.label)}{cached}</div>{tag}</div>'


def card_stats(o: StageOutcome) -> str:
    """The numbers under one stage's video, each with its source badge (hover for the full source)."""
    if o.status in ("unavailable", "failed"):
        return f'<div class="mvd-card mvd-err">{o.status}: {html.escape(o.reason)}</div>'
    s = o.stats

    def row(name: str, key: str, digits: int = 4, unit: str = "") -> str:
        item = s.get(key)
        if not item:
            return ""
        return (f'<tr><td>{name}</td><td class="v">{fmt(item.get("value"), digits)}{unit}</td>'
                f'<td>{source_badge(item.get("source", ""))}</td></tr>')

    rows = "".join([
        row("NFE", "nfe"), row("steps", "steps"), row("size", "size"),
        row("TFLOPs/NFE (run size)", "tflops_nfe_gen"), row("TFLOPs/NFE (full scale)", "tflops_nfe_full"),
        row("TFLOPs/NFE (paper)", "tflops_nfe_paper"), row("TFLOPs/clip (run size)", "tflops_clip_gen"),
        row("TFLOPs/clip (full scale)", "tflops_clip_full"), row("wall time", "wall_s", 3, " s"),
        row("UNet time", "unet_s", 3, " s"), row("wall / UNet", "wall_over_unet", 3, "x"),
        row("time split (s)", "time_split"), row("peak memory added", "peak_memory", 4, " MB"),
        row("FVD-proxy", "fvd_proxy"), row("seed", "seed", 20),
    ])
    return f'<div class="mvd-card"><table class="mvd-stats">{rows}</table></div>'


def card_html(o: StageOutcome) -> str:
    return card_head(o) + card_stats(o)


def stats_table(outcomes: list[StageOutcome]) -> tuple[list[str], list[list[Any]]]:
    """Wide table: one row per quantity, one column per stage, then unit and source."""
    headers = ["quantity"] + [o.key for o in outcomes] + ["source", "unit"]
    rows = []
    for key, name in STATS_ROWS:
        items = [o.stats.get(key) for o in outcomes]
        if not any(items):
            continue
        first = next(i for i in items if i)
        sources = sorted({str(i.get("source")) for i in items if i})
        rows.append([name] + [fmt(i.get("value")) if i else "—" for i in items]
                    + ["; ".join(sources), first.get("unit", "")])
    rows.append(["status"] + [o.status + (f": {o.reason}" if o.reason else "") for o in outcomes] + ["", ""])
    return headers, rows
