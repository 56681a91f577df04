"""Compare tab: one image, several stages side by side, every number with its source."""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr

from app.cards import card_head, card_stats, progress_board, stats_table
from app.context import AppContext
from app.gpu import ON_ZEROGPU, generate_on_device
from explorer.pipeline import ImageInputError
from explorer.serving import (
    MAX_STAGES,
    MAX_STEPS,
    CheckedImage,
    Common,
    RequestCancelled,
    StageOutcome,
    StageRequest,
    cached_outcome,
    check_image,
    compose,
    prune_outputs,
    reason_of,
    run_stage,
    shorten,
    upscale_note,
    validate_common,
)
from explorer.transforms.pruning_rules import default_kept, pruned_fraction, temporal_block_count

TABLE_HEADERS = ["stage", "steps", "min guidance", "max guidance", "stage defaults"]
DEFAULT_STAGES = ("svd", "channel-funnels")
HEARTBEAT_S = 1.0  # longest time between two yields of a running comparison (e.g. while a model loads)
CANCEL_JOIN_S = 2.0  # the worker stops within one denoising step; wait briefly (this runs on the event loop)

SYNC_JS = """
() => {
  const vids = Array.from(document.querySelectorAll('#mvd-cards video, #mvd-sbs video'));
  vids.forEach(v => { v.pause(); v.currentTime = 0; v.muted = true; v.loop = true; });
  setTimeout(() => vids.forEach(v => { const p = v.play(); if (p) p.catch(() => {}); }), 50);
  return [];
}
"""


# ----------------------------------------------------------------------------------------------------------
# Settings table


def parse_table(value: Any) -> dict[str, dict[str, Any]]:
    """Per-stage overrides from the settings table (list of rows, gradio's dict payload, or a DataFrame)."""
    if value is None:
        return {}
    if hasattr(value, "values") and hasattr(value, "columns"):  # pandas
        rows = value.values.tolist()
    elif isinstance(value, dict):
        rows = value.get("data") or []
    elif isinstance(value, (list, tuple)):
        rows = list(value)
    else:
        raise gr.Error("settings must be a table {'headers': [...], 'data': [[stage, steps, min guidance, "
                       "max guidance, ...], ...]} or null")
    if not isinstance(rows, (list, tuple)):
        raise gr.Error("settings: 'data' must be a list of rows")
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, (list, tuple)) or not row or not str(row[0]).strip():
            continue
        key = str(row[0]).strip()
        out[key] = {"steps": _cell(row, 1, int, key), "min_guidance": _cell(row, 2, float, key),
                    "max_guidance": _cell(row, 3, float, key)}
    return out


def _cell(row: Sequence[Any], i: int, cast: type, key: str) -> Any:
    try:
        v = row[i]
        return None if v in (None, "") else cast(float(v))
    except IndexError:
        return None
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"settings table, stage {shorten(key, 40)}: '{shorten(row[i], 40)}' is not a "
                       "number") from None


def table_rows(ctx: AppContext, stages: list[str] | None, current: Any = None) -> list[list[Any]]:
    """Rows of the settings table for the selected stages, keeping edits of stages still selected."""
    kept = {}
    try:
        kept = parse_table(current)
    except gr.Error:
        kept = {}
    rows = []
    order = {k: i for i, k in enumerate(ctx.catalog.entries)}
    entries = []
    for key in stages or []:
        try:
            entries.append(ctx.catalog.entry(key))
        except KeyError:
            continue
    for e in sorted(entries, key=lambda x: order.get(x.key, 999)):
        rec = e.record
        if rec is None:
            defaults = "unavailable" if e.status == "unavailable" else "loads on first use"
            d_steps, d_min, d_max = None, None, None
        else:
            d_steps, d_min, d_max = rec.steps, rec.min_guidance, rec.max_guidance
            defaults = f"{rec.steps} steps, CFG {rec.min_guidance:g}->{rec.max_guidance:g}, {rec.width}x{rec.height}"
        old = kept.get(e.key, {})
        rows.append([e.key, old.get("steps") or d_steps, old.get("min_guidance", d_min) if old else d_min,
                     old.get("max_guidance", d_max) if old else d_max, defaults])
    return rows


# ----------------------------------------------------------------------------------------------------------
# Rendering helpers


# ----------------------------------------------------------------------------------------------------------
# Handlers


def preview(ctx: AppContext, image: Any, stages: list[str] | None) -> tuple[list[tuple[str, str]], str]:
    """What each selected stage's model will see (resized, centre-cropped), and notes on the input."""
    from explorer.pipeline import prepare_image

    if image is None:
        return [], "Upload an image or pick an example."
    try:
        checked = check_image(image, ctx.upload_roots)
    except ImageInputError as exc:
        raise gr.Error(f"Cannot use this image: {exc}") from None
    if isinstance(stages, str):
        stages = [stages]
    if stages is not None and not isinstance(stages, (list, tuple)):
        raise gr.Error("stages must be a list of stage names")
    sizes: dict[tuple[int, int], list[str]] = {}
    for key in (stages or list(DEFAULT_STAGES))[:MAX_STAGES]:
        try:
            rec = ctx.catalog.entry(str(key)).record
        except KeyError:
            continue
        if rec is not None:
            sizes.setdefault((rec.width, rec.height), []).append(key)
    items = []
    notes = list(checked.notes)
    for (w, h), keys in sizes.items():
        img = prepare_image(checked.image, w, h)
        path = ctx.out_dir / f"cond-{checked.digest[:12]}-{w}x{h}.png"
        if not path.exists():
            img.save(path)
        items.append((str(path), f"{w}x{h}: {', '.join(keys)}"))
        up = upscale_note(checked, w, h)
        if up:
            notes.append(up)
    w, h = checked.original_size
    text = f"Input {w}x{h} (mode {checked.original_mode}); resized to cover each stage's size, centre-cropped."
    if notes:
        text += " Notes: " + "; ".join(notes) + "."
    return items, text


def compare_requests(
    ctx: AppContext, image: Any, stages: Any, table: Any, seed: Any, randomize: Any, motion: Any, fps: Any,
    noise: Any, zs_n: Any, zs_heuristic: Any, zs_r: Any,
) -> tuple[CheckedImage, list[str], list[StageRequest], Common]:
    """The Compare tab's inputs validated into (image, stage keys in path order, one request per stage, the shared
    settings); a ``gr.Error`` says what is wrong."""
    try:
        checked = check_image(image, ctx.upload_roots)
    except ImageInputError as exc:
        raise gr.Error(f"Cannot use this image: {exc}") from None
    if isinstance(stages, str):
        stages = [s for s in stages.split(",") if s.strip()]
    if stages is not None and not isinstance(stages, (list, tuple)):
        raise gr.Error("stages must be a list of stage names")
    stages = [str(s).strip() for s in (stages or [])]
    if not stages:
        raise gr.Error("Select at least one stage.")
    if len(stages) > MAX_STAGES:
        raise gr.Error(f"Select at most {MAX_STAGES} stages per comparison (got {len(stages)}).")
    keys = []
    for s in stages:
        try:
            keys.append(ctx.catalog.entry(s).key)
        except KeyError as exc:
            raise gr.Error(reason_of(exc)) from None
    order = {k: i for i, k in enumerate(ctx.catalog.entries)}
    keys = sorted(dict.fromkeys(keys), key=lambda k: order.get(k, 999))  # path order, whatever the click order
    overrides = parse_table(table)
    for key, o in overrides.items():
        if o.get("steps") is not None and not 1 <= o["steps"] <= MAX_STEPS:
            raise gr.Error(f"Bad setting: steps must be in 1..{MAX_STEPS}, got {o['steps']} "
                           f"(stage {shorten(key, 40)})")
    try:
        seed_val = random.randrange(0, 2**31 - 1) if bool(randomize) else int(float(seed if seed is not None else 0))
        common = validate_common(Common(seed=seed_val, motion_bucket_id=int(float(motion if motion is not None
                                                                                   else 127)),
                                        fps=int(float(fps if fps is not None else 7)),
                                        noise_aug_strength=float(noise if noise is not None else 0.02)))
        zs_total = ctx.catalog.base_temporal_blocks() if "base/prune-zs" in keys else None
        zs = {"n": int(float(zs_n)) if zs_n is not None else (default_kept(zs_total) if zs_total else None),
              "heuristic": str(zs_heuristic or "blend"), "r": float(zs_r if zs_r is not None else 0.5)}
    except (TypeError, ValueError, OverflowError) as exc:
        raise gr.Error(f"Bad setting: {shorten(exc, 200)}") from None
    if zs_total is not None and not 1 <= zs["n"] <= zs_total:
        raise gr.Error(f"Bad setting: zero-shot pruning keeps 1..{zs_total} temporal blocks of the base UNet, "
                       f"got {zs['n']}")
    requests = []
    for key in keys:
        o = overrides.get(key, {})
        params = {}
        if key == "base/prune-zs":
            params = {"n": zs["n"], "heuristic": zs["heuristic"]}
        elif key == "base/funnels-zs":
            params = {"r": zs["r"]}
        requests.append(StageRequest(key, o.get("steps"), o.get("min_guidance"), o.get("max_guidance"), params))
    return checked, keys, requests, common


def compare_impl(
    ctx: AppContext, image: Any, stages: Any, table: Any, seed: Any, randomize: Any, motion: Any, fps: Any,
    noise: Any, zs_n: Any, zs_heuristic: Any, zs_r: Any, progress: Any = None,
) -> Iterator[tuple[Any, ...]]:
    """Generate every selected stage (streaming a per-stage progress board), then compose the comparison."""
    checked, keys, requests, common = compare_requests(ctx, image, stages, table, seed, randomize, motion, fps,
                                                       noise, zs_n, zs_heuristic, zs_r)
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    board: dict[str, dict[str, Any]] = {r.key: {"state": "queued", "text": "queued" + _estimate(ctx, r), "done": 0,
                                                "total": r.steps or 1} for r in requests}
    outcomes: list[StageOutcome] = []

    cancelled = threading.Event()  # set when the client goes away (cancel, closed tab): stop, free the lock

    def worker() -> None:
        for req in requests:
            if cancelled.is_set():
                break
            est = _estimate(ctx, req)
            if ctx.catalog.work.busy():  # another tab or API client is generating: say so, not "loading"
                events.put((req.key, {"state": "waiting", "text": "queued behind another run "
                                      "(one generation at a time on this machine)" + est}))
            else:
                events.put((req.key, {"state": "loading", "text": "loading model" + est}))
            t0 = time.perf_counter()
            first_step: list[float] = []

            def cb(done: int, total: int, key: str = req.key, first_step: list[float] = first_step) -> None:
                if cancelled.is_set():
                    raise RequestCancelled("request cancelled by the client")
                now = time.perf_counter()
                if not first_step:
                    first_step.append(now)
                    left = ""
                else:  # from this run's own step rate (the first step includes loading and encoding)
                    rate = (now - first_step[0]) / max(1, done - 1)
                    left = f" · ~{rate * (total - done):.0f} s left" if done < total else ""
                events.put((key, {"state": "running", "done": done, "total": total,
                                  "text": f"step {done}/{total}{left}"}))

            try:
                out = run_stage(ctx.catalog, ctx.flops, ctx.results, ctx.out_dir, checked, req, common,
                                progress=None if ON_ZEROGPU else cb, generate_fn=generate_on_device)
            except RequestCancelled:
                break
            outcomes.append(out)
            _remember_timing(ctx, req.key, out)
            dt = time.perf_counter() - t0
            text = {"done": f"done in {dt:.1f} s", "cached": "cached (instant)"}.get(
                out.status, f"{out.status}: {out.reason}")
            events.put((req.key, {"state": out.status, "text": text, "done": 1, "total": 1}))
        events.put(("", {}))

    thread = threading.Thread(target=worker, name="compare", daemon=True)
    thread.start()
    header = f"seed {common.seed} · {len(keys)} stage(s)"
    try:
        yield from _follow(events, board, keys, header, progress)
    finally:
        if thread.is_alive():  # closed before the worker finished (client cancelled or went away)
            cancelled.set()  # the worker stops at its next denoising step and releases the model lock
            thread.join(timeout=CANCEL_JOIN_S)
    thread.join()
    order = {k: i for i, k in enumerate(keys)}
    outcomes.sort(key=lambda o: order[o.key])
    tag = f"{checked.digest[:10]}-{common.seed}-{uuid.uuid4().hex[:12]}"  # unique: outputs never overwritten
    sbs = grid = None
    try:
        sbs, grid = compose(outcomes, ctx.out_dir, common.fps, tag)
    except Exception as exc:  # noqa: BLE001 - the per-stage videos are still shown
        gr.Warning(f"Could not compose the side-by-side video: {exc}")
    prune_outputs(ctx.out_dir, ctx.max_output_files, keep=[sbs, grid] + [o.video for o in outcomes])
    headers, rows = stats_table(outcomes)
    summary = {
        "seed": common.seed, "image_sha256": checked.digest, "accounting": _accounting(),
        "common": {"motion_bucket_id": common.motion_bucket_id, "fps": common.fps,
                   "noise_aug_strength": common.noise_aug_strength},
        "input_notes": checked.notes, "side_by_side": sbs, "frame_grid": grid,
        "stages": [o.public() for o in outcomes],
    }
    state = {"outcomes": [o.public() for o in outcomes]}
    if all(o.status in ("unavailable", "failed") for o in outcomes):
        gr.Warning("No stage produced a video: " + "; ".join(f"{o.key}: {o.reason}" for o in outcomes))
    import pandas as pd

    table = pd.DataFrame(rows, columns=headers)
    yield (progress_board(keys, board, header + " · finished"), sbs, grid, sbs, grid, table,
           summary, common.seed, state)


def example_is_cached(ctx: AppContext, *inputs: Any) -> bool:
    """Whether every stage of this comparison (the Compare tab's inputs, without ``progress``) is in the result
    cache, so that showing it costs nothing."""
    if bool(inputs[4]):  # randomise seed: a new seed is never cached
        return False
    try:
        checked, _, requests, common = compare_requests(ctx, *inputs)
    except gr.Error:
        return False
    return all(cached_outcome(ctx.catalog, ctx.results, checked, r, common) is not None for r in requests)


def warm_examples(ctx: AppContext, seed: int = 0, table: Any = None) -> dict[str, Any]:
    """Generate each example's comparison as the tab opens (its default stages, their default settings -- or
    ``table`` --, the default shared settings and seed), so that clicking an example shows its videos at once.
    Returns what was done and how long it took (the app prints it; the README states it)."""
    keys = [k for k in DEFAULT_STAGES if k in ctx.catalog.entries]
    table = table or {"headers": TABLE_HEADERS, "data": table_rows(ctx, keys)}
    t0 = time.perf_counter()
    done = []
    for name, path in ctx.examples:
        if ctx.stop.is_set():
            break
        for _ in compare_impl(ctx, {"path": path}, keys, table, seed, False, 127, 7, 0.02, None, "blend", 0.5):
            pass
        if example_is_cached(ctx, {"path": path}, keys, table, seed, False, 127, 7, 0.02, None, "blend", 0.5):
            done.append(name)
    return {"examples": done, "stages": keys, "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}


def _remember_timing(ctx: AppContext, key: str, out: StageOutcome) -> None:
    """Seconds per NFE and the rest of the call, as this session measured them for ``key``."""
    s = out.stats or {}
    nfe, unet_s, wall_s = (s.get(k, {}).get("value") for k in ("nfe", "unet_s", "wall_s"))
    if out.status == "done" and nfe and unet_s is not None and wall_s is not None:
        ctx.timings[key] = (float(unet_s) / float(nfe), max(0.0, float(wall_s) - float(unet_s)))


def _estimate(ctx: AppContext, req: StageRequest) -> str:
    """' · est. ~N s' from this session's measured seconds per NFE of the same stage, or '' when not measured."""
    timing = ctx.timings.get(req.key)
    record = ctx.catalog.entries[req.key].record if req.key in ctx.catalog.entries else None
    if timing is None or record is None:
        return ""
    steps = req.steps or record.steps
    cfg = (req.max_guidance if req.max_guidance is not None else record.max_guidance) > 1.0
    nfe = steps * (2 if cfg else 1) if steps > 1 else (2 if cfg else 1)
    return f" · est. ~{timing[0] * nfe + timing[1]:.0f} s ({nfe} NFE x s/NFE measured this session)"


def _follow(events: queue.Queue[tuple[str, dict[str, Any]]], board: dict[str, dict[str, Any]], keys: list[str],
            header: str, progress: Any) -> Iterator[tuple[Any, ...]]:
    """Stream the worker's events as progress-board updates until it reports the end."""
    skip = gr.skip()
    finished = False
    last, last_yield = "", time.monotonic()
    while not finished:
        try:
            key, upd = events.get(timeout=0.3)
            if not key:
                finished = True
            else:
                board[key].update(upd)
            while True:
                key, upd = events.get_nowait()
                if not key:
                    finished = True
                else:
                    board[key].update(upd)
        except queue.Empty:
            pass
        html_now = progress_board(keys, board, header)
        if progress is not None:
            n_done = sum(1 for b in board.values() if b["state"] in ("done", "cached", "unavailable", "failed"))
            running = [k for k in keys if board[k]["state"] in ("loading", "running")]
            desc = f"{running[0]}: {board[running[0]]['text']}" if running else "composing"
            progress((n_done, len(keys)), desc=desc, unit="stages")
        if finished:
            break
        if html_now != last:
            last, last_yield = html_now, time.monotonic()
            yield (html_now, skip, skip, skip, skip, skip, skip, skip, skip)
        elif time.monotonic() - last_yield > HEARTBEAT_S:  # lets the server close (cancel) us promptly
            last_yield = time.monotonic()
            yield (skip,) * 9


def _accounting() -> str:
    from explorer.records import ACCOUNTING

    return ACCOUNTING


def fill_cards(state: dict[str, Any] | None) -> list[Any]:
    """Show one card (video + numbers) per stage of the last comparison."""
    outs = (state or {}).get("outcomes", [])
    updates: list[Any] = []
    for i in range(MAX_STAGES):
        if i < len(outs):
            o = StageOutcome(**{**outs[i], "frames": None})
            updates += [gr.update(visible=True), gr.update(value=card_head(o)),
                        gr.update(value=o.video, label=o.key, visible=o.video is not None),
                        gr.update(value=card_stats(o))]
        else:
            updates += [gr.update(visible=False), gr.update(value=""), gr.update(value=None), gr.update(value="")]
    return updates


# ----------------------------------------------------------------------------------------------------------
# Layout


def _input_panel(ctx: AppContext) -> tuple[Any, ...]:
    """The left column (image, examples, stages, per-stage table, zero-shot knobs, shared conditioning) and the
    right column (what the models see, input notes, the progress board)."""
    cat = ctx.catalog
    choices = [(e.label, e.key) for e in cat.entries.values()]
    default = [k for k in DEFAULT_STAGES if k in cat.entries]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            image = gr.Image(label="Conditioning image", type="filepath", sources=["upload", "clipboard"],
                             height=250, elem_id="mvd-image")
            examples = None
            if ctx.examples:
                examples = gr.Examples(
                    examples=[[p] for _, p in ctx.examples], inputs=[image],
                    example_labels=[n for n, _ in ctx.examples],
                    label="Examples: held-out TEST photographs (scikit-image; never used for training) -- "
                          "cached ones show their videos at once")
            stages = gr.CheckboxGroup(choices=choices, value=default, label="Stages to compare",
                                      info="The compression path in order; --base variants at the end.",
                                      elem_id="mvd-stages")
            with gr.Accordion("Per-stage steps and guidance (editable)", open=True):
                table = gr.Dataframe(value=table_rows(ctx, default), headers=TABLE_HEADERS,
                                     datatype=["str", "number", "number", "number", "str"], type="array",
                                     interactive=True, static_columns=[0, 4], column_count=(5, "fixed"),
                                     row_count=(len(default), "dynamic"), elem_id="mvd-table", show_label=False,
                                     column_widths=["27%", "13%", "17%", "17%", "26%"], wrap=True)
                with gr.Row():
                    all_steps = gr.Number(value=1, precision=0, minimum=1, maximum=500,
                                          label="steps for every selected stage", scale=2, elem_id="mvd-allsteps")
                    apply_steps = gr.Button("Apply to all", scale=1, elem_id="mvd-apply-steps")
                    reset = gr.Button("Stage defaults", scale=1)
            with gr.Accordion("Zero-shot variants of --base (not finetuned)", open=True, visible=bool(cat.base)):
                zs_total = cat.base_temporal_blocks() if cat.base else temporal_block_count("full")
                zs_n = gr.Slider(1, zs_total, value=default_kept(zs_total), step=1,
                                 label=f"temporal pruning: blocks kept (n of the base UNet's {zs_total}; default "
                                       f"{default_kept(zs_total)} = {100 * pruned_fraction():.0f}% pruned)")
                zs_heuristic = gr.Radio(["blend", "structural"], value="blend", label="importance heuristic",
                                        info="blend: rank by the pretrained blend weight (1 - alpha); structural: "
                                             "temporal attention at fine levels first (docs/app.md)")
                zs_r = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="channel funnels: fun-factor r (CSI init)")
            with gr.Accordion("Shared conditioning", open=False):
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed (CPU generator; same noise for every stage)",
                                     minimum=0, elem_id="mvd-seed")
                    randomize = gr.Checkbox(value=False, label="randomise seed")
                motion = gr.Slider(0, 255, value=127, step=1, label="motion bucket id")
                fps = gr.Slider(1, 30, value=7, step=1, label="fps (conditioning and video)")
                noise = gr.Slider(0.0, 0.5, value=0.02, step=0.01, label="noise augmentation")
            go_btn = gr.Button("Generate", variant="primary", elem_id="mvd-generate")
        with gr.Column(scale=6, min_width=360):
            cond = gr.Gallery(label="What the models see (resized, centre-cropped)", columns=3, height=220,
                              object_fit="contain", elem_id="mvd-preview", allow_preview=False)
            cond_text = gr.Markdown("Upload an image or pick an example.", label="input notes")
            board = gr.HTML(progress_board([], {}, "no run yet"), label="progress", elem_id="mvd-board")
            seed_used = gr.Number(label="seed used", interactive=False, precision=0)
    return (image, examples, stages, table, all_steps, apply_steps, reset, zs_n, zs_heuristic, zs_r, seed, randomize,
            motion, fps, noise, go_btn, cond, cond_text, board, seed_used)


def _result_panel() -> tuple[Any, ...]:
    """The result cards (one column per stage, hidden until filled), the side-by-side, downloads and numbers."""
    gr.Markdown("### Results — every number says where it came from (hover a badge)", elem_classes=["mvd-h"])
    sync = gr.Button("▶ Restart all videos in sync", size="sm", elem_id="mvd-sync")
    cards: list[Any] = []
    with gr.Row(elem_id="mvd-cards", equal_height=False):
        for i in range(MAX_STAGES):
            with gr.Column(visible=False, min_width=250, elem_classes=["mvd-card-col"]) as col:
                head = gr.HTML("")
                vid = gr.Video(label=f"stage {i + 1}", show_label=False, autoplay=True, loop=True, height=200,
                               interactive=False, elem_classes=["mvd-video"])
                info = gr.HTML("")
            cards += [col, head, vid, info]
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("**Labelled side-by-side** (one H.264/yuv420p mp4: in sync by construction)")
            sbs = gr.Video(label="side-by-side", show_label=False, autoplay=True, loop=True, interactive=False,
                           elem_id="mvd-sbs")
        with gr.Column(scale=2):
            dl_mp4 = gr.DownloadButton("Download side-by-side mp4", elem_id="mvd-dl-mp4")
            dl_png = gr.DownloadButton("Download frame grid png", elem_id="mvd-dl-png")
            grid = gr.Image(label="Frame grid (every other frame)", type="filepath", interactive=False, height=220)
    stats = gr.Dataframe(label="All numbers (per stage); the source column says where each came from",
                         headers=["quantity", "(the stages, after a run)", "source", "unit"],
                         interactive=False, wrap=True, elem_id="mvd-stats", max_height=1400)
    with gr.Accordion("Raw result (JSON, as the API returns it)", open=False):
        summary = gr.JSON(label="summary")
    return sync, cards, sbs, dl_mp4, dl_png, grid, stats, summary


def build(ctx: AppContext) -> dict[str, Any]:
    """The Compare tab's components and events; returns handles other tabs reuse (image, seed, ...)."""
    (image, examples, stages, table, all_steps, apply_steps, reset, zs_n, zs_heuristic, zs_r, seed, randomize, motion,
     fps, noise, go_btn, cond, cond_text, board, seed_used) = _input_panel(ctx)
    sync, cards, sbs, dl_mp4, dl_png, grid, stats, summary = _result_panel()
    state = gr.State()

    # events
    stages.change(lambda s, t: gr.update(value=table_rows(ctx, s, t)), [stages, table], table,
                  api_visibility="private", queue=False)

    def set_all(n: Any, s: list[str], t: Any) -> Any:
        rows = table_rows(ctx, s, t)
        try:
            steps = max(1, int(float(n)))
        except (TypeError, ValueError):
            raise gr.Error("steps must be a whole number >= 1") from None
        for r in rows:
            r[1] = steps
        return gr.update(value=rows)

    apply_steps.click(set_all, [all_steps, stages, table], table, api_visibility="private", queue=False)
    reset.click(lambda s: gr.update(value=table_rows(ctx, s)), [stages], table, api_visibility="private",
                queue=False)

    def on_preview(image: Any, stages: list[str]) -> tuple[Any, str]:
        """What each selected stage's model will see (resized, centre-cropped) and notes on the input."""
        return preview(ctx, image, stages)

    image.change(on_preview, [image, stages], [cond, cond_text], api_name="preview", preprocess=False,
                 concurrency_limit=4)

    def on_compare(
        image: Any, stages: Any, settings: Any, seed: Any, randomize_seed: Any, motion_bucket_id: Any, fps: Any,
        noise_aug_strength: Any, prune_n: Any, prune_heuristic: Any, fun_factor: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[tuple[Any, ...]]:
        """Generate the selected stages from one image. ``settings``: per-stage overrides as a table
        {"headers": [...], "data": [[stage, steps, min_guidance, max_guidance, ...], ...]} or None for the stage
        defaults. Returns the progress board (HTML), the side-by-side mp4, the frame-grid PNG, the same two files
        as downloads, the stats table, a JSON summary (every number with its source) and the seed used."""
        yield from compare_impl(ctx, image, stages, settings, seed, randomize_seed, motion_bucket_id, fps,
                                noise_aug_strength, prune_n, prune_heuristic, fun_factor, progress)

    compare_inputs = [image, stages, table, seed, randomize, motion, fps, noise, zs_n, zs_heuristic, zs_r]
    compare_outputs = [board, sbs, grid, dl_mp4, dl_png, stats, summary, seed_used, state]

    def on_example(*inputs: Any) -> Iterator[tuple[Any, ...]]:
        """A clicked example: its comparison at once when it is cached (warmed at start-up), else nothing more
        than the image (Generate runs it)."""
        if example_is_cached(ctx, *inputs):
            yield from compare_impl(ctx, *inputs)
        else:
            yield tuple(gr.skip() for _ in compare_outputs)

    if examples is not None and getattr(examples, "load_input_event", None) is not None:
        shown = examples.load_input_event.then(on_example, compare_inputs, compare_outputs, preprocess=False,
                                               api_visibility="private", concurrency_id="gpu",
                                               concurrency_limit=1)
    else:
        shown = None

    ev = go_btn.click(
        on_compare, compare_inputs, compare_outputs, api_name="compare",
        preprocess=False, concurrency_id="gpu", concurrency_limit=1, show_progress_on=[board],
    )
    for event in (ev, shown) if shown is not None else (ev,):
        event.then(fill_cards, [state], cards, api_visibility="private", queue=False).then(
            None, None, None, js=SYNC_JS, api_visibility="private")
    sync.click(None, None, None, js=SYNC_JS, api_visibility="private")
    return {"image": image, "seed": seed, "motion": motion, "fps": fps, "noise": noise, "stages": stages,
            "table": table}
