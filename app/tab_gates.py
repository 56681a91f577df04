"""Temporal gates tab: learned importances on the UNet's structure, their history, a live re-pruning slider."""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from app import plots
from app.context import AppContext
from app.gpu import generate_on_device
from app.tab_compare import card_html
from explorer.app_support import (
    MEASURED,
    Common,
    GatesRecord,
    StageOutcome,
    StageRequest,
    check_image,
    compose,
    read_gates,
    run_stage,
    structural_order,
    temporal_layout,
    validate_common,
)
from explorer.pipeline import ImageInputError

SOURCE_STAGE = "temporal-multiscale"  # the unpruned parent whose weights are re-pruned zero-shot


@functools.lru_cache(maxsize=2)
def _layout(scale: str = "full") -> list[dict[str, Any]]:
    return temporal_layout(scale)


@functools.lru_cache(maxsize=2)
def _structural(scale: str = "full") -> list[int]:
    return structural_order(scale)


def gate_view(ctx: AppContext) -> dict[str, Any]:
    """Scores, ranking order and labels: trained gates when a readable file exists, else the heuristic."""
    rec: GatesRecord = read_gates(ctx.checkpoints)
    layout = _layout()
    if rec.ok:
        score = rec.probabilities or rec.importance
        name = "inclusion probability p" if rec.probabilities else "importance q"
        ranking = rec.importance or rec.probabilities or [0.0] * len(layout)
        order = sorted(range(len(layout)), key=lambda i: (-ranking[i], i))
        if rec.kept:  # the file's kept set first (it is what the stage kept), then by importance
            order = sorted(rec.kept, key=lambda i: (-ranking[i], i)) + [i for i in order if i not in rec.kept]
        src = f"{MEASURED} (trained gates: {rec.file})"
        return {"rec": rec, "score": score, "name": name, "order": order, "source": src, "trained": True,
                "n": rec.n or len(rec.kept or []) or 11}
    order = _structural()
    score = [0.0] * len(layout)
    for rank, i in enumerate(order):
        score[i] = 1.0 - rank / max(1, len(order) - 1)
    return {"rec": rec, "score": score, "name": "heuristic priority", "order": order,
            "source": f"estimate (structural heuristic; {rec.reason})", "trained": False, "n": 11}


def slider_view(ctx: AppContext, n: int) -> tuple[Any, Any, str]:
    """Structure plot, cost curve and the live FLOPs text for keeping the top-n blocks."""
    view = gate_view(ctx)
    n = max(1, min(38, int(n)))
    kept = sorted(view["order"][:n])
    full = ctx.flops.block_costs("temporal-pruning", "full")
    tiny = ctx.flops.block_costs("temporal-pruning", "tiny")
    tf_full = (full["floor"] + sum(full["costs"][i] for i in kept)) / 1e12
    tf_tiny = (tiny["floor"] + sum(tiny["costs"][i] for i in kept)) / 1e12
    srt = sorted(full["costs"])
    lo = (full["floor"] + sum(srt[:n])) / 1e12
    hi = (full["floor"] + sum(srt[len(srt) - n:])) / 1e12
    structure = plots.gates_structure(_layout(), view["score"], kept, view["name"], view["source"].split(" (")[0],
                                      full["costs"])
    curve = plots.prune_curve(full["floor"], full["costs"], view["order"], n,
                              "trained importances" if view["trained"] else "structural heuristic")
    text = (f"**Keep {n} of 38 temporal blocks** ({100 * (1 - n / 38):.0f}% pruned) → "
            f"**{tf_full:.3f} TFLOPs per NFE** at full scale, {full['width']}x{full['height']}x{full['frames']} "
            f"(any {n} blocks: {lo:.3f}-{hi:.3f}); tiny scale: {tf_tiny * 1e3:.3f} GFLOPs per NFE. "
            f"<span class='mvd-src m'>measured here</span> additive per-block costs from the FLOP counter. "
            f"Ranking: {view['source']}.\n\nKept blocks: `{kept}`")
    return structure, curve, text


def reprune_impl(ctx: AppContext, image: Any, n: Any, seed: Any, motion: Any, fps: Any, noise: Any
                 ) -> tuple[Any, ...]:
    """The trained temporal-pruning stage beside its parent re-pruned to the top-n blocks (not finetuned)."""
    try:
        checked = check_image(image)
    except ImageInputError as exc:
        raise gr.Error(f"Cannot use this image (upload one on the Compare tab): {exc}") from None
    try:
        common = validate_common(Common(int(float(seed or 0)), int(float(motion or 127)), int(float(fps or 7)),
                                        float(noise if noise is not None else 0.02)))
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"Bad setting: {exc}") from None
    view = gate_view(ctx)
    n = max(1, min(38, int(float(n))))
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
    sbs, _ = compose(outs, ctx.out_dir, common.fps, f"reprune-{checked.digest[:8]}-{n}-{common.seed}")
    cards = "".join(card_html(o) for o in outs)
    return sbs, f'<div class="mvd-cardrow">{cards}</div>'


def intro_md(ctx: AppContext) -> str:
    rec = read_gates(ctx.checkpoints)
    if rec.ok:
        return (f"Learned gates from `{rec.file}` <span class='mvd-src m'>measured here</span>: inclusion "
                "probabilities and importances per temporal block; kept = the stage's choice.")
    return ("<span class='mvd-src e'>estimate</span> **No trained gates yet** "
            f"({rec.reason}). Showing the documented structural heuristic (temporal attention at the "
            "finest levels first) until `checkpoints/temporal-pruning/gates.json` exists (format: docs/app.md).")


def build(ctx: AppContext, compare: dict[str, Any]) -> dict[str, Any]:
    rec = read_gates(ctx.checkpoints)  # JSON only: the structure is built when the tab is opened
    intro = gr.Markdown(intro_md(ctx))
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            structure = gr.Plot(label="gates on the UNet", elem_id="mvd-gates-structure")
        with gr.Column(scale=2):
            n = gr.Slider(1, 38, value=int(rec.n or 11) if rec.ok else 11, step=1, label="temporal blocks kept (n)",
                          elem_id="mvd-gates-n")
            live = gr.Markdown(label="live FLOPs")
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

    def on_history() -> Any:
        v = gate_view(ctx)
        rec = v["rec"]
        return plots.gates_history(rec.history if rec.ok else [], rec.kept or v["order"][: v["n"]], _layout(),
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

    return {"load": [(on_intro, [], [intro]), (on_n, [n], [structure, curve, live]), (on_history, [], [history])]}
