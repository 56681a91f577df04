"""Temporal gates tab: learned importances on the UNet's structure, their history, a live re-pruning slider."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from app import plots
from app.cards import card_html
from app.context import AppContext
from app.gpu import generate_on_device
from explorer import stages as registry
from explorer.flops import kept_range
from explorer.models import UNET_CONFIGS
from explorer.pipeline import ImageInputError
from explorer.records import MEASURED, GatesRecord, read_gates
from explorer.serving import (
    Common,
    StageOutcome,
    StageRequest,
    check_image,
    compose,
    prune_outputs,
    run_stage,
    validate_common,
)
from explorer.transforms.pruning_rules import (
    default_kept,
    fraction_for,
    pruned_fraction,
    scale_for_count,
    structural_order,
    temporal_block_count,
    temporal_layout,
)

SOURCE_STAGE = "temporal-multiscale"  # the unpruned parent whose weights are re-pruned zero-shot


@functools.lru_cache(maxsize=4)
def _layout(scale: str = "full") -> list[dict[str, Any]]:
    return temporal_layout(scale)


@functools.lru_cache(maxsize=4)
def _structural(scale: str = "full") -> list[int]:
    return structural_order(scale)


def gates_scale(ctx: AppContext, rec: GatesRecord) -> str | None:
    """The UNet scale the tab's block indices refer to: the gates file's (its stage's) scale, else the scale of
    the model that would be re-pruned (the pruning stage or its parent), else the placeholder scale."""
    if rec.ok:
        return rec.scale if rec.scale in UNET_CONFIGS else (scale_for_count(rec.total) if rec.total else None)
    for slug in ("temporal-pruning", SOURCE_STAGE):
        e = ctx.catalog.entries.get(slug)
        if e is not None and e.status != "unavailable" and e.scale in UNET_CONFIGS:
            return e.scale
    return ctx.catalog.placeholder_scale if ctx.catalog.placeholder_scale in UNET_CONFIGS else "full"


def _rec_layout(rec: GatesRecord, scale: str | None) -> list[dict[str, Any]]:
    """The blocks the gates are indexed by: the file's own list, else the layout of ``scale``."""
    if rec.ok and rec.blocks:
        return rec.blocks
    if scale is not None and (not rec.ok or temporal_block_count(scale) == rec.total):
        return _layout(scale)
    total = rec.total or 0  # a custom UNet without a block list: indices only
    return [{"index": i, "kind": "resnet", "level": 0, "side": "down", "path": f"block {i}"} for i in range(total)]


def gate_view(ctx: AppContext) -> dict[str, Any]:
    """Scores, ranking order, labels and the block layout: trained gates when a readable file exists, else the
    heuristic. ``total`` is the number of temporal blocks of the gates' UNet (full SVD 38, tiny 33)."""
    rec: GatesRecord = read_gates(ctx.checkpoints)
    scale = gates_scale(ctx, rec)
    layout = _rec_layout(rec, scale)
    total = len(layout)
    if rec.ok:
        score = rec.probabilities or rec.importance
        name = "inclusion probability p" if rec.probabilities else "importance q"
        ranking = rec.importance or rec.probabilities or [0.0] * total
        order = sorted(range(total), key=lambda i: (-ranking[i], i))
        if rec.kept:  # the file's kept set first (it is what the stage kept), then by importance
            order = sorted(rec.kept, key=lambda i: (-ranking[i], i)) + [i for i in order if i not in rec.kept]
        src = f"{MEASURED} (trained gates: {_shown_file(rec)})"
        return {"rec": rec, "score": score, "name": name, "order": order, "source": src, "trained": True,
                "n": rec.n or len(rec.kept or []) or default_kept(total), "layout": layout, "total": total,
                "scale": scale or rec.scale}
    order = _structural(scale)
    score = [0.0] * total
    for rank, i in enumerate(order):
        score[i] = 1.0 - rank / max(1, len(order) - 1)
    return {"rec": rec, "score": score, "name": "heuristic priority", "order": order,
            "source": f"estimate (structural heuristic; {rec.reason})", "trained": False, "n": default_kept(total),
            "layout": layout, "total": total, "scale": scale}


def _costs_on(ctx: AppContext, layout: list[dict[str, Any]], scale: str
              ) -> tuple[dict[str, Any], list[float], list[bool], int]:
    """Per-block FLOPs of the temporal-pruning stage at ``scale`` (full or tiny), aligned with ``layout`` by
    module path: (block costs record, costs, whether each layout block exists at ``scale``, how many blocks of
    ``scale`` have no counterpart in ``layout`` and so count as pruned)."""
    bc = ctx.flops.block_costs("temporal-pruning", scale)
    by_path = {b["path"]: b["index"] for b in _layout(scale)}
    idx = [by_path.get(str(b.get("path"))) for b in layout]
    costs = [float(bc["costs"][j]) if j is not None else 0.0 for j in idx]
    return bc, costs, [j is not None for j in idx], len(by_path) - len({j for j in idx if j is not None})


def slider_view(ctx: AppContext, n: int) -> tuple[Any, Any, str]:
    """Structure plot, cost curve and the live FLOPs text for keeping the top-n blocks."""
    view = gate_view(ctx)
    layout, total = view["layout"], view["total"]
    n = max(1, min(total, int(n)))
    kept = sorted(view["order"][:n])
    full, full_costs, in_full, full_missing = _costs_on(ctx, layout, "full")
    tiny, tiny_costs, _, tiny_missing = _costs_on(ctx, layout, "tiny")
    tf_mapped = (full["floor"] + sum(full_costs[i] for i in kept)) / 1e12
    tf_tiny = (tiny["floor"] + sum(tiny_costs[i] for i in kept)) / 1e12
    n_mapped = sum(1 for i in kept if in_full[i])
    n_svd = len(full["costs"])
    # The one rule of the cards, the FLOPs tab and the README (transforms_for_scale): on a UNet with another block
    # count, a pruned model keeps the documented default blocks for its pruned fraction -- the stage's own
    # fraction when n is the stage's default, so that the trained stage reads the same number everywhere.
    def by_rule(k: int) -> tuple[float, int, float]:
        """(pruned fraction, full-scale blocks kept, TFLOPs) when ``k`` of the gates' ``total`` blocks are kept."""
        frac = fraction_for(k, total)
        kf = registry.kept_count(n_svd, frac) if 0 < k else 0
        return frac, kf, (full["floor"] + sum(full["costs"][j] for j in _structural("full")[:kf])) / 1e12

    if total != n_svd:
        fraction, n_rule, tf_full = by_rule(n)
        rule_curve: list[float] | None = [by_rule(k)[2] for k in range(total + 1)]
    else:  # the gates are over full SVD's own blocks: the kept blocks themselves
        fraction, n_rule, tf_full, rule_curve = 1 - n / total, n, tf_mapped, None
    lo, hi = (v / 1e12 for v in kept_range(full["floor"], full["costs"], n_rule))
    structure = plots.gates_structure(layout, view["score"], kept, view["name"], view["source"].split(" (")[0],
                                      full_costs)
    curve = plots.prune_curve(full["floor"], full_costs, view["order"], n,
                              ("trained importances" if view["trained"] else "structural heuristic")
                              + (", blocks mapped by module path" if total != n_svd else ""),
                              paper=total == n_svd, rule=rule_curve)
    scale = view["scale"] or "custom"
    rule = (f"the documented default {n_rule} of {n_svd} blocks for {100 * fraction:.0f}% pruned, as on the cards "
            f"and the FLOPs tab; any {n_rule}: {lo:.3f}-{hi:.3f}; these {n} blocks mapped onto full SVD by module "
            f"path instead ({n_mapped} exist there, the other {full_missing} counted as pruned): {tf_mapped:.3f}"
            if total != n_svd else f"any {n_rule} of {n_svd} blocks: {lo:.3f}-{hi:.3f}")
    tiny_note = f" ({tiny_missing} of its blocks absent here, counted as pruned)" if tiny_missing else ""
    text = (f"**Keep {n} of {total} temporal blocks** of the {scale} UNet ({100 * (1 - n / total):.0f}% pruned) → "
            f"**{tf_full:.3f} TFLOPs per NFE** at full scale, {full['width']}x{full['height']}x{full['frames']} "
            f"({rule}); tiny scale: {tf_tiny * 1e3:.3f} GFLOPs "
            f"per NFE{tiny_note}. <span class='mvd-src m'>measured here</span> additive per-block costs from the FLOP "
            f"counter. Default n = {default_kept(total)} ({100 * pruned_fraction():.0f}% of {total} pruned, as the "
            f"paper's 11 of 38). Ranking: {view['source']}.\n\nKept blocks: `{kept}`")
    return structure, curve, text


def reprune_impl(ctx: AppContext, image: Any, n: Any, seed: Any, motion: Any, fps: Any, noise: Any
                 ) -> tuple[Any, ...]:
    """The trained temporal-pruning stage beside its parent re-pruned to the top-n blocks (not finetuned)."""
    try:
        checked = check_image(image, ctx.upload_roots)
    except ImageInputError as exc:
        raise gr.Error(f"Cannot use this image (upload one on the Compare tab): {exc}") from None
    try:
        common = validate_common(Common(int(float(seed or 0)), int(float(motion or 127)), int(float(fps or 7)),
                                        float(noise if noise is not None else 0.02)))
        n = int(float(n))
    except (TypeError, ValueError, OverflowError) as exc:
        raise gr.Error(f"Bad setting: {exc}") from None
    view = gate_view(ctx)
    n = max(1, min(view["total"], n))
    kept = sorted(view["order"][:n])
    outs: list[StageOutcome] = []
    trained = run_stage(ctx.catalog, ctx.flops, ctx.results, ctx.out_dir, checked, StageRequest("temporal-pruning"),
                        common, generate_fn=generate_on_device)
    outs.append(trained)
    try:
        pipe_rec = ctx.catalog.repruned(SOURCE_STAGE, kept)
    except Exception as exc:  # noqa: BLE001 - shown as an unavailable card
        outs.append(StageOutcome("re-pruned", f"{SOURCE_STAGE} re-pruned (n={n})", "zero-shot", "not finetuned",
                                 "unavailable", reason=str(exc)))
    else:
        req = StageRequest(SOURCE_STAGE, steps=pipe_rec[1].steps, params={"repruned": kept})
        o = run_stage(ctx.catalog, ctx.flops, ctx.results, ctx.out_dir, checked, req, common,
                      generate_fn=generate_on_device, pipe_record=pipe_rec)
        o.key = f"re-pruned n={n}"
        o.label = f"{SOURCE_STAGE} re-pruned to {n} blocks (zero-shot)"
        o.note = "not finetuned"
        outs.append(o)
    sbs, _ = compose(outs, ctx.out_dir, common.fps,
                     f"reprune-{checked.digest[:8]}-{n}-{common.seed}-{uuid.uuid4().hex[:12]}")
    prune_outputs(ctx.out_dir, ctx.max_output_files, keep=[sbs] + [o.video for o in outs])
    cards = "".join(card_html(o) for o in outs)
    return sbs, f'<div class="mvd-cardrow">{cards}</div>'


def _shown_file(rec: GatesRecord) -> str:
    """The gates file as ``<stage folder>/gates.json``: the server's absolute path means nothing to a visitor."""
    return "/".join(Path(rec.file).parts[-2:]) if rec.file else ""


def intro_md(ctx: AppContext) -> str:
    rec = read_gates(ctx.checkpoints)
    if rec.ok:
        return (f"Learned gates from `{_shown_file(rec)}` <span class='mvd-src m'>measured here</span>: inclusion "
                "probabilities and importances per temporal block; kept = the stage's choice.")
    return ("<span class='mvd-src e'>estimate</span> **No trained gates yet** "
            f"({rec.reason}). Showing the documented structural heuristic (temporal attention at the "
            "finest levels first) until `checkpoints/temporal-pruning/gates.json` exists (format: docs/app.md).")


def build(ctx: AppContext, compare: dict[str, Any]) -> dict[str, Any]:
    view = gate_view(ctx)  # JSON and a meta-device layout: the plots are built when the tab is opened
    intro = gr.Markdown(intro_md(ctx))
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            structure = gr.Plot(label="gates on the UNet", elem_id="mvd-gates-structure")
        with gr.Column(scale=2):
            n = gr.Slider(1, view["total"], value=min(int(view["n"]), view["total"]), step=1,
                          label=f"temporal blocks kept (n of {view['total']})", elem_id="mvd-gates-n")
            live = gr.Markdown(label="live FLOPs", elem_id="mvd-gates-live")
            curve = gr.Plot(label="cost vs n")
    history = gr.Plot(label="history", elem_id="mvd-gates-history")
    gr.Markdown("#### Generate with the re-pruned tiny model (zero-shot) beside the trained one\n"
                f"Uses the image, seed and conditioning of the Compare tab. The re-pruned model is `{SOURCE_STAGE}` "
                "(the unpruned parent) with only the top-n blocks kept and **no finetuning**; the trained one is "
                "`temporal-pruning`.")
    with gr.Row(equal_height=False):
        go_btn = gr.Button("Generate trained vs re-pruned", variant="primary", elem_id="mvd-gates-go")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("**trained** (left) vs **re-pruned, zero-shot** (right)")
            video = gr.Video(label="trained vs re-pruned", show_label=False, autoplay=True, loop=True,
                             interactive=False, elem_id="mvd-gates-video")
        cards = gr.HTML(label="stats")

    def on_n(kept_n: float) -> tuple[Any, Any, str]:
        """Live FLOPs and structure for keeping the top-n temporal blocks."""
        return slider_view(ctx, int(kept_n))

    n.release(on_n, [n], [structure, curve, live], api_name="gates", concurrency_id="flops",
              concurrency_limit=2)
    # a value typed into the slider's box (Enter) or moved with the keyboard fires no release: follow every change
    n.change(on_n, [n], [structure, curve, live], api_visibility="private", concurrency_id="flops",
             trigger_mode="always_last")

    def on_history() -> Any:
        v = gate_view(ctx)
        rec = v["rec"]
        return plots.gates_history(rec.history if rec.ok else [], rec.kept or v["order"][: v["n"]], v["layout"],
                                   v["source"])

    def on_reprune(image: Any, kept_n: Any, seed: Any, motion_bucket_id: Any, fps: Any, noise_aug_strength: Any
                   ) -> tuple[Any, ...]:
        """Trained temporal-pruning vs its parent re-pruned zero-shot to the top-n blocks: side-by-side mp4 and
        the stats cards (HTML)."""
        return reprune_impl(ctx, image, kept_n, seed, motion_bucket_id, fps, noise_aug_strength)

    go_btn.click(on_reprune, [compare["image"], n, compare["seed"], compare["motion"], compare["fps"],
                              compare["noise"]], [video, cards], api_name="reprune", preprocess=False,
                 concurrency_id="gpu", concurrency_limit=1)
    def on_intro() -> str:
        return intro_md(ctx)

    def on_range(kept_n: Any) -> Any:
        """The slider's range follows the gates' UNet (a gates file may appear after startup)."""
        total = gate_view(ctx)["total"]
        value = min(int(float(kept_n if kept_n is not None else total)), total)
        return gr.Slider(maximum=total, value=value, label=f"temporal blocks kept (n of {total})")

    return {"load": [(on_intro, [], [intro]), (on_range, [n], [n]), (on_n, [n], [structure, curve, live]),
                     (on_history, [], [history])]}
