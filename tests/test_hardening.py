"""Hardening of the Gradio app (issue 7): bad input, out-of-range settings, load, faults, temporary files, safe
loading and determinism, tested against the real server through ``gradio_client``.

One server per module, launched in-process as tests/test_app.py does (micro placeholders, one torch thread); every
generation is the cheap ``channel-funnels`` micro placeholder (128x64x14) at one step without CFG (1 NFE).
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from app import tab_compare  # noqa: E402
from app.ui import build_app, launch_kwargs  # noqa: E402
from explorer import serving as S  # noqa: E402
from explorer.pipeline import ImageInputError, load_image, prepare_image  # noqa: E402
from explorer.video import read_video  # noqa: E402

pytestmark = pytest.mark.hardening

ROOT = Path(__file__).resolve().parents[1]
STAGE = "channel-funnels"  # micro placeholder: 128x64, 14 frames
T1 = {"headers": tab_compare.TABLE_HEADERS, "data": [[STAGE, 1, 1.0, 1.0, ""]]}  # 1 step, no CFG: 1 NFE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(checkpoints: Path, **kw: Any) -> tuple[gr.Blocks, str]:
    old = os.environ.get("MOBILEVD_START_DELAY")
    os.environ["MOBILEVD_START_DELAY"] = "0"
    try:
        demo = build_app(str(checkpoints), placeholder_scale="micro", warm_flops=False, **kw)
    finally:
        if old is None:
            os.environ.pop("MOBILEVD_START_DELAY", None)
        else:
            os.environ["MOBILEVD_START_DELAY"] = old
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_kwargs(demo.mvd_context.out_dir))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo, url = _launch(tmp_path_factory.mktemp("empty-ckpt"))
    try:
        yield demo, url
    finally:
        demo.close()
        demo.mvd_context.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[1], verbose=False)


def compare(client, image: Any, seed: int = 0, stages: Any = (STAGE,), table: Any = T1, fps: Any = 7) -> tuple:
    from gradio_client import handle_file

    img = handle_file(image) if isinstance(image, str) else image
    stages = list(stages) if isinstance(stages, tuple) else stages
    return client.predict(img, stages, table, seed, False, 127, fps, 0.02, 11, "blend", 0.5, api_name="/compare")


def stage_video(out: tuple) -> str:
    summary = out[6]
    st = summary["stages"][0]
    assert st["status"] in ("done", "cached"), st
    return st["video"]


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def expect_clear_error(call, pattern: str) -> str:
    """The request fails with a readable message matching ``pattern`` and no traceback text."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - gradio_client raises AppError / ValueError
        call()
    msg = str(info.value)
    assert re.search(pattern, msg, re.I), msg
    assert "Traceback" not in msg and 'File "' not in msg, msg
    assert len(msg) < 600, len(msg)
    return msg


# ----------------------------------------------------------------------------------------------------------
# Files for the bad-input table


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A few hundred bytes whose PNG header claims width x height (never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + _chunk(b"IEND", b""))


def _bad_files(d: Path, photo: str) -> dict[str, tuple[Path, str]]:
    """name -> (file, pattern of the expected message)."""
    rng = np.random.default_rng(1)
    out: dict[str, tuple[Path, str]] = {}
    (d / "text.png").write_text("hello, this is a text file\n" * 20)
    out["text file (.png)"] = (d / "text.png", "not a readable image")
    (d / "doc.png").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 5)
    out["PDF header bytes"] = (d / "doc.png", "not a readable image")
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    (d / "movie.png").write_bytes(ftyp + struct.pack(">I", 16) + b"mdat" + bytes(8))
    out["mp4 renamed .png"] = (d / "movie.png", "not a readable image")
    full_png = Path(photo).read_bytes()
    (d / "trunc.png").write_bytes(full_png[: len(full_png) // 2])
    out["truncated PNG"] = (d / "trunc.png", "corrupt|truncated")
    buf = io.BytesIO()
    Image.fromarray((rng.random((96, 160, 3)) * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    (d / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated JPEG"] = (d / "trunc.jpg", "corrupt|truncated")
    _png_declaring(d / "bomb.png", 30000, 30000)
    out["decompression bomb (30000x30000 header, <200 B)"] = (d / "bomb.png", "decompression bomb|too large")
    _png_declaring(d / "huge.png", 10000, 10000)
    out["100 MP header (over the 64 MP limit)"] = (d / "huge.png", "too large")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one.png")
    out["1x1 image"] = (d / "one.png", "too small")
    (d / "empty.png").write_bytes(b"")
    out["empty file"] = (d / "empty.png", "not a readable image|empty")
    return out


def _odd_images(d: Path) -> dict[str, tuple[Path, str]]:
    """Accepted images: name -> (file, pattern the /preview notes must match)."""
    rng = np.random.default_rng(2)
    rgb = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    out: dict[str, tuple[Path, str]] = {}
    wide = np.zeros((100, 20000, 3), np.uint8)
    wide[:, ::2] = 255
    Image.fromarray(wide).save(d / "wide.png")
    out["20000x100 image"] = (d / "wide.png", "Input 20000x100")
    Image.fromarray((np.arange(64 * 96).reshape(64, 96) * 10).astype(np.uint16)).save(d / "sixteen.png")
    out["16-bit PNG"] = (d / "sixteen.png", "grayscale")
    Image.fromarray(rgb[..., 0], "L").save(d / "gray.png")
    out["grayscale"] = (d / "gray.png", "grayscale")
    Image.fromarray(rgb).quantize(16).save(d / "palette.png")
    out["palette"] = (d / "palette.png", "palette")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    out["CMYK JPEG"] = (d / "cmyk.jpg", r"mode CMYK")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(d / "alpha.png")
    out["RGBA"] = (d / "alpha.png", "transparency")
    frames = [Image.fromarray(np.full((64, 96, 3), c, np.uint8)) for c in (30, 220, 120)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["animated GIF"] = (d / "anim.gif", "Input 96x64")
    return out


def _exif_rotated(d: Path) -> tuple[Path, np.ndarray]:
    """A JPEG stored 96x48 landscape with EXIF orientation 6 (display: rotate 90 clockwise = 48x96 portrait)."""
    stored = np.zeros((48, 96, 3), np.uint8)
    stored[:, :48] = (255, 0, 0)  # left half red, right half blue
    stored[:, 48:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = d / "rotated.jpg"
    img.save(path, quality=95, exif=exif.tobytes())
    upright = np.asarray(Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270))
    return path, upright


# ----------------------------------------------------------------------------------------------------------
# 1. Bad input


def test_bad_files_get_a_clear_message_and_the_server_keeps_serving(client, photo: str, tmp_path: Path,
                                                                    capsys) -> None:
    from gradio_client import handle_file

    table = []
    for name, (path, pattern) in _bad_files(tmp_path, photo).items():
        msg = expect_clear_error(lambda p=path: compare(client, str(p)), pattern)
        expect_clear_error(lambda p=path: client.predict(handle_file(str(p)), [STAGE], api_name="/preview"),
                           pattern)
        assert client.predict(api_name="/stages")  # still serving
        table.append((name, msg))
    out = compare(client, photo, seed=11)  # a valid request after all of them
    assert Path(stage_video(out)).is_file()
    with capsys.disabled():
        print("\nbad input -> message")
        for name, msg in table:
            print(f"  {name:48s} -> {msg}")


def test_upload_over_the_size_limit_is_refused(client, tmp_path: Path, photo: str) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(Path(photo).read_bytes())
        f.truncate(51 * 2**20)  # 51 MB > the 50 MB upload limit
    expect_clear_error(lambda: compare(client, str(big)), "size|large|exceed|limit")
    assert client.predict(api_name="/stages")


def test_odd_but_valid_images_are_accepted_with_notes(client, tmp_path: Path, capsys) -> None:
    from gradio_client import handle_file

    seen = []
    for name, (path, pattern) in _odd_images(tmp_path).items():
        items, notes = client.predict(handle_file(str(path)), [STAGE], api_name="/preview")
        assert len(items) == 1 and re.search(pattern, notes), (name, notes)
        item = items[0]
        img_path = item["image"] if isinstance(item, dict) else item[0]
        prepared = Image.open(img_path["path"] if isinstance(img_path, dict) else img_path)
        assert prepared.size == (128, 64) and prepared.mode == "RGB"
        out = compare(client, str(path), seed=3)
        assert read_video(stage_video(out)).shape == (14, 64, 128, 3)
        seen.append((name, notes))
    # the animated GIF: its first frame is used (dark grey 30), not a later one
    first = prepare_image(str(tmp_path / "anim.gif"), 128, 64)
    assert np.asarray(first).max() == 30
    with capsys.disabled():
        print("\naccepted input -> notes")
        for name, notes in seen:
            print(f"  {name:20s} -> {notes}")


def test_exif_orientation_is_respected(client, tmp_path: Path) -> None:
    from gradio_client import handle_file

    path, upright = _exif_rotated(tmp_path)
    img = load_image(str(path))
    assert img.size == (48, 96)  # portrait: rotated as the camera meant it
    got = np.asarray(img).astype(int)
    assert np.abs(got - upright.astype(int)).mean() < 8  # JPEG noise only
    assert got[:40].mean(axis=(0, 1))[0] > 200 and got[56:].mean(axis=(0, 1))[2] > 200  # red on top, blue below
    prepared = np.asarray(prepare_image(str(path), 64, 128)).astype(int)
    assert prepared[:50, :, 0].mean() > 200 and prepared[78:, :, 2].mean() > 200
    _, notes = client.predict(handle_file(str(path)), [STAGE], api_name="/preview")
    assert "Input 48x96" in notes and "EXIF orientation applied" in notes


def test_out_of_range_settings_through_the_api(client, photo: str, capsys) -> None:
    def table(steps: Any, key: str = STAGE) -> dict[str, Any]:
        return {"headers": tab_compare.TABLE_HEADERS, "data": [[key, steps, 1.0, 1.0, ""]]}

    cases = [
        ("steps 0", lambda: compare(client, photo, table=table(0)), r"steps must be in 1\.\.500"),
        ("steps 10**6", lambda: compare(client, photo, table=table(10**6)), r"steps must be in 1\.\.500"),
        ("steps 'many'", lambda: compare(client, photo, table=table("many")), "not a number"),
        ("negative seed", lambda: compare(client, photo, seed=-1), "seed must be"),
        ("seed 10**30", lambda: compare(client, photo, seed=10**30), "seed must be"),
        ("fps 0", lambda: compare(client, photo, fps=0), "fps must be in 1..60"),
        ("fps 10**6", lambda: compare(client, photo, fps=10**6), "fps must be in 1..60"),
        ("unknown stage slug", lambda: compare(client, photo, stages=["svd-9000"]), "unknown stage"),
        ("no stage", lambda: compare(client, photo, stages=[]), "at least one stage"),
        ("11 stages", lambda: compare(client, photo, stages=[STAGE] * (S.MAX_STAGES + 1)), "at most 10 stages"),
        ("stage name of 100k chars", lambda: compare(client, photo, stages=["x" * 100_000]), "unknown stage"),
        ("table key of 100k chars", lambda: compare(client, photo, table=table("y" * 100_000, "k" * 100_000)),
         "not a number"),
        ("stages not a list", lambda: compare(client, photo, stages=5), "list of stage names"),
        ("settings not a table", lambda: compare(client, photo, table=5), "settings must be a table|exception"),
        ("settings rows not a list", lambda: compare(client, photo, table={"headers": [], "data": "abc"}),
         "settings|exception"),
    ]
    seen = [(name, expect_clear_error(call, pattern)) for name, call, pattern in cases]
    out = compare(client, photo, seed=12)  # still serving
    assert out[7] == 12
    with capsys.disabled():
        print("\nsetting through the API -> message")
        for name, msg in seen:
            print(f"  {name:26s} -> {msg[:150]}")


# ----------------------------------------------------------------------------------------------------------
# 2. Load


def test_concurrent_clients_each_get_their_own_result(server, client, photo: str, capsys) -> None:
    from gradio_client import Client

    demo, url = server
    n = 8
    seeds = [1000 + i for i in range(n)]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            c = Client(url, verbose=False)
            results[seed] = compare(c, photo, seed=seed)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    wall = time.perf_counter() - start
    assert not errors and sorted(results) == seeds, errors
    concurrent = {}
    for s in seeds:
        out = results[s]
        assert out[7] == s and out[6]["seed"] == s
        concurrent[s] = read_video(stage_video(out))
    sbs_paths = [results[s][6]["side_by_side"] for s in seeds]
    assert len(set(sbs_paths)) == n and all(Path(p).is_file() for p in sbs_paths)  # never overwritten
    assert len({hashlib.sha256(f.tobytes()).hexdigest() for f in concurrent.values()}) == n  # all different
    demo.mvd_context.results._data.clear()  # so the sequential runs generate again
    for s in seeds:
        out = compare(client, photo, seed=s)
        assert out[6]["stages"][0]["status"] == "done"
        assert np.array_equal(read_video(stage_video(out)), concurrent[s]), f"seed {s}"
    with capsys.disabled():
        print(f"\n{n} concurrent /compare clients: {wall:.1f} s wall, all match their sequential rerun")


# 25 requests (50 until session 8: 185 s of CI time; a leak of a few MB per request still shows within 25)
SEQUENTIAL_REQUESTS = 25


def test_sequential_requests_do_not_grow_memory(server, client, photo: str, capsys) -> None:
    import psutil

    proc = psutil.Process()  # the server runs in this process
    for s in range(2):  # warm-up
        compare(client, photo, seed=2000 + s)
    gc.collect()
    before = proc.memory_info().rss
    start = time.perf_counter()
    for s in range(SEQUENTIAL_REQUESTS):
        out = compare(client, photo, seed=3000 + s)
        assert out[6]["stages"][0]["status"] == "done"
    gc.collect()
    after = proc.memory_info().rss
    growth = (after - before) / 2**20
    with capsys.disabled():
        print(f"\n{SEQUENTIAL_REQUESTS} sequential /compare: RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB "
              f"({growth:+.0f} MB), {time.perf_counter() - start:.1f} s")
    assert growth < 300


def _slow_table(steps: int = 40) -> dict[str, Any]:
    return {"headers": tab_compare.TABLE_HEADERS, "data": [[STAGE, steps, 1.0, 3.0, ""]]}  # CFG: 2 NFE per step


def test_cancelled_request_frees_its_resources(server, client, photo: str, capsys) -> None:
    from gradio_client import handle_file

    demo, _ = server
    ctx = demo.mvd_context
    before_files = set(ctx.out_dir.iterdir())
    job = client.submit(handle_file(photo), [STAGE], _slow_table(400), 5151, False, 127, 7, 0.02, 11, "blend",
                        0.5, api_name="/compare")
    deadline = time.time() + 60
    while time.time() < deadline and not any(t.name == "compare" for t in threading.enumerate()):
        time.sleep(0.05)
    time.sleep(1.0)  # some denoising steps are under way
    assert any(t.name == "compare" for t in threading.enumerate()), "the request never started"
    t0 = time.perf_counter()
    job.cancel()
    while time.perf_counter() - t0 < 30 and any(t.name == "compare" for t in threading.enumerate()):
        time.sleep(0.05)
    stopped = time.perf_counter() - t0
    assert not any(t.name == "compare" for t in threading.enumerate()), "the cancelled work kept running"
    assert ctx.catalog.work._lock.acquire(timeout=5)  # the model lock is free again
    ctx.catalog.work._lock.release()
    new = {f.name for f in set(ctx.out_dir.iterdir()) - before_files}
    assert not any("5151" in n for n in new), new  # nothing written for the cancelled request
    out = compare(client, photo, seed=5152)  # the server serves the next request normally
    assert out[7] == 5152 and out[6]["stages"][0]["status"] == "done"
    with capsys.disabled():
        print(f"\ncancelled a 400-step request mid-run: worker stopped {stopped:.2f} s after cancel; "
              "lock free; next request served")


def test_queue_is_bounded_and_overflow_is_refused_clearly(tmp_path: Path, photo: str, capsys) -> None:
    from gradio_client import Client, handle_file

    (tmp_path / "ck").mkdir()
    demo, url = _launch(tmp_path / "ck", queue_size=2)
    try:
        client = Client(url, verbose=False)
        # 15 denoising steps each: a burst of 8 still overflows a queue of 2, at half the CI time of 30 steps
        jobs = [client.submit(handle_file(photo), [STAGE], _slow_table(15), 6000 + i, False, 127, 7, 0.02, 11,
                              "blend", 0.5, api_name="/compare") for i in range(8)]
        done, refused = [], []
        for i, job in enumerate(jobs):
            try:
                out = job.result(timeout=300)
                assert out[7] == 6000 + i
                done.append(i)
            except Exception as exc:  # noqa: BLE001 - gradio_client raises its own error types
                assert "queue" in str(exc).lower() and "full" in str(exc).lower(), str(exc)
                assert "Traceback" not in str(exc)
                refused.append(i)
        assert refused and len(done) >= 2, (done, refused)
        assert compare(client, photo, seed=6100)[7] == 6100  # still serving afterwards
        with capsys.disabled():
            print(f"\nqueue of 2, 8 simultaneous requests: {len(done)} served, {len(refused)} refused "
                  "('queue is full')")
    finally:
        demo.close()
        demo.mvd_context.close()


# ----------------------------------------------------------------------------------------------------------
# 3. Faults in the checkpoints folder


def _faulty_checkpoints(root: Path) -> Path:
    """svd-512: good. svd: unet weights missing. lowres-ft: truncated safetensors. optimized-xattn: a tensor of
    the wrong shape. temporal-multiscale: bad stage.json. channel-funnels: only pickle (.bin) weights."""
    from safetensors.torch import load_file, save_file

    from explorer.components import build_pipeline
    from explorer.pipeline import StageRecord, save_stage

    ck = root / "ck"
    pipe = build_pipeline("micro")
    save_stage(pipe, ck / "svd-512", StageRecord.from_stage("svd-512", "micro", steps=1, max_guidance=1.0))

    def clone(slug: str) -> Path:
        dst = ck / slug
        shutil.copytree(ck / "svd-512", dst)
        import json

        rec = json.loads((dst / "stage.json").read_text())
        rec["slug"] = slug
        (dst / "stage.json").write_text(json.dumps(rec))
        return dst

    weights = "unet/diffusion_pytorch_model.safetensors"
    (clone("svd") / weights).unlink()
    w = clone("lowres-ft") / weights
    w.write_bytes(w.read_bytes()[: 4096])
    w = clone("optimized-xattn") / weights
    state = load_file(str(w))
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = state[name][:, :-1].contiguous()
    save_file(state, str(w))
    (clone("temporal-multiscale") / "stage.json").write_text('{"slug": "temporal-multiscale", "steps": ')
    d = clone("channel-funnels")
    (d / weights).rename(d / "unet/diffusion_pytorch_model.bin")
    return ck


def test_broken_stage_folders_are_unavailable_and_the_rest_serves(tmp_path: Path, photo: str, capsys) -> None:
    from gradio_client import Client

    ck = _faulty_checkpoints(tmp_path)
    demo, url = _launch(ck, placeholders="off")
    try:
        ctx = demo.mvd_context
        deadline = time.time() + 120
        while not ctx.catalog.all_settled() and time.time() < deadline:
            time.sleep(0.2)
        c = Client(url, verbose=False)
        rows = {r["key"]: r for r in c.predict(api_name="/stages")}
        expect = {"svd": "missing weights file", "lowres-ft": "safetensors",
                  "optimized-xattn": "wrong shape", "temporal-multiscale": "broken stage folder",
                  "channel-funnels": "pickle"}
        for key, pattern in expect.items():
            assert rows[key]["status"] == "unavailable" and pattern in rows[key]["reason"], rows[key]
        assert rows["svd-512"]["status"] == "ready"
        t = {"headers": tab_compare.TABLE_HEADERS, "data": [["svd-512", 1, 1.0, 1.0, ""]]}
        out = compare(c, photo, seed=4, stages=["svd-512", "lowres-ft", "optimized-xattn"], table=t)
        by = {s["key"]: s for s in out[6]["stages"]}
        assert by["svd-512"]["status"] == "done" and Path(by["svd-512"]["video"]).is_file()
        assert by["lowres-ft"]["status"] == by["optimized-xattn"]["status"] == "unavailable"
        with capsys.disabled():
            print("\nfaulty stage folder -> /stages")
            for key in ("svd-512", *expect):
                print(f"  {key:20s} -> {rows[key]['status']}: {rows[key]['reason'][:110]}")
    finally:
        demo.close()
        demo.mvd_context.close()


# ----------------------------------------------------------------------------------------------------------
# 4. Temporary files


def test_output_folder_is_bounded(server, client, photo: str) -> None:
    ctx = server[0].mvd_context
    old = ctx.max_output_files
    ctx.max_output_files = 10
    try:
        outs = [compare(client, photo, seed=4000 + s) for s in range(6)]  # 4 files each (2 stages videos...)
        files = [f for f in ctx.out_dir.iterdir() if not f.name.startswith("example-")]
        assert len(files) <= 10, sorted(f.name for f in files)
        last = outs[-1][6]
        assert Path(last["side_by_side"]).is_file() and Path(last["stages"][0]["video"]).is_file()
        assert all(Path(p).is_file() for _, p in ctx.examples)  # examples are never deleted
        # a cached result whose video was deleted is generated again, not served broken
        first = outs[0][6]["stages"][0]["video"]
        assert not Path(first).exists()
        again = compare(client, photo, seed=4000)
        assert again[6]["stages"][0]["status"] == "done" and Path(stage_video(again)).is_file()
    finally:
        ctx.max_output_files = old


def test_prune_outputs_keeps_the_newest_and_the_requested(tmp_path: Path) -> None:
    for i in range(12):
        f = tmp_path / f"f{i:02d}.mp4"
        f.write_bytes(b"x")
        os.utime(f, ns=(i * 10**9, i * 10**9))
    (tmp_path / "example-a.jpg").write_bytes(b"x")
    removed = S.prune_outputs(tmp_path, 5, keep=[tmp_path / "f00.mp4"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert removed == 7 and names == ["example-a.jpg", "f00.mp4", "f08.mp4", "f09.mp4", "f10.mp4", "f11.mp4"]


# ----------------------------------------------------------------------------------------------------------
# 5. Safe loading


def test_no_unsafe_loaders_in_app_code() -> None:
    pattern = re.compile(r"torch\.load\s*\(|pickle\.loads?\s*\(|trust_remote_code\s*=\s*True")
    hits = []
    for folder in ("explorer", "app"):
        for f in (ROOT / folder).rglob("*.py"):
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if pattern.search(line.split("#", 1)[0]):
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, hits


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    from explorer.components import build_pipeline
    from explorer.pipeline import StageLoadError, StageRecord, load_stage, save_stage

    folder = save_stage(build_pipeline("micro"), tmp_path / "svd", StageRecord.from_stage("svd", "micro"))
    w = folder / "unet" / "diffusion_pytorch_model.safetensors"
    for suffix in (".bin", ".pt"):
        if w.exists():
            w.rename(w.with_suffix(suffix))
        else:
            next((folder / "unet").glob("diffusion_pytorch_model.*")).rename(w.with_suffix(suffix))
        with pytest.raises(StageLoadError, match="pickle"):
            load_stage(folder)


def raw_call(url: str, api: str, data: list[Any]) -> tuple[str, Any]:
    """One request to a named endpoint over plain HTTP (gradio_client would upload a local path itself, which is
    not what an attacker does): returns the last SSE event and its data."""
    import json

    req = urllib.request.Request(f"{url}gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as r:
        text = r.read().decode()
    events = re.findall(r"event: (\w+)\ndata: (.*)", text)
    assert events, text
    name, payload = events[-1]
    return name, json.loads(payload)


def test_paths_in_requests_never_leave_the_app_folders(server, client, tmp_path: Path, photo: str,
                                                       capsys) -> None:
    url = server[1]
    outside = tmp_path / "outside.png"  # a perfectly good image, but never uploaded: must not be readable
    shutil.copy(photo, outside)
    paths = {"/etc/passwd": "/etc/passwd", "../../etc/passwd": "../../etc/passwd",
             "upload dir + ../..": "/tmp/gradio/../../etc/passwd", "good image outside": str(outside)}
    seen = []
    for name, path in paths.items():
        for payload in ({"path": path}, {"path": path, "meta": {"_type": "gradio.FileData"}}):
            for api, data in (("preview", [payload, [STAGE]]),
                              ("compare", [payload, [STAGE], T1, 0, False, 127, 7, 0.02, 11, "blend", 0.5])):
                event, body = raw_call(url, api, data)
                assert event == "error", (name, api, body)
                err = (body or {}).get("error") if isinstance(body, dict) else body
                # FileData payloads: gradio refuses (a file not uploaded by a user; generic error);
                # plain dicts reach the app, which refuses them before opening anything
                assert err is None or "not inside the app's upload folder" in err, (name, api, err)
                if "meta" not in payload:
                    assert err and "not inside the app's upload folder" in err and "root:" not in err
                seen.append((name, api, "meta" in payload, err))
    expect_clear_error(lambda: compare(client, photo, stages=["../../etc/passwd"]), "unknown stage")
    for bad in ("../../etc/passwd", "z" * 100_000):
        expect_clear_error(lambda b=bad: client.predict(b, "full", 0, 0, 0, "", "treemap", "svd", api_name="/flops"),
                           "unknown stage")
    assert compare(client, photo, seed=13)[7] == 13  # still serving
    with capsys.disabled():
        print("\npath in a request -> error")
        for name, api, meta, err in seen:
            shown = err or "gradio: not uploaded by a user"
            print(f"  {name:20s} /{api:8s} {'FileData' if meta else 'plain'}: {shown}")


def test_checked_paths_are_confined(tmp_path: Path, photo: str) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    inside = root / "a.png"
    shutil.copy(photo, inside)
    (root / "link.png").symlink_to(photo)  # a symlink inside that points outside
    assert S.check_image(str(inside), [root]).image.size == (160, 90)
    for bad in (photo, str(root / ".." / Path(photo).name), str(root / "link.png"), "/etc/passwd"):
        with pytest.raises(ImageInputError, match="not inside"):
            S.check_image({"path": bad}, [root])


def test_server_binds_localhost_by_default(monkeypatch) -> None:
    import app.main as mod

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert mod.parse_args([]).host == "127.0.0.1" and not mod.parse_args([]).share
    assert mod.parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"


# ----------------------------------------------------------------------------------------------------------
# 6. Determinism


def test_same_inputs_give_bit_identical_frames(server, photo: str) -> None:
    ctx = server[0].mvd_context
    checked = S.check_image(photo)
    req = S.StageRequest(STAGE, steps=1, min_guidance=1.0, max_guidance=1.0)
    frames = []
    for _ in range(2):
        out = S.run_stage(ctx.catalog, ctx.flops, S.ResultCache(), ctx.out_dir, checked, req, S.Common(seed=77))
        assert out.status == "done"
        frames.append(out.frames)
    assert frames[0].dtype == np.uint8 and np.array_equal(frames[0], frames[1])
    other = S.run_stage(ctx.catalog, ctx.flops, S.ResultCache(), ctx.out_dir, checked, req, S.Common(seed=78))
    assert not np.array_equal(frames[0], other.frames)


def test_same_result_across_app_restarts(client, photo: str, tmp_path: Path) -> None:
    """A second app process (python app.py) gives the same frames and the same mp4 bytes for the same seed."""
    from gradio_client import Client

    mine = compare(client, photo, seed=55)
    port = _free_port()
    env = {**os.environ, "MOBILEVD_TORCH_THREADS": "1", "MOBILEVD_START_DELAY": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoints",
                             str(tmp_path / "empty"), "--placeholder-scale", "micro", "--no-warmup"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, "the second app exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline, "second app did not start"
                time.sleep(0.3)
        theirs = compare(Client(f"http://127.0.0.1:{port}/", verbose=False), photo, seed=55)
        a, b = stage_video(mine), stage_video(theirs)
        assert a != b  # two processes, two output folders
        assert np.array_equal(read_video(a), read_video(b))
        assert sha(a) == sha(b)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
