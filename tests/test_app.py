"""The Gradio app without a browser: stage discovery and precedence, generation and caching, bad input, --base,
defensive record readers, the named API endpoints through gradio_client, and the startup time.

Everything runs micro placeholders at 1 step on one thread; FLOP counts are cached on disk (cache/app)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from app import cards, plots, tab_compare, tab_flops, tab_funnels, tab_gates, tab_latency, tab_tradeoff  # noqa: E402
from app.context import AppContext  # noqa: E402
from app.ui import banner, build_app, launch_kwargs, status_rows  # noqa: E402
from explorer import records as R  # noqa: E402
from explorer import serving as S  # noqa: E402
from explorer import stages as registry  # noqa: E402
from explorer.transforms import pruning_rules as P  # noqa: E402
from explorer.video import video_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS1 = {"headers": tab_compare.TABLE_HEADERS,
          "data": [["svd-512", 1, 1.0, 3.0, ""], ["channel-funnels", 1, 1.0, 1.0, ""]]}



@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> AppContext:
    """Micro placeholders (no stage folder exists in an empty checkpoints folder)."""
    c = AppContext.create(tmp_path_factory.mktemp("empty-ckpt"), placeholders="auto", placeholder_scale="micro")
    yield c
    c.close()


def run_compare(ctx: AppContext, image, stages, table=STEPS1, seed=0):
    *_, last = tab_compare.compare_impl(ctx, image, stages, table, seed, False, 127, 7, 0.02, 11, "blend", 0.5)
    return last


# ----------------------------------------------------------------------------------------------------------
# Discovery


def test_placeholders_are_labelled_and_cover_the_path(ctx: AppContext) -> None:
    keys = ctx.catalog.keys()
    assert keys == list(registry.SLUGS)
    for e in ctx.catalog.entries.values():
        assert e.kind == "placeholder" and e.note == S.PLACEHOLDER_NOTE and e.scale == "micro"
    assert "untrained (random weights) — development placeholder" in banner(ctx)
    assert ctx.catalog.entry("mobilevd").key == "channel-funnels"  # alias
    assert len(status_rows(ctx)) == len(keys)
    assert ctx.examples and all(Path(p).is_file() for _, p in ctx.examples)
    assert {n for n, _ in ctx.examples} <= set(__import__("explorer.data", fromlist=["photos"]).photos("test"))


def test_real_folders_take_precedence_and_broken_ones_say_why(tmp_path: Path) -> None:
    from explorer.components import build_pipeline
    from explorer.pipeline import StageRecord, save_stage

    ck = tmp_path / "ck"
    save_stage(build_pipeline("micro"), ck / "svd-512", StageRecord.from_stage("svd-512", "micro"))
    (ck / "lowres-ft").mkdir(parents=True)
    (ck / "lowres-ft" / "stage.json").write_text("{not json")
    cat = S.StageCatalog(ck, placeholders="auto")
    assert not cat.placeholders  # a stage folder exists: no silent placeholders
    assert cat.entry("svd-512").kind == "trained"
    assert cat.entry("lowres-ft").status == "unavailable" and "broken stage folder" in cat.entry("lowres-ft").reason
    assert "no stage folder" in cat.entry("svd").reason
    pipe, rec = cat.pipeline("svd-512")
    assert rec.slug == "svd-512" and cat.entry("svd-512").status == "ready"
    with pytest.raises(RuntimeError, match="unavailable"):
        cat.pipeline("lowres-ft")
    both = S.StageCatalog(ck, placeholders="all", placeholder_scale="micro")
    assert both.entry("svd-512").kind == "trained" and both.entry("svd").kind == "placeholder"
    assert both.entry("lowres-ft").status == "unavailable"  # broken stays broken, never replaced
    # a broken weights file is found at load time and reported, the rest keeps working
    bad = tmp_path / "ck2"
    save_stage(build_pipeline("micro"), bad / "svd", StageRecord.from_stage("svd", "micro"))
    weights = bad / "svd" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cat2 = S.StageCatalog(bad)
    with pytest.raises(RuntimeError, match="safetensors"):
        cat2.pipeline("svd")
    assert cat2.entry("svd").status == "unavailable" and "safetensors" in cat2.entry("svd").reason


# ----------------------------------------------------------------------------------------------------------
# Generation, caching, outputs


def test_compare_two_stages_outputs_and_cache(ctx: AppContext, photo: str) -> None:
    board, sbs, grid, dl_mp4, dl_png, stats, summary, seed, state = run_compare(ctx, photo, ["channel-funnels",
                                                                                            "svd-512"])
    assert "finished" in board and seed == 0
    info = video_info(sbs)
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 14)
    assert Path(grid).is_file() and Image.open(grid).format == "PNG" and dl_mp4 == sbs and dl_png == grid
    stages = summary["stages"]
    assert [s["key"] for s in stages] == ["svd-512", "channel-funnels"]  # path order, not click order
    for s in stages:
        assert s["status"] == "done" and video_info(s["video"]).codec == "h264"
        st = s["stats"]
        assert st["nfe"]["value"] == (2 if s["key"] == "svd-512" else 1)  # CFG doubles svd-512's one step
        assert st["tflops_clip_gen"]["value"] == pytest.approx(st["nfe"]["value"] * st["tflops_nfe_gen"]["value"])
        assert st["tflops_nfe_paper"]["value"] == registry.get_stage(s["key"]).paper.tflops
        for item in st.values():  # every number carries a source
            assert item["source"].split(" ")[0] in ("measured", "paper", "estimate", "setting")
    assert stats.columns[-2:].tolist() == ["source", "unit"]
    assert "per NFE" in summary["accounting"] and "2 x MAC" in summary["accounting"]
    cards = tab_compare.fill_cards(state)
    assert len(cards) == 4 * S.MAX_STAGES and cards[0]["visible"] is True and cards[8]["visible"] is False
    assert "untrained (random weights)" in cards[1]["value"]
    start = time.perf_counter()
    *_, summary2, _, _ = run_compare(ctx, photo, ["svd-512", "channel-funnels"])
    assert time.perf_counter() - start < 5
    assert [s["status"] for s in summary2["stages"]] == ["cached", "cached"]
    *_, summary3, seed3, _ = run_compare(ctx, photo, ["svd-512"], seed=1)
    assert summary3["stages"][0]["status"] == "done" and seed3 == 1  # another seed is another result


def test_preview_shows_what_the_model_sees(ctx: AppContext, photo: str) -> None:
    items, text = tab_compare.preview(ctx, {"path": photo}, ["svd", "channel-funnels"])
    sizes = sorted(Image.open(p).size for p, _ in items)
    assert sizes == [(128, 64), (256, 144)]  # micro placeholders: svd at 256x144, mobilevd at 128x64
    assert "160x90" in text


def _png_with_header_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression bomb; never decoded)."""
    raw = zlib.compress(b"\x00" * 4)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


@pytest.mark.hardening
def test_bad_input_gets_a_clear_message(ctx: AppContext, tmp_path: Path, photo: str) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(Path(photo).read_bytes()[:300])
    huge = tmp_path / "huge.png"
    _png_with_header_size(huge, 9000, 9000)  # 81 MP: above the library's 64 MP limit
    bomb = tmp_path / "bomb.png"
    _png_with_header_size(bomb, 20000, 20000)  # 400 MP: PIL's own decompression-bomb guard
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    cases = {str(text): "not a readable image", str(corrupt): "corrupt|truncated|not a readable",
             str(huge): "too large", str(bomb): "decompression bomb", str(tiny): "too small", None: "no image"}
    for value, pattern in cases.items():
        with pytest.raises(gr.Error, match=pattern):
            run_compare(ctx, {"path": value} if value else None, ["svd-512"])
        if value:
            with pytest.raises(gr.Error, match=pattern):
                tab_compare.preview(ctx, {"path": value}, ["svd-512"])
    gray = tmp_path / "gray.png"
    Image.fromarray(np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8), "L").save(gray)
    alpha = tmp_path / "alpha.png"
    Image.new("RGBA", (64, 48), (10, 20, 30, 0)).save(alpha)
    assert "grayscale" in tab_compare.preview(ctx, {"path": str(gray)}, ["svd-512"])[1]
    assert "transparency" in tab_compare.preview(ctx, {"path": str(alpha)}, ["svd-512"])[1]
    with pytest.raises(gr.Error, match="at least one stage"):
        run_compare(ctx, photo, [])
    with pytest.raises(gr.Error, match="unknown stage"):
        run_compare(ctx, photo, ["nope"])
    with pytest.raises(gr.Error, match="not a number"):
        run_compare(ctx, photo, ["svd-512"], table=[["svd-512", "many", 1, 3]])
    *_, summary, _, _ = run_compare(ctx, photo, ["svd-512"], table=[["svd-512", 1, 3.0, 1.0]])
    assert summary["stages"][0]["status"] == "failed" and "guidance" in summary["stages"][0]["reason"]


def test_reprune_beside_the_trained_stage(ctx: AppContext, photo: str) -> None:
    sbs, cards = tab_gates.reprune_impl(ctx, {"path": photo}, 5, 0, 127, 7, 0.02)
    assert video_info(sbs).codec == "h264"
    assert "re-pruned to 5 blocks" in cards and "untrained (random weights)" in cards
    out = S.run_stage(ctx.catalog, ctx.flops, ctx.results, ctx.out_dir, S.check_image(photo),
                      S.StageRequest("temporal-multiscale", steps=1), S.Common())
    pipe, rec = ctx.catalog.repruned("temporal-multiscale", [0, 1, 2, 3, 4])
    re_out = S.run_stage(ctx.catalog, ctx.flops, ctx.results, ctx.out_dir, S.check_image(photo),
                         S.StageRequest("temporal-multiscale", steps=1, params={"repruned": [0, 1, 2, 3, 4]}),
                         S.Common(), pipe_record=(pipe, rec))
    assert re_out.stats["tflops_nfe_full"]["value"] < out.stats["tflops_nfe_full"]["value"]
    assert re_out.stats["tflops_nfe_paper"]["value"] is None  # n=5 is not a paper configuration


def test_a_repruned_model_does_not_show_its_parents_metrics(tmp_path: Path, photo: str) -> None:
    """Issue 15: the re-pruned card showed temporal-multiscale's FVD-proxy, badged measured."""
    from explorer.components import build_pipeline
    from explorer.pipeline import StageRecord, save_stage
    from explorer.transforms import apply_transforms

    ck = tmp_path / "ck"
    pipe = build_pipeline("micro")
    rec = StageRecord.from_stage("temporal-multiscale", "micro", steps=1)
    pipe.unet = apply_transforms(pipe.unet, list(rec.transforms))
    save_stage(pipe, ck / "temporal-multiscale", rec)
    (ck / "temporal-multiscale" / "metrics.json").write_text(json.dumps(
        {"stage": "temporal-multiscale", "clips": 64, "fvd_proxy": 17.11, "first_frame_psnr": 20.5,
         "consecutive_psnr": 27.7, "motion_spearman": 0.25}))
    record = json.loads((ck / "temporal-multiscale" / "stage.json").read_text())
    record["extra"]["base"] = "session 4: the first tiny base"  # a stage from an earlier base says so on its card
    (ck / "temporal-multiscale" / "stage.json").write_text(json.dumps(record))
    c = AppContext.create(ck, placeholders="off")
    try:
        img = S.check_image(photo)
        own = S.run_stage(c.catalog, c.flops, c.results, c.out_dir, img, S.StageRequest("temporal-multiscale"),
                          S.Common())
        assert own.stats["fvd_proxy"]["value"] == 17.11
        # beside the result: a tiny (here micro) model, its size and how it was trained (issue 15 gap)
        assert "micro model trained here (128x64, 14 frames" in cards.card_html(own)
        assert "Base: session 4: the first tiny base." in own.stats["model"]["value"]
        assert own.stats["consecutive_psnr"]["value"] == 27.7
        assert "consecutive-frame PSNR (dB; flicker)" in [r[0] for r in cards.stats_table([own])[1]]
        # where the clip's time went, beside the UNet time (issue 16 item 3)
        card = cards.card_html(own)
        assert "wall / UNet" in card and "time split (s)" in card and "VAE decode" in card
        assert own.stats["wall_over_unet"]["value"] >= 1.0
        kept = [0, 1, 2, 3, 4]
        re_out = S.run_stage(c.catalog, c.flops, c.results, c.out_dir, img,
                             S.StageRequest("temporal-multiscale", params={"repruned": kept}), S.Common(),
                             pipe_record=c.catalog.repruned("temporal-multiscale", kept))
        assert re_out.status == "done" and "fvd_proxy" not in re_out.stats
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------------------
# --base (offline: a micro pipeline saved in the hub layout)


def test_base_pipeline_variants_offline(tmp_path: Path, photo: str) -> None:
    from explorer.components import build_pipeline

    hub = tmp_path / "svd-hub"
    build_pipeline("micro").save_pretrained(hub)
    c = AppContext.create(tmp_path / "ck", base=str(hub), placeholders="off")
    try:
        assert [k for k in c.catalog.keys() if k.startswith("base/")] == [
            "base/svd", "base/svd-512", "base/optimized-xattn", "base/prune-zs", "base/funnels-zs"]
        assert "not finetuned" in banner(c)
        assert c.catalog.base_temporal_blocks() == 38  # from the hub folder's unet/config.json, nothing loaded
        table = [[k, 1, 1.0, 1.0, ""] for k in ("base/svd-512", "base/prune-zs", "base/funnels-zs")]
        with pytest.raises(gr.Error, match="1..38"):
            next(tab_compare.compare_impl(c, photo, ["base/prune-zs"], table, 0, False, 127, 7, 0.02, 39, "blend",
                                          0.5))
        *_, last = tab_compare.compare_impl(
            c, photo, ["base/svd-512", "base/prune-zs", "base/funnels-zs", "svd"], table, 0, False, 127, 7, 0.02, 5,
            "blend", 0.5)
        summary = last[6]
        by = {s["key"]: s for s in summary["stages"]}
        for key in ("base/svd-512", "base/prune-zs", "base/funnels-zs"):
            assert by[key]["status"] == "done", by[key]["reason"]
            assert "not finetuned" in by[key]["note"]
            assert by[key]["stats"]["tflops_nfe_full"]["value"] is not None
        assert by["base/prune-zs"]["stats"]["tflops_nfe_paper"]["value"] is None  # not a paper configuration
        assert by["base/funnels-zs"]["stats"]["tflops_nfe_full"]["value"] < \
            by["base/svd-512"]["stats"]["tflops_nfe_full"]["value"]
        assert by["svd"]["status"] == "unavailable" and "no stage folder" in by["svd"]["reason"]
        unet = c.catalog.pipeline("base/svd")[0].unet
        assert P.zero_shot_kept(unet, 5, "blend") == P.zero_shot_kept(unet, 5, "structural")  # ties -> structural
        with torch.no_grad():
            for info in __import__("explorer.transforms.temporal_gates", fromlist=["x"]).temporal_blocks(unet):
                mixer = dict(unet.named_modules())[info.mixer_path]
                mixer.mix_factor.fill_(-3.0 if info.index in (2, 30) else 3.0)  # 2 and 30 mix in the most
        assert P.zero_shot_kept(unet, 2, "blend") == [2, 30]
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------------------
# Records written by others


def test_records_are_read_defensively(tmp_path: Path) -> None:
    ck = tmp_path
    lat = ck / "latency"
    lat.mkdir()
    (lat / "a.json").write_text(json.dumps({"stage": "mobilevd", "device": "Xiaomi 14 Pro", "median_ms": "1780.5",
                                            "status": "PASSED", "peak_memory": [100, 200],
                                            "source": "measured here: qnn"}))
    (lat / "b.json").write_text(json.dumps({"records": [{"stage": "svd", "status": "oom", "median_ms": None},
                                                        "junk"]}))
    (lat / "c.json").write_text("{broken")
    rows, problems = R.read_latency(ck)
    assert [r["status"] for r in rows] == ["passed", "oom"] and rows[0]["median_ms"] == 1780.5
    assert rows[0]["peak_memory"] == "100-200 MB" and len(problems) == 2
    table, fig, note = tab_latency.rows_view(type("C", (), {"checkpoints": ck})())
    assert len(table) == 2 + len(R.paper_latency_rows()) and "Not shown" in note
    assert any(r["status"] == "oom" and r["source"].startswith("paper") for r in R.paper_latency_rows())

    (ck / "svd").mkdir()
    (ck / "svd" / "metrics.json").write_text(json.dumps({"stage": "svd", "nfe": 50, "clips": 64, "fvd_proxy": "NaN"}))
    m = R.read_metrics(ck / "svd")
    assert m["ok"] is False and "fvd_proxy" in m["reason"]
    (ck / "svd" / "metrics.json").write_text(json.dumps({"stage": "svd", "nfe": 50, "clips": 64, "fvd_proxy": 1.5,
                                                         "baselines": [{"stage": "baseline-static",
                                                                        "fvd_proxy": 3}]}))
    assert R.read_metrics(ck / "svd")["ok"] and R.all_metrics(ck)[0][0]["baselines"][0]["fvd_proxy"] == 3

    assert not R.read_gates(ck).ok and "no gates file" in R.read_gates(ck).reason
    tp = ck / "temporal-pruning"
    tp.mkdir()
    (tp / "gates.json").write_text(json.dumps({"importance": [0.1] * 5}))
    assert not R.read_gates(ck).ok
    q = [float(i % 7) for i in range(38)]
    (tp / "gates.json").write_text(json.dumps({"n": 11, "importance": q, "history": [
        {"step": 0, "importance": [0.0] * 38}, {"step": 10, "probabilities": [11 / 38] * 38}, {"step": "x"}]}))
    g = R.read_gates(ck)
    assert g.ok and len(g.kept) == 11 and sum(g.probabilities) == pytest.approx(11, abs=1e-6)
    assert [h["step"] for h in g.history] == [0, 10]
    assert set(g.kept) == set(sorted(range(38), key=lambda i: (-q[i], i))[:11])
    assert g.total == 38 and g.scale == "full"  # inferred from the list lengths; full and micro share the layout
    assert not R.read_gates(ck, total=33).ok and "33" in R.read_gates(ck, total=33).reason

    # the file explorer.training.path writes (tiny UNet: 33 temporal blocks, 'probability', 'blocks', 'kept')
    layout = P.temporal_layout("tiny")
    assert len(layout) == P.temporal_block_count("tiny") == 33 and P.default_kept(33) == 10
    q = [float((5 * i) % 33) for i in range(33)]
    kept = sorted(sorted(range(33), key=lambda i: -q[i])[:10])
    rec = {"kept": kept, "n": 10, "total": 33, "pruned_fraction": 0.7, "importance": q,
           "probability": [10 / 33] * 33, "blocks": layout,
           "history": [{"step": s, "importance": q, "probability": [10 / 33] * 33} for s in (0, 5)],
           "scheme": "p = projection of sigmoid(q)"}
    (tp / "gates.json").write_text(json.dumps(rec))
    g = R.read_gates(ck)
    assert g.ok, g.reason
    assert (g.total, g.n, g.kept, g.scale, g.pruned_fraction) == (33, 10, kept, "tiny", 0.7)
    assert g.probabilities == [10 / 33] * 33 and len(g.blocks) == 33 and g.scheme.startswith("p =")
    assert [h["step"] for h in g.history] == [0, 5] and g.history[1]["probabilities"] == [10 / 33] * 33
    for bad, match in (({"total": 38}, "38"), ({"kept": [0, 33]}, "0..32"), ({"blocks": layout[:5]}, "33"),
                       ({"probability": [0.5] * 38}, "probabilities"), ({"blocks": [{"index": 3}]}, "blocks")):
        (tp / "gates.json").write_text(json.dumps({**rec, **bad}))
        assert not R.read_gates(ck).ok and match in R.read_gates(ck).reason, (bad, R.read_gates(ck).reason)
    (tp / "gates.json").write_text(json.dumps({"importance": q, "pruned_fraction": 0.7}))  # n from the fraction
    g = R.read_gates(ck)
    assert g.ok and g.n == 10 and g.kept == kept and g.scale == "tiny"

    ab = ck / "ablations"
    ab.mkdir()
    (ab / "t4.json").write_text(json.dumps([{"table": "Table 4", "label": "CSI r=0.5", "fvd_proxy": 1.2,
                                             "config": {"init": "csi"}}, {"nolabel": 1}]))
    rows, problems = R.read_ablations(ck)
    assert rows[0]["label"] == "CSI r=0.5" and len(problems) == 1
    joined = R.ablation_comparison("Table 4", rows)  # paper rows joined by label with the project's
    csi = next(r for r in joined if r["label"] == "CSI r=0.5")
    assert csi["paper_fvd"] == 132 and csi["fvd_proxy"] == 1.2
    assert {r["label"] for r in joined} == {r.label for r in registry.ablation_rows("Table 4")}
    assert R.ablation_comparison("Table 6", rows)[0].get("fvd_proxy") is None  # another table's record


def test_trained_gates_and_measured_points_are_shown(tmp_path: Path) -> None:
    from explorer.components import build_pipeline
    from explorer.pipeline import StageRecord, save_stage

    ck = tmp_path / "ck"
    save_stage(build_pipeline("micro"), ck / "svd-512", StageRecord.from_stage("svd-512", "micro", steps=2))
    (ck / "svd-512" / "metrics.json").write_text(json.dumps({
        "stage": "svd-512", "nfe": 4, "clips": 64, "fvd_proxy": 2.5, "first_frame_psnr": 20.0,
        "motion_spearman": 0.1, "baselines": [{"stage": "baseline-static", "fvd_proxy": 4.0, "width": 128,
                                               "height": 64},
                                              # as scripts/evaluate.py writes them
                                              {"stage": "baseline-untrained", "fvd_proxy": 9.0,
                                               "resolution": "256x144"}]}))
    (ck / "temporal-pruning").mkdir()
    q = [float((7 * i) % 38) for i in range(38)]
    (ck / "temporal-pruning" / "gates.json").write_text(json.dumps(
        {"n": 11, "importance": q, "history": [{"step": s, "importance": [v * s / 10 for v in q]} for s in range(3)]}))
    c = AppContext.create(ck, placeholders="off")
    try:
        view = tab_gates.gate_view(c)
        assert view["trained"] and view["order"][:11] == sorted(range(38), key=lambda i: (-q[i], i))[:11]
        structure, curve, live = tab_gates.slider_view(c, 11)
        assert "trained gates" in live and "measured here" in live
        assert "measured here" in tab_gates.intro_md(c)
        # the file is named inside the checkpoints folder, never by the server's absolute path
        assert "`temporal-pruning/gates.json`" in tab_gates.intro_md(c) and str(ck) not in tab_gates.intro_md(c)
        assert str(ck) not in view["source"]
        pts, base, probs, scale = tab_tradeoff.project_points(c)
        assert [p["stage"] for p in pts] == ["svd-512"] and pts[0]["fvd_proxy"] == 2.5 and pts[0]["nfe"] == 4
        assert pts[0]["x"] == pytest.approx(4 * pts[0]["tflops_nfe"]) and base[0]["stage"] == "baseline-static"
        fig = plots.tradeoff_project(pts, base, scale)
        assert fig.data and any(r[1] == "project (tiny)" for r in tab_tradeoff.table(pts))
        # numbered markers named in the legend (stage names printed beside close points overlapped)
        assert [t.name for t in fig.data[1:]] == ["1 svd-512"] and list(fig.data[1].text) == ["1"]
        labels = sorted(a.text for a in fig.layout.annotations)
        assert labels == ["baseline-static (128x64)", "baseline-untrained (256x144)"]  # was "(NonexNone)"
        assert len({a.yanchor for a in fig.layout.annotations} | {a.xanchor for a in fig.layout.annotations}) > 2
    finally:
        c.close()


def test_tiny_gates_use_the_tiny_layout(tmp_path: Path) -> None:
    """Gates trained on the tiny UNet (33 temporal blocks) drive the tab at 33, the FLOPs mapped by module path."""
    ck = tmp_path / "ck"
    (ck / "temporal-pruning").mkdir(parents=True)
    layout = P.temporal_layout("tiny")
    q = [float((5 * i) % 33) for i in range(33)]
    top = sorted(range(33), key=lambda i: (-q[i], i))
    (ck / "temporal-pruning" / "gates.json").write_text(json.dumps(
        {"kept": sorted(top[:10]), "n": 10, "total": 33, "pruned_fraction": 0.7, "importance": q, "blocks": layout,
         "history": [{"step": 0, "importance": q, "probability": [10 / 33] * 33}]}))
    c = AppContext.create(ck, placeholders="off")
    try:
        view = tab_gates.gate_view(c)
        assert view["trained"] and (view["total"], view["n"], view["scale"]) == (33, 10, "tiny")
        assert view["order"][:10] == top[:10]
        structure, curve, live = tab_gates.slider_view(c, 40)  # clamped to the 33 blocks
        assert "Keep 33 of 33" in live and "0% pruned" in live
        structure, curve, live = tab_gates.slider_view(c, 10)
        assert "Keep 10 of 33" in live and "of the tiny UNet" in live and "counted as pruned" in live
        assert "Default n = 10" in live and len(structure.data) > 0
        # issue 15: the trained n reads the same full-scale number as the Compare card and the FLOPs tab (one rule)
        card = c.flops.stage("temporal-pruning", "full")["tflops"]
        assert f"**{card:.3f} TFLOPs per NFE** at full scale" in live and "default 11 of 38 blocks" in live
        marker = next(t for t in curve.data if t.name == "n = 10")  # the cost plot marks the same number
        assert marker.y[0] == pytest.approx(card, abs=5e-4)
        assert not any(d.name == "paper (Table 6)" and len(d.x) for d in curve.data)  # paper rows are SVD's 38
    finally:
        c.close()
    with pytest.raises(gr.Error, match="0..32"):
        tab_flops._kept("0,33", P.temporal_block_count("tiny"))
    assert tab_flops._kept("0,37", P.temporal_block_count("full")) == [0, 37]


def test_tab_views_with_and_without_records(ctx: AppContext, tmp_path: Path) -> None:
    text, curve, summary, table = tab_funnels.view(ctx, 0.5, "full")
    assert "TFLOPs per NFE" in text and {r[0] for r in summary} == {"spatial", "temporal", "cross"}
    with pytest.raises(gr.Error):
        tab_funnels.view(ctx, 1.5, "full")
    structure, cost, live = tab_gates.slider_view(ctx, 11)
    assert "Keep 11 of 38" in live and "estimate" in live
    res = tab_flops.count(ctx, "mobilevd", "full", 0, 0, 0, "")
    assert res["stage"] == "channel-funnels" and abs(res["tflops"] - 4.34) / 4.34 < 0.05
    assert "paper" in tab_flops.summary_md(res) and "% here" in tab_flops.summary_md(res)
    big = tab_flops.count(ctx, "mobilevd", "full", 1024, 576, 0, "")
    assert "%" not in tab_flops.summary_md(big) and "no comparison at 1024x576x14" in tab_flops.summary_md(big)
    with pytest.raises(gr.Error, match="multiple|VAE"):
        tab_flops.count(ctx, "svd", "full", 1001, 0, 0, "")
    with pytest.raises(gr.Error, match="not a pruned stage"):
        tab_flops.count(ctx, "svd", "full", 0, 0, 0, "1,2")
    csv_path = tab_flops.write_csv(ctx, res)
    assert Path(csv_path).read_text().splitlines()[0].startswith("stage,scale,width")
    # the diff applies typed kept blocks to both pruned stages (it applied them to one side only)
    with gr.Blocks():
        handlers = tab_flops.build(ctx)
    on_count = handlers["count"][0]
    calls: list[tuple] = []
    real_count = tab_flops.count

    def spy(*args: object) -> dict:
        calls.append(args[1:])
        return real_count(*args)

    tab_flops.count = spy
    try:
        out = on_count("channel-funnels", "full", 0, 0, 0, "0,1,2", "treemap", "temporal-pruning",
                       progress=lambda *a, **k: None)
    finally:
        tab_flops.count = real_count
    assert [c[0] for c in calls] == ["channel-funnels", "temporal-pruning"]
    assert calls[1][-1] == "0,1,2" and "`[0, 1, 2]`" in out[0] and out[2].data
    pts, base, probs, scale = tab_tradeoff.project_points(ctx)
    assert pts == [] and len(tab_tradeoff.table(pts)) == len(registry.STAGES) + 4


def test_funnels_tab_shows_only_funnel_ablations(tmp_path: Path) -> None:
    """Tables 4/5 records on the Funnels tab (Table 4 alone in the CSI vs He plot); Table 3/6 records stay on the
    Ablations tab."""
    from app import tab_ablations

    ck = tmp_path / "ck"
    (ck / "ablations").mkdir(parents=True)
    recs = [{"table": "Table 4", "label": "He init r=0.5", "config": {"init": "he", "fun_factor": 0.5}, "fvd_proxy": 2},
            {"table": "Table 5", "label": "funnels merged before finetuning",
             "config": {"method": "funnels_merged_early", "init": "csi", "fun_factor": 0.5}, "fvd_proxy": 3},
            {"table": "Table 6", "label": "learned gates, 70% pruned", "config": {"method": "gates"}, "fvd_proxy": 4},
            {"table": "Table 3", "label": "temporal only", "config": {"temporal_factor": 2}, "fvd_proxy": 5}]
    (ck / "ablations" / "all.json").write_text(json.dumps(recs))
    small = AppContext.create(ck, placeholders="auto", placeholder_scale="micro")
    try:
        fig, rows, note = tab_funnels.ablation_view(small)
        project_labels = {r[1] for r in rows if r[-1] != "paper"}
        assert project_labels == {"He init r=0.5", "funnels merged before finetuning"} and not note
        plotted = {x for tr in fig.data if tr.xaxis == "x2" for x in tr.x}
        assert plotted == {"He init r=0.5"}
        fig6, grid6, note6 = tab_ablations.view(small, "Table 6")
        assert "learned gates, 70% pruned" in {r[0] for r in grid6} and "Table 6" in note6
    finally:
        small.close()


# ----------------------------------------------------------------------------------------------------------
# The real server: named endpoints through gradio_client, and startup time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_named_endpoints_with_gradio_client(tmp_path: Path, photo: str) -> None:
    from gradio_client import Client, handle_file

    demo = build_app(str(tmp_path / "empty"), placeholder_scale="micro", warm_flops=False)
    port = _free_port()
    kwargs = launch_kwargs(demo.mvd_context.out_dir)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
        assert {"/compare", "/preview", "/flops", "/flops_path", "/gates", "/reprune", "/funnels", "/tradeoff",
                "/ablations", "/latency", "/stages"} <= names
        _plot, abl_rows, abl_note = client.predict("Table 6", api_name="/ablations")
        assert "Table 6" in abl_note and len(abl_rows["data"]) == len(registry.ablation_rows("Table 6"))
        stages = client.predict(api_name="/stages")
        assert {s["key"] for s in stages} == set(registry.SLUGS)
        out = client.predict(handle_file(photo), ["svd-512", "channel-funnels"], STEPS1, 3, False, 127, 7, 0.02,
                             11, "blend", 0.5, api_name="/compare")
        board, sbs, grid, dl_mp4, dl_png, stats, summary, seed = out
        assert seed == 3 and video_info(sbs).codec == "h264" and Path(grid).is_file()
        assert [s["status"] for s in summary["stages"]] == ["done", "done"]
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        with pytest.raises(Exception, match="not a readable image"):
            client.predict(handle_file(str(bad)), ["svd-512"], None, 0, False, 127, 7, 0.02, 11, "blend", 0.5,
                           api_name="/compare")
        lat = client.predict(api_name="/latency")
        assert len(lat[0]["data"]) == len(R.paper_latency_rows())
        summary_md, *_ = client.predict("mobilevd", "full", 0, 0, 0, "", "treemap", "temporal-pruning",
                                        api_name="/flops")
        assert "TFLOPs per NFE" in summary_md
        # the server survived bad input and still answers
        assert client.predict(api_name="/stages")
    finally:
        demo.close()
        demo.mvd_context.close()


def test_startup_is_fast(tmp_path: Path) -> None:
    """`python app.py` serves its page well within 20 s (imports dominate; stages load in the background)."""
    port = _free_port()
    env = {**os.environ, "MOBILEVD_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoints",
                             str(tmp_path / "empty"), "--placeholder-scale", "micro", "--no-warmup"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        elapsed = None
        while time.perf_counter() - start < 90:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        elapsed = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.25)
            assert proc.poll() is None, "the app exited during startup"
        assert elapsed is not None, "no page within 90 s"
        print(f"startup: {elapsed:.1f} s")
        # 20 s on an idle 2-core CPU with room to spare; a loaded CI machine gets 1.5x
        assert elapsed < 30, f"startup took {elapsed:.1f} s"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_tiny_pruning_is_costed_at_full_scale_by_the_one_rule() -> None:
    """A stage pruned on the tiny UNet (33 temporal blocks) records tiny indices, which have no full-scale
    counterpart; its full-scale cost is the documented default (11 of 38), the number every tab, the README and
    ``python -m explorer.flops`` show (issue 15: Compare's cards said 3.458 TFLOPs for mobilevd, the rest 4.247)."""
    from explorer.flops import stage_flops

    tiny, full = P.temporal_layout("tiny"), P.temporal_layout("full")
    assert (len(tiny), len(full)) == (33, 38)
    kept = [0, 1, 2, 3, 27, 28, 29, 30, 31, 32]
    chain = [t if t.name != "temporal_pruning" else
             registry.Transform(t.name, {**t.params, "kept": 10, "total": 33, "blocks": kept})
             for t in registry.architecture_transforms("temporal-pruning")]  # as the trained stage records them
    mapped, note = P.transforms_for_scale(chain, "full")
    pruning = next(t for t in mapped if t.name == "temporal_pruning")
    assert not {"total", "blocks", "kept"} & set(pruning.params) and "default 11 of 38" in note
    assert P.transforms_for_scale(chain, "tiny") == (chain, "")  # same scale: unchanged
    card = stage_flops("temporal-pruning", "full", transforms=mapped).tflops
    assert card == pytest.approx(stage_flops("temporal-pruning", "full").tflops, rel=1e-9)


def test_flop_counting_does_not_wait_for_a_running_generation(tmp_path: Path) -> None:
    """Issue 15: Count FLOPs took 284 s while an svd comparison held the one work lock. Counting now runs in its
    own process: with the work lock held (a generation in progress), a fresh count still returns."""
    import threading
    import time

    work = S.WorkLock()
    service = S.FlopsService(work, cache_dir=tmp_path / "cache")
    held, release = threading.Event(), threading.Event()

    def generation() -> None:
        with work.foreground():
            held.set()
            release.wait(120)

    t = threading.Thread(target=generation, daemon=True)
    t.start()
    held.wait(10)
    try:
        start = time.perf_counter()
        res = service.stage("svd-512", "full", 256, 128, 4)  # not cached: counted now, in the counting process
        elapsed = time.perf_counter() - start
        assert res["tflops"] > 0 and service.isolated
        assert elapsed < 60, f"{elapsed:.1f} s"  # process start + one meta-device count; blocked forever before
        start = time.perf_counter()
        service.stage("temporal-pruning", "tiny")
        assert time.perf_counter() - start < 30  # the process is warm now
    finally:
        release.set()
        t.join(10)
        service.close()


def test_a_generation_pauses_its_steps_while_someone_waits_for_a_flop_count() -> None:
    """Issue 15 bug 4 on a 2-core CPU: the count had its own process but shared the cores with a 50-step run
    (11 s instead of ~2). A generation now waits between denoising steps while an interactive count runs."""
    import threading

    work = S.WorkLock()
    steps: list[tuple[float, bool]] = []  # (time, whether a count was running) at each step
    counting = threading.Event()

    def generation() -> None:
        with work.foreground():
            for _ in range(40):
                work.yield_to_interactive()
                steps.append((time.perf_counter(), counting.is_set()))
                time.sleep(0.01)

    with work.interactive():
        counting.set()
        t = threading.Thread(target=generation, daemon=True)
        t.start()
        time.sleep(0.6)
        assert not steps, "the generation stepped while a count was running"
        counting.clear()
    t.join(10)
    assert len(steps) == 40 and not any(during for _, during in steps)
    # without a count nothing waits
    assert work.yield_to_interactive() < 0.05


def test_board_says_queued_behind_another_run(ctx: AppContext, photo: str) -> None:
    """Issue 15: a second tab's board said "svd: loading model" while it waited for another run's lock."""
    import threading

    held, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with ctx.catalog.work.foreground():
            held.set()
            release.wait(60)

    t = threading.Thread(target=other_run, daemon=True)
    t.start()
    held.wait(10)
    assert ctx.catalog.work.busy()
    gen = tab_compare.compare_impl(ctx, {"path": photo}, ["mobilevd"], None, 3, False, 127, 7, 0.02, 11, "blend",
                                   0.5)
    try:
        seen = ""
        for _ in range(20):
            seen = next(gen)[0]
            if "queued behind another run" in seen:
                break
        assert "queued behind another run" in seen
    finally:
        release.set()
        t.join(10)
        for _ in gen:  # let the comparison finish now that the lock is free
            pass
    assert not ctx.catalog.work.busy()


def test_board_estimates_time_from_this_sessions_runs(ctx: AppContext, photo: str) -> None:
    """Issue 15 gap: an estimated time per stage before the run (from measured seconds per NFE) and during it."""
    run_compare(ctx, {"path": photo}, ["mobilevd"], seed=11)
    assert "channel-funnels" in ctx.timings and ctx.timings["channel-funnels"][0] > 0
    first = next(tab_compare.compare_impl(ctx, {"path": photo}, ["mobilevd"], STEPS1, 12, False, 127, 7, 0.02, 11,
                                          "blend", 0.5))[0]
    assert "est. ~" in first and "measured this session" in first


def test_latency_and_ablation_plots_read_as_they_should() -> None:
    """Issue 15: tiny-CPU records and the paper's full-scale numbers shared one axis; ablation bars from 0 hid
    differences of a few tenths."""
    rows = [{"stage": "svd-512", "median_ms": 125.0, "device": "cpu", "runtime": "torch", "precision": "fp32",
             "scale": "tiny", "source": "measured here: scripts/benchmark.py"},
            {"stage": "channel-funnels", "median_ms": 1780.0, "device": "Galaxy S24", "runtime": "qnn",
             "precision": "w8a16", "scale": "full", "source": "paper, Table 2"}]
    fig = plots.latency(rows)
    axes = {tr.xaxis for tr in fig.data}
    assert axes == {"x", "x2"}  # one panel each
    by_axis = {tr.xaxis: tr.name for tr in fig.data}
    assert "measured" in by_axis["x"] and "paper" in by_axis["x2"]
    recs = [{"label": "a", "fvd_proxy": 20.1}, {"label": "b", "fvd_proxy": 20.5}]
    bars = plots.ablation_bars("Table 5", recs)
    lo, hi = bars.layout.yaxis2.range
    assert 15 < lo < 20.1 and hi > 20.5


def test_examples_are_cached_at_start_up_and_shown_at_once(tmp_path: Path) -> None:
    """issue 17: ``warm_examples`` generates each example's default comparison; clicking that example then costs
    nothing (every stage served from the cache), while other settings are left to Generate."""
    c = AppContext.create(tmp_path / "empty", placeholders="auto", placeholder_scale="micro")
    try:
        c.examples = c.examples[:1]
        name, path = c.examples[0]
        keys = [k for k in tab_compare.DEFAULT_STAGES if k in c.catalog.entries]
        rows = tab_compare.table_rows(c, keys)
        for row in rows:
            row[1] = 1  # one step each: the default 50 are the app's business, not this test's
        table = {"headers": tab_compare.TABLE_HEADERS, "data": rows}
        inputs = ({"path": path}, keys, table, 0, False, 127, 7, 0.02, None, "blend", 0.5)
        assert not tab_compare.example_is_cached(c, *inputs)
        done = tab_compare.warm_examples(c, table=table)
        assert done["examples"] == [name] and done["stages"] == keys and done["seconds"] > 0
        assert tab_compare.example_is_cached(c, *inputs)
        *_, last = tab_compare.compare_impl(c, *inputs)
        assert [o["status"] for o in last[-1]["outcomes"]] == ["cached"] * len(keys)
        assert all(Path(o["video"]).is_file() for o in last[-1]["outcomes"])
        other_seed = (inputs[0], keys, table, 1, *inputs[4:])
        assert not tab_compare.example_is_cached(c, *other_seed)
        randomised = (*inputs[:4], True, *inputs[5:])
        assert not tab_compare.example_is_cached(c, *randomised)
    finally:
        c.close()


def test_ablation_rows_show_their_spread_and_which_differences_are_real(tmp_path: Path) -> None:
    """Issue 15: no spread was shown, so differences of ~0.4 FVD-proxy could not be read. Records with a
    ``spread`` get a 95% interval column, error bars and a note naming the rows beyond the best's interval;
    records from before spreads say so."""
    from app import tab_ablations

    ck = tmp_path / "ck"
    (ck / "ablations").mkdir(parents=True)
    recs = [{"table": "Table 3", "label": "temporal only", "fvd_proxy": 17.0, "spread": {"fvd_proxy": [16.2, 17.9]}},
            {"table": "Table 3", "label": "spatial only", "fvd_proxy": 17.4, "spread": {"fvd_proxy": [16.5, 18.3]}},
            {"table": "Table 3", "label": "temporal + spatial", "fvd_proxy": 21.0,
             "spread": {"fvd_proxy": [20.1, 22.0]}},
            {"table": "Table 3", "label": "no multiscaling", "fvd_proxy": 19.0},
            {"table": "Table 3", "label": "bad spread", "fvd_proxy": 19.5, "spread": {"fvd_proxy": [3, "x"]}}]
    (ck / "ablations" / "t3.json").write_text(json.dumps(recs))
    rows, problems = R.read_ablations(ck)
    assert not problems
    assert R.distinguishable(rows) == {"best": "temporal only", "beyond": ["temporal + spatial"],
                                       "within": ["spatial only"], "no_spread": ["no multiscaling", "bad spread"]}
    small = AppContext.create(ck, placeholders="auto", placeholder_scale="micro")
    try:
        fig, grid, note = tab_ablations.view(small, "Table 3")
    finally:
        small.close()
    col = tab_ablations.HEADERS.index("FVD-proxy 95% interval")
    by_label = {r[0]: r for r in grid}
    assert by_label["temporal only"][col] == "16.20 - 17.90" and by_label["no multiscaling"][col] == "not recorded"
    assert "beyond the spread" in note and "temporal + spatial" in note and "Within the spread" in note
    assert "run_ablations.py --force" in note
    bars = next(tr for tr in fig.data if tr.xaxis == "x2")
    minus = dict(zip(bars.x, bars.error_y.arrayminus, strict=True))
    assert bars.error_y.visible and minus["temporal only"] == pytest.approx(0.8) and minus["no multiscaling"] == 0
    assert fig.layout.yaxis2.range[1] > 22.0  # the axis holds the intervals, not just the bars


def test_ablation_rows_are_compared_on_the_same_clips() -> None:
    """Issue 13/15: per-row intervals over clips overlap even where one variant is worse on nearly every clip
    (what the clips share dominates). Rows are also compared pairwise on the same clips: a paired interval."""
    from app import tab_ablations
    from explorer.metrics import paired_difference

    rng = np.random.default_rng(0)
    base = rng.normal(26.0, 2.0, 64)  # clips differ a lot from each other ...
    worse = base - 0.6 + rng.normal(0, 0.2, 64)  # ... the variant is 0.6 dB worse on every one of them
    same = base + rng.normal(0, 0.2, 64)
    mean, low, high = paired_difference(worse, base)
    assert mean == pytest.approx(-0.6, abs=0.1) and high < 0
    assert paired_difference(same, base)[1] < 0 < paired_difference(same, base)[2]
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1.0], [2.0])
    recs = [{"table": "Table 3", "label": lab, "fvd_proxy": 6.0, "first_frame_psnr": float(np.mean(v)),
             "per_clip_psnr": [float(x) for x in v]} for lab, v in
            (("no multiscaling", base), ("spatial only", worse), ("temporal only", same))]
    rows = R.ablation_comparison("Table 3", recs)
    by = {r["label"]: r for r in rows}
    assert by["no multiscaling"]["psnr_vs_first"] is None and by["spatial only"]["psnr_vs_first"]["ci"][1] < 0
    note = tab_ablations.paired_note(rows)
    assert "lower: spatial only" in note and "no difference: temporal only" in note and "*no multiscaling*" in note


def test_error_toasts_carry_no_stray_quotes() -> None:
    """Issue 15: a toast showed stray quotes: ``str(KeyError(msg))`` wraps the message in quotes (and escapes a
    name holding both kinds), and the FLOPs tab printed the scales as a Python list."""
    import gradio as gr

    from app import tab_flops
    from explorer.serving import reason_of

    msg = """unknown stage 'a"b\\'c'; known: svd"""
    assert reason_of(KeyError(msg)) == msg
    assert reason_of(KeyError("plain")) == "plain" and reason_of(ValueError("v")) == "v"
    with pytest.raises(gr.Error) as err:
        tab_flops.count(None, "svd", "huge", 0, 0, 0, "")  # type: ignore[arg-type]
    assert str(err.value.message) == "scale must be one of: full, tiny"
