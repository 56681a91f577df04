"""Plotly figures for the app: presentation only (the numbers come from explorer.serving and explorer.records)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from explorer import stages as registry

TYPE_COLORS: dict[str, str] = {
    "spatial conv": "#4C78A8",
    "temporal conv": "#F58518",
    "spatial self-attention": "#54A24B",
    "temporal self-attention": "#E45756",
    "cross-attention": "#B279A2",
    "feed-forward": "#72B7B2",
    "funnel": "#EECA3B",
    "other": "#9D755D",
}
SOURCE_COLORS = {"paper": "#4C78A8", "measured here": "#E45756", "estimate": "#9D9D9D"}
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12)


def _layout(fig: go.Figure, title: str, height: int = 420, legend_y: float = -0.18, bottom: int = 95,
            **kw: Any) -> go.Figure:
    """Common look: title top-left, legend below the plot (never over the title or the data)."""
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        template="plotly_white", height=height, font=FONT, margin=dict(l=60, r=20, t=45, b=bottom),
        legend=dict(orientation="h", yanchor="top", y=legend_y, xanchor="left", x=0.0, font=dict(size=11)), **kw,
    )
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks for a log axis (1-2-3-5 per decade) covering [lo, hi]."""
    out = []
    for e in range(math.floor(math.log10(max(lo, 1e-9))) - 1, math.ceil(math.log10(max(hi, 1e-9))) + 1):
        for m in (1, 2, 3, 5):
            v = m * 10.0**e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


def _log_axis(values: Sequence[float], pad: float = 1.35) -> dict[str, Any]:
    vals = [v for v in values if v and v > 0]
    if not vals:
        return {"type": "log"}
    lo, hi = min(vals) / pad, max(vals) * pad
    ticks = _log_ticks(lo, hi)
    return {"type": "log", "range": [math.log10(lo), math.log10(hi)], "tickvals": ticks,
            "ticktext": [f"{t:g}" for t in ticks]}


def empty(title: str, message: str, height: int = 320) -> go.Figure:
    """A figure that says why there is nothing to draw (never a blank plot)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=13, color="#666"), align="center")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height)


def _gf(flops: float) -> str:
    return f"{flops / 1e9:,.3f} GFLOPs" if flops < 1e12 else f"{flops / 1e12:,.3f} TFLOPs"


# ----------------------------------------------------------------------------------------------------------
# FLOPs


def hierarchy(res: dict[str, Any], kind: str = "treemap") -> go.Figure:
    """Block -> layer type -> layer, sized by FLOPs (one NFE)."""
    ids, labels, parents, values, colors, hover = [], [], [], [], [], []
    size = f"{res['scale']}, {res['width']}x{res['height']}x{res['frames']}"
    # a sunburst's centre is small: the stage name alone there (its size goes to the title), the full label on a map
    root = res["stage"] if kind == "sunburst" else f"{res['stage']} ({size})"
    total = sum(max(0, int(layer["flops"])) for layer in res["layers"])
    ids.append("root")
    labels.append(root)
    parents.append("")
    values.append(total)
    colors.append("#ffffff")
    hover.append(f"{_gf(total)} per NFE")
    blocks: dict[str, int] = defaultdict(int)
    types: dict[tuple[str, str], int] = defaultdict(int)
    for layer in res["layers"]:
        f = max(0, int(layer["flops"]))
        blocks[layer["block"]] += f
        types[(layer["block"], layer["type"])] += f
    order = sorted(blocks, key=_block_order)
    for b in order:
        ids.append(b)
        labels.append(b)
        parents.append("root")
        values.append(blocks[b])
        colors.append("#dddddd")
        hover.append(f"{_gf(blocks[b])} ({100 * blocks[b] / max(total, 1):.1f}%)")
    for (b, t), f in types.items():
        ids.append(f"{b}|{t}")
        labels.append(t)
        parents.append(b)
        values.append(f)
        colors.append(TYPE_COLORS.get(t, "#999"))
        hover.append(f"{_gf(f)} ({100 * f / max(total, 1):.1f}%)")
    for layer in res["layers"]:
        f = max(0, int(layer["flops"]))
        if f == 0:
            continue
        ids.append(f"L|{layer['name']}")
        labels.append(layer["name"].split(".", 2)[-1] if layer["name"].count(".") > 1 else layer["name"])
        parents.append(f"{layer['block']}|{layer['type']}")
        values.append(f)
        colors.append(TYPE_COLORS.get(layer["type"], "#999"))
        hover.append(f"{layer['name']}<br>{_gf(f)} ({100 * f / max(total, 1):.2f}%)<br>"
                     f"{layer['params'] / 1e6:.2f} M params")
    trace_cls = go.Treemap if kind == "treemap" else go.Sunburst
    trace = trace_cls(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
                      marker=dict(colors=colors), customdata=hover, hovertemplate="%{customdata}<extra></extra>",
                      maxdepth=3 if kind == "treemap" else 3)
    if kind == "sunburst":
        trace.update(insidetextorientation="radial")
    fig = go.Figure(trace)
    title = f"Where the FLOPs go: {res['tflops']:.4g} TFLOPs per NFE — measured here (torch FLOP counter)"
    return _layout(fig, title + (f"<br><sub>{res['stage']} ({size})</sub>" if kind == "sunburst" else ""), height=520)


def _block_order(name: str) -> tuple[int, int]:
    if name.startswith("down_blocks"):
        return 1, int(name.split(".")[1])
    if name == "mid_block":
        return 2, 0
    if name.startswith("up_blocks"):
        return 3, int(name.split(".")[1])
    return 0, 0


def by_type_stacked(results: Sequence[dict[str, Any]], scale: str) -> go.Figure:
    """Stacked bars: TFLOPs per NFE by layer type for every stage of the path, paper totals as markers."""
    if not results:
        return empty("FLOPs by layer type across the path", "still counting (background warm-up) — reload the tab")
    stages = [r["stage"] for r in results]
    fig = go.Figure()
    types = [t for t in TYPE_COLORS if any(r["by_type"].get(t, 0) > 0 for r in results)]
    for t in types:
        fig.add_bar(name=t, x=stages, y=[r["by_type"].get(t, 0.0) for r in results], marker_color=TYPE_COLORS[t],
                    hovertemplate="%{x}<br>" + t + ": %{y:.4g} TFLOPs<extra>measured here</extra>")
    if scale == "full":
        paper = [registry.get_stage(s).paper.tflops for s in stages]
        fig.add_scatter(name="paper total (Table 2)", x=stages, y=paper, mode="markers",
                        marker=dict(symbol="line-ew-open", size=26, color="black", line=dict(width=3)),
                        hovertemplate="%{x}<br>paper: %{y} TFLOPs<extra>paper</extra>")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=f"TFLOPs per NFE ({scale})")
    return _layout(fig, f"FLOPs by layer type along the path ({scale} scale, each stage at its own size)",
                   height=480, legend_y=-0.32, bottom=140)


def diff(a: dict[str, Any], b: dict[str, Any]) -> go.Figure:
    """Per block x layer type: FLOPs of stage b minus stage a."""
    def table(res: dict[str, Any]) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = defaultdict(float)
        for layer in res["layers"]:
            out[(layer["block"], layer["type"])] += layer["flops"] / 1e12
        return out

    ta, tb = table(a), table(b)
    blocks = sorted({k[0] for k in ta} | {k[0] for k in tb}, key=_block_order)
    fig = go.Figure()
    for t in TYPE_COLORS:
        ys = [tb.get((blk, t), 0.0) - ta.get((blk, t), 0.0) for blk in blocks]
        if any(abs(y) > 0 for y in ys):
            fig.add_bar(name=t, x=blocks, y=ys, marker_color=TYPE_COLORS[t],
                        hovertemplate="%{x}<br>" + t + ": %{y:+.4g} TFLOPs<extra></extra>")
    fig.update_layout(barmode="relative")
    fig.update_yaxes(title="Δ TFLOPs per NFE", zeroline=True, zerolinecolor="#444")
    delta = b["tflops"] - a["tflops"]
    return _layout(fig, f"{b['stage']} − {a['stage']}: {delta:+.4g} TFLOPs per NFE "
                        f"({100 * delta / max(a['tflops'], 1e-12):+.1f}%) — measured here", height=480,
                   legend_y=-0.32, bottom=140)


# ----------------------------------------------------------------------------------------------------------
# Temporal gates


def _depth(level: Any, n_levels: int = 4) -> int:
    return n_levels if level == "mid" else int(level)


def gates_structure(layout: Sequence[dict[str, Any]], score: Sequence[float] | None, kept: Sequence[int],
                    score_name: str, source: str, costs: Sequence[float] | None = None) -> go.Figure:
    """The temporal blocks (38 in full SVD, 33 in the tiny UNet) on the UNet's U: x = forward order, y = level;
    shape = kind; colour = score."""
    kept_set = set(kept)
    fig = go.Figure()
    xs = [b["index"] for b in layout]
    ys = [-_depth(b["level"]) for b in layout]
    fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color="#cccccc", width=2), hoverinfo="skip",
                    showlegend=False)
    for kind, symbol, name in (("resnet", "square", "temporal conv (resnet)"),
                               ("transformer", "diamond", "temporal attention (transformer)")):
        for is_kept in (True, False):
            pts = [b for b in layout if b["kind"] == kind and (b["index"] in kept_set) == is_kept]
            if not pts:
                continue
            colors = [score[b["index"]] for b in pts] if score is not None else None
            hover = []
            for b in pts:
                lines = [f"<b>#{b['index']}</b> {b['path']}", f"{kind}, level {b['level']}, {b['side']} side",
                         f"{'KEPT' if is_kept else 'pruned'}"]
                if score is not None:
                    lines.append(f"{score_name}: {score[b['index']]:.3f} ({source})")
                if costs is not None:
                    lines.append(f"cost: {costs[b['index']] / 1e9:.1f} GFLOPs/NFE (full scale, measured here)")
                hover.append("<br>".join(lines))
            marker: dict[str, Any] = dict(symbol=symbol if is_kept else f"{symbol}-open", size=17 if is_kept else 13,
                                          line=dict(width=2, color="#222" if is_kept else "#999"))
            if colors is not None:
                marker.update(color=colors, colorscale="Viridis", cmin=0, cmax=max(1.0, max(score or [1])),
                              showscale=kind == "transformer" and is_kept,
                              colorbar=dict(title=dict(text=score_name, side="right"), thickness=12, len=0.8))
            else:
                marker.update(color="#E45756" if is_kept else "#bbbbbb")
            fig.add_scatter(x=[b["index"] for b in pts], y=[-_depth(b["level"]) for b in pts], mode="markers",
                            marker=marker, name=f"{name} — {'kept' if is_kept else 'pruned'}",
                            customdata=hover, hovertemplate="%{customdata}<extra></extra>")
    ticks = [0, -1, -2, -3, -4]
    fig.update_yaxes(tickvals=ticks, ticktext=["level 0 (full res)", "level 1", "level 2", "level 3", "mid"],
                     range=[-4.6, 0.6])
    fig.update_xaxes(title="temporal block index (forward order: down → mid → up)", range=[-1, len(layout)])
    for side, text in (("down", "encoder (down)"), ("mid", "mid"), ("up", "decoder (up)")):
        idx = [b["index"] for b in layout if b.get("side") == side]
        if idx:
            fig.add_annotation(x=(min(idx) + max(idx)) / 2, y=0.45, text=text, showarrow=False,
                               font=dict(color="#777"))
    return _layout(fig, f"Temporal blocks on the UNet: {len(kept_set)} of {len(layout)} kept — colour: "
                        f"{score_name} ({source})", height=500, legend_y=-0.2, bottom=120)


def gates_history(history: Sequence[dict[str, Any]], kept: Sequence[int], layout: Sequence[dict[str, Any]],
                  source: str) -> go.Figure:
    if not history:
        return empty("Gate probabilities over training",
                     "no history in the gates file yet — it appears once the pruning stage is trained", height=220)
    kept_set = set(kept)
    steps = [h["step"] for h in history]
    use_p = all(h.get("probabilities") is not None for h in history)
    key = "probabilities" if use_p else "importance"
    fig = go.Figure()
    for b in layout:
        i = b["index"]
        fig.add_scatter(x=steps, y=[h[key][i] for h in history], mode="lines",
                        line=dict(width=2.2 if i in kept_set else 1, color="#E45756" if i in kept_set else "#bbbbbb"),
                        name=f"#{i} {b['kind']} L{b['level']}", showlegend=False,
                        hovertemplate=f"#{i} {b['path']}<br>step %{{x}}<br>{key}: %{{y:.3f}}<extra>{source}</extra>")
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title="inclusion probability p_i" if use_p else "importance q_i")
    return _layout(fig, f"Gate {key} over training (red = finally kept) — {source}", height=380)


def prune_curve(floor: float, costs: Sequence[float], order: Sequence[int], n: int, order_name: str,
                paper: bool = True, rule: Sequence[float] | None = None) -> go.Figure:
    """TFLOPs (full scale) vs number of kept blocks for the given order, the min/max envelope and, with
    ``paper`` (the blocks are full SVD's), Table 6 at its pruned fractions. ``rule``: TFLOPs per n by the one rule
    of the cards (another UNet's blocks: the documented default for the same pruned fraction); the marker for
    ``n`` then sits on it, so the plot shows the number the text and the cards show."""
    total = len(costs)
    ns = list(range(0, total + 1))
    srt = sorted(costs)
    lo = [(floor + sum(srt[:k])) / 1e12 for k in ns]
    hi = [(floor + sum(srt[total - k:])) / 1e12 if k else floor / 1e12 for k in ns]
    mine = [(floor + sum(costs[i] for i in order[:k])) / 1e12 for k in ns]
    fig = go.Figure()
    fig.add_scatter(x=ns, y=hi, mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=ns, y=lo, mode="lines", line=dict(width=0), fill="tonexty", fillcolor="rgba(76,120,168,0.15)",
                    name="range over all choices of n blocks", hoverinfo="skip")
    fig.add_scatter(x=ns, y=mine, mode="lines", line=dict(color="#4C78A8", width=2), name=f"keep top-n ({order_name})",
                    hovertemplate="n=%{x}: %{y:.3f} TFLOPs/NFE<extra>measured here</extra>")
    if rule is not None:
        fig.add_scatter(x=ns, y=list(rule), mode="lines", line=dict(color="#E45756", width=2, dash="dash"),
                        name="the one rule (cards, FLOPs tab): default blocks, same pruned fraction",
                        hovertemplate="n=%{x}: %{y:.3f} TFLOPs/NFE<extra>measured here</extra>")
    marked = list(rule)[n] if rule is not None else mine[n]
    fig.add_scatter(x=[n], y=[marked], mode="markers", marker=dict(size=14, color="#E45756"), name=f"n = {n}",
                    hovertemplate="n=%{x}: %{y:.3f} TFLOPs/NFE<extra>measured here</extra>")
    rows = [r for r in registry.ablation_rows("Table 6") if r.config.get("method") == "gates"] if paper else []
    fig.add_scatter(x=[registry.kept_count(total, r.config["pruned_fraction"]) for r in rows],
                    y=[r.tflops for r in rows],
                    mode="markers", marker=dict(symbol="x", size=11, color="black"), name="paper (Table 6)",
                    customdata=[r.label for r in rows],
                    hovertemplate="%{customdata}: %{y} TFLOPs<extra>paper, Table 6</extra>")
    fig.update_xaxes(title="temporal blocks kept (n)")
    fig.update_yaxes(title="TFLOPs per NFE (full scale, 512x256x14)")
    return _layout(fig, "Cost of keeping n temporal blocks (full scale)", height=430, legend_y=-0.22, bottom=120)


# ----------------------------------------------------------------------------------------------------------
# Funnels


def funnel_curve(points: dict[float, float], r: float, base_tflops: float | None) -> go.Figure:
    rs = sorted(points)
    fig = go.Figure()
    fig.add_scatter(x=rs, y=[points[x] for x in rs], mode="lines+markers", name="channel-funnels at r",
                    line=dict(color="#B279A2"), hovertemplate="r=%{x}: %{y:.3f} TFLOPs/NFE<extra>measured here</extra>")
    if r in points:
        fig.add_scatter(x=[r], y=[points[r]], mode="markers", marker=dict(size=15, color="#E45756"), name=f"r = {r:g}")
    if base_tflops is not None:
        fig.add_hline(y=base_tflops, line_dash="dot", line_color="#4C78A8",
                      annotation_text=f"no funnels (temporal-pruning): {base_tflops:.3f}",
                      annotation_position="top left")
    fig.add_scatter(x=[0.5], y=[registry.get_stage("channel-funnels").paper.tflops], mode="markers",
                    marker=dict(symbol="x", size=12, color="black"), name="paper MobileVD (r=0.5, Table 2)",
                    hovertemplate="paper: %{y} TFLOPs<extra>paper, Table 2</extra>")
    fig.update_xaxes(title="fun-factor r (width kept)", range=[0, 1.05])
    fig.update_yaxes(title="TFLOPs per NFE (full scale, 512x256x14)")
    return _layout(fig, "Channel funnels: cost vs fun-factor", height=420, legend_y=-0.2)


def funnel_ablations(project: Sequence[dict[str, Any]]) -> go.Figure:
    """Table 4 (CSI vs He, fun-factor) from the paper beside the project's measured records."""
    from plotly.subplots import make_subplots

    rows4 = registry.ablation_rows("Table 4")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("paper, Table 4 (FVD, lower is better)",
                                                        "project records (FVD-proxy, measured here)"))
    fig.add_bar(x=[r.label for r in rows4], y=[r.fvd_25fps for r in rows4], row=1, col=1, showlegend=False,
                marker_color=["#E45756" if r.config.get("init") == "he" else "#B279A2" for r in rows4],
                hovertemplate="%{x}: FVD %{y}<extra>paper, Table 4</extra>")
    proj = [p for p in project if p.get("fvd_proxy") is not None]
    if proj:
        fig.add_bar(x=[p["label"] for p in proj], y=[p["fvd_proxy"] for p in proj], row=1, col=2, showlegend=False,
                    marker_color="#72B7B2", customdata=[p["source"] for p in proj],
                    hovertemplate="%{x}: FVD-proxy %{y:.2f}<extra>%{customdata}</extra>")
    else:
        fig.add_annotation(text="no project ablation records yet<br>(checkpoints/ablations/*.json)", x=0.78, y=0.5,
                           xref="paper", yref="paper", showarrow=False, font=dict(color="#666"))
    return _layout(fig, "CSI vs He initialisation and the fun-factor", height=380)


# ----------------------------------------------------------------------------------------------------------
# Trade-off


X_AXES = {
    "TFLOPs per NFE": "tflops",
    "TFLOPs per clip (NFE x per-NFE, CFG not counted, as the paper's 523x)": "clip",
    "GPU ms per NFE": "gpu_ms",
    "phone ms per NFE": "phone_ms",
}


def tradeoff_paper(x_name: str, fvd: str = "7 fps") -> go.Figure:
    """The paper's Figure-1-style view: FVD vs cost, Table 2's path as a line, Table 1's peers as points."""
    xk = X_AXES.get(x_name, "tflops")

    def xval(tflops: float | None, nfe: int | None, gpu: Any, phone: Any) -> float | None:
        if xk == "tflops":
            return tflops
        if xk == "clip":
            return tflops * nfe if tflops is not None and nfe else None
        if xk == "gpu_ms":
            return float(gpu) if isinstance(gpu, (int, float)) else None
        return float(phone) if isinstance(phone, (int, float)) else None

    fig = go.Figure()
    path = [s for s in registry.STAGES if s.slug != "mobilevd-hd"]
    pts = []
    for s in path:
        y = s.paper.fvd_7fps if fvd == "7 fps" else s.paper.fvd_25fps
        x = xval(s.paper.tflops, s.steps, s.paper.gpu_ms, s.paper.phone_ms)
        if x is not None and y is not None:
            pts.append((s, x, y))
    positions = ["top center", "bottom center", "top left", "bottom right", "top right", "bottom left",
                 "middle left", "top center"]
    fig.add_scatter(
        x=[p[1] for p in pts], y=[p[2] for p in pts], mode="lines+markers+text", text=[p[0].slug for p in pts],
        textposition=[positions[i % len(positions)] for i in range(len(pts))], textfont=dict(size=10),
        line=dict(color="#4C78A8", width=2), marker=dict(size=9), name="compression path (Table 2)",
        customdata=[[p[0].steps, p[0].paper.tflops, p[0].paper.gpu_ms, str(p[0].paper.phone_ms)] for p in pts],
        hovertemplate=("%{text}<br>FVD " + fvd + ": %{y}<br>NFE %{customdata[0]}, %{customdata[1]} TFLOPs/NFE"
                       "<br>GPU %{customdata[2]} ms, phone %{customdata[3]} ms<extra>paper, Table 2</extra>"),
    )
    xs_all = [p[1] for p in pts]
    ys_all = [p[2] for p in pts]
    hd = registry.get_stage("mobilevd-hd")
    y_hd = hd.paper.fvd_7fps if fvd == "7 fps" else hd.paper.fvd_25fps
    x_hd = xval(hd.paper.tflops, hd.steps, hd.paper.gpu_ms, hd.paper.phone_ms)
    if x_hd is not None:
        xs_all.append(x_hd)
        ys_all.append(y_hd)
        fig.add_scatter(x=[x_hd], y=[y_hd], mode="markers+text", text=["mobilevd-hd"], textposition="bottom center",
                        textfont=dict(size=10), marker=dict(size=12, symbol="star", color="#4C78A8"),
                        name="MobileVD-HD (Table 2)",
                        hovertemplate="mobilevd-hd: FVD %{y}<extra>paper, Table 2</extra>")
    if fvd == "7 fps":
        peers = [r for r in registry.PEERS if r.label not in ("SVD", "MobileVD", "MobileVD-HD")]
        px = [xval(r.tflops, r.nfe, r.gpu_ms, None) for r in peers]
        keep = [(r, x) for r, x in zip(peers, px, strict=True) if x is not None]
        if keep:
            xs_all += [k[1] for k in keep]
            ys_all += [k[0].fvd_7fps for k in keep]
            fig.add_scatter(x=[k[1] for k in keep], y=[k[0].fvd_7fps for k in keep], mode="markers+text",
                            text=[k[0].label for k in keep], textfont=dict(size=10),
                            textposition=[{"UFOGen": "top left", "LADD": "bottom left"}.get(k[0].label, "middle left")
                                          for k in keep],
                            marker=dict(size=10, symbol="diamond", color="#F58518"), name="peers (Table 1)",
                            customdata=[k[0].nfe for k in keep],
                            hovertemplate="%{text}: FVD %{y}, %{customdata} NFE<extra>paper, Table 1</extra>")
    fig.update_xaxes(title=x_name, **_log_axis(xs_all, 1.6))
    fig.update_yaxes(title=f"FVD ({fvd}, UCF-101) — lower is better", **_log_axis(ys_all, 1.25))
    return _layout(fig, "Paper: quality vs cost (all numbers from the paper)", height=500, legend_y=-0.16)


def tradeoff_project(rows: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]], scale: str) -> go.Figure:
    """The project's measured tiny points: FVD-proxy vs TFLOPs per clip (NFE x counted per-NFE)."""
    pts = [r for r in rows if r.get("x") is not None and r.get("fvd_proxy") is not None]
    if not pts:
        return empty("Project: measured quality vs cost (tiny)",
                     "no measured points yet:<br>train the stages, then run <b>python scripts/evaluate.py</b><br>"
                     "(it writes checkpoints/&lt;stage&gt;/metrics.json)", height=500)
    order = {s: i for i, s in enumerate(registry.SLUGS)}
    pts.sort(key=lambda r: order.get(r["stage"], 99))
    fig = go.Figure()
    fig.add_scatter(x=[p["x"] for p in pts], y=[p["fvd_proxy"] for p in pts], mode="lines",
                    line=dict(color="#E45756"), name="project path (measured here)", hoverinfo="skip")
    # one numbered marker per stage, named in the legend: the one-step stages sit within a few percent of each
    # other in both coordinates, so text labels beside the points printed over each other
    for i, p in enumerate(pts):
        fig.add_scatter(x=[p["x"]], y=[p["fvd_proxy"]], mode="markers+text", text=[str(i + 1)],
                        textposition="middle center", textfont=dict(size=10, color="white"),
                        marker=dict(size=17, color="#E45756", line=dict(color="white", width=1)),
                        name=f"{i + 1} {p['stage']}",
                        customdata=[[p["stage"], p.get("nfe"), p.get("tflops_nfe"), p.get("clips")]],
                        hovertemplate=("%{customdata[0]}<br>FVD-proxy %{y:.3f} on %{customdata[3]} clips"
                                       "<br>%{customdata[1]} NFE x %{customdata[2]:.4g} TFLOPs/NFE = %{x:.4g}"
                                       "<extra>measured here: scripts/evaluate.py + explorer.flops</extra>"))
    # labels alternate sides so that baselines with close values do not print over each other
    positions = ("top right", "bottom right", "top left", "bottom left")
    for i, b in enumerate(sorted(baselines, key=lambda b: b["fvd_proxy"])):
        fig.add_hline(y=b["fvd_proxy"], line_dash="dot", line_color="#999",
                      annotation_text=f"{b['stage']} ({b.get('resolution', 'size not recorded')})",
                      annotation_position=positions[i % len(positions)], annotation_font_size=11)
    fig.update_xaxes(title=f"TFLOPs per clip ({scale}; NFE x per-NFE, CFG counted)",
                     **_log_axis([p["x"] for p in pts], 1.6))
    fig.update_yaxes(title="FVD-proxy (project metric, NOT FVD) — lower is better")
    return _layout(fig, "Project: measured quality vs cost (tiny models)", height=560, legend_y=-0.2, bottom=150)


# ----------------------------------------------------------------------------------------------------------
# Latency


def latency(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """ms per NFE by stage, one bar group per device/runtime/precision/scale; OOM and failures marked. Records
    measured here (left) and the paper's numbers (right) each get their own panel and axis: a tiny model on this
    CPU and full SVD on a phone are not one quantity to read off one scale."""
    from plotly.subplots import make_subplots

    if not rows:
        return empty("Latency per NFE", "no records")
    order = {s: i for i, s in enumerate(registry.SLUGS)}
    panels = {"measured": [r for r in rows if not str(r.get("source", "")).startswith("paper")],
              "paper": [r for r in rows if str(r.get("source", "")).startswith("paper")]}
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09,
                        subplot_titles=("measured here (this project's records)", "paper (full SVD, GPU and phone)"))
    for col, (src, prow) in enumerate(panels.items(), start=1):
        if not prow:
            fig.add_annotation(text=f"no {src} records", x=0.2 if col == 1 else 0.8, y=0.5, xref="paper",
                               yref="paper", showarrow=False, font=dict(color="#666"))
            continue
        stages = sorted({str(r["stage"]) for r in prow}, key=lambda s: order.get(s, 99))
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in prow:
            groups[f"{r.get('device') or '?'} · {r.get('runtime') or '?'} · {r.get('precision') or '?'} · "
                   f"{r.get('scale') or '?'} ({src})"].append(r)
        ymax = max([r["median_ms"] for r in prow if r.get("median_ms")] or [1.0])
        for name, rs in groups.items():
            by_stage = {str(r["stage"]): r for r in rs}
            ys, texts, hov = [], [], []
            for s in stages:
                r = by_stage.get(s)
                if r is None:
                    ys.append(None)
                    texts.append("")
                    hov.append("")
                    continue
                status = r.get("status")
                ms = r.get("median_ms")
                if status in ("oom", "failed") or ms is None:
                    ys.append(ymax * 1.6)
                    texts.append(str(status).upper())
                else:
                    ys.append(ms)
                    texts.append(f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}")
                hov.append(f"{s}: {ms if ms is not None else status} ms<br>{r.get('includes')}"
                           f"<br>source: {r.get('source')}")
            fig.add_bar(name=name, x=stages, y=ys, text=texts, textposition="outside", customdata=hov,
                        hovertemplate="%{customdata}<extra></extra>", row=1, col=col,
                        marker_pattern_shape=["x" if t in ("OOM", "FAILED") else "" for t in texts])
        fig.update_yaxes(title="ms per NFE (UNet only, batch 1)", type="log", row=1, col=col)
    fig.update_layout(barmode="group")
    return _layout(fig, "Latency per UNet evaluation (hatched = OOM / failed)", height=480, legend_y=-0.18)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for tables: significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.{digits}g}"
    return str(value)


# ----------------------------------------------------------------------------------------------------------
# Ablations


def ablation_bars(table: str, rows: Sequence[dict[str, Any]]) -> go.Figure:
    """One paper table's rows: the paper's FVD (left) and the project's FVD-proxy (right), never on one axis."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"paper, {table} (FVD at 25 fps, lower is better)",
                                                        "project records (FVD-proxy at 1 NFE, measured here)"))
    paper = [r for r in rows if r.get("paper_fvd") is not None]
    mine = [r for r in rows if r.get("fvd_proxy") is not None]
    if paper:
        fig.add_bar(x=[r["label"] for r in paper], y=[r["paper_fvd"] for r in paper], row=1, col=1,
                    showlegend=False, marker_color="#4C78A8", customdata=[r["paper_tflops"] for r in paper],
                    hovertemplate="%{x}: FVD %{y}, %{customdata} TFLOPs/NFE<extra>paper</extra>")
    else:
        fig.add_annotation(text="no rows in the paper", x=0.2, y=0.5, xref="paper", yref="paper", showarrow=False,
                           font=dict(color="#666"))
    if mine:
        vals = [r["fvd_proxy"] for r in mine]
        cis = [r.get("fvd_proxy_ci") for r in mine]
        ends = vals + [v for ci in cis if ci for v in ci]
        pad = max(0.05 * (max(ends) - min(ends)), 0.02 * max(ends), 1e-3)
        # not from 0: the records differ by tenths, which bars from zero hide
        fig.update_yaxes(range=[max(0.0, min(ends) - 4 * pad), max(ends) + 2 * pad], row=1, col=2)
        # the 95% bootstrap interval over clips as an error bar (none for records from before spreads)
        error = dict(type="data", symmetric=False, color="#333", thickness=1.2, width=6,
                     array=[ci[1] - v if ci else 0 for v, ci in zip(vals, cis, strict=True)],
                     arrayminus=[v - ci[0] if ci else 0 for v, ci in zip(vals, cis, strict=True)],
                     visible=any(cis))
        fig.add_bar(x=[r["label"] for r in mine], y=vals, row=1, col=2, showlegend=False, error_y=error,
                    marker_color="#72B7B2",
                    customdata=[[r.get("tflops"), r.get("source"),
                                 f"{ci[0]:.2f} - {ci[1]:.2f}" if ci else "not recorded"] for r, ci in zip(mine, cis,
                                                                                                       strict=True)],
                    hovertemplate="%{x}: FVD-proxy %{y:.2f} (95% interval %{customdata[2]}), %{customdata[0]} "
                                  "TFLOPs/NFE (full scale)<extra>%{customdata[1]}</extra>")
    else:
        fig.add_annotation(text="no project records for this table yet<br>(python scripts/run_ablations.py)",
                           x=0.8, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(color="#666"))
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, f"{table}: paper vs project", height=460, bottom=150)
