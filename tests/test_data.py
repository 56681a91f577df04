"""Tests of the synthetic image-to-video data: determinism, splits, shapes, and the motion/fps conditioning.

Why: every stage of the tiny model family is trained and scored on these clips; a leak of a test photograph
into training, or a motion bucket that does not follow the measured motion, would silently invalidate the
metrics the app shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from explorer import data as D

SMALL = (48, 24)


def _same(a: D.Clip, b: D.Clip) -> bool:
    return torch.equal(a.frames, b.frames) and a.params == b.params and a.motion_bucket_id == b.motion_bucket_id


def test_photos_are_bundled_and_split_disjoint() -> None:
    names = {s: set(D.photos(s)) for s in D.SPLITS}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert len(names["test"]) >= 4 and len(names["val"]) >= 1
    files = {p.file for p in D.PHOTOS}
    assert "motorcycle_right.png" not in files  # stereo twin of a test photograph
    for p in D.PHOTOS:
        assert D.photo_path(p.name).is_file()
    imgs = D.test_images()
    assert set(imgs) == names["test"]
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in imgs.values())


@pytest.mark.parametrize("size", [D.LOWRES, (40, 30)])
def test_shapes_ranges_and_8bit_grid(size: tuple[int, int]) -> None:
    clip = D.make_clip("train", 1, size)
    w, h = size
    assert clip.frames.shape == (D.NUM_FRAMES, 3, h, w) and clip.frames.dtype == torch.float32
    assert clip.frames.min() >= -1.0 and clip.frames.max() <= 1.0
    levels = (clip.frames + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert torch.equal(clip.image, clip.frames[0])
    assert 0 <= clip.motion_bucket_id <= 255 and D.FPS_RANGE[0] <= clip.fps <= D.FPS_RANGE[1]
    assert clip.added_time_ids(0.02) == [clip.fps - 1, clip.motion_bucket_id, 0.02]


def test_determinism() -> None:
    a = D.make_clip("train", 5, SMALL, seed=3)
    assert _same(a, D.make_clip("train", 5, SMALL, seed=3))
    assert not torch.equal(a.frames, D.make_clip("train", 6, SMALL, seed=3).frames)
    assert not torch.equal(a.frames, D.make_clip("train", 5, SMALL, seed=4).frames)
    img = D.make_image("train", 2, SMALL)
    assert torch.equal(img, D.make_image("train", 2, SMALL)) and img.shape == (3, SMALL[1], SMALL[0])
    assert not torch.equal(img, D.make_image("train", 3, SMALL))


def test_every_kind_renders_and_moves_as_claimed() -> None:
    for kind in D.KINDS:
        clip = D.make_clip("val", 0, SMALL, kind=kind, motion=3.0)
        assert clip.params["type"] == kind
        moving = (clip.frames[1:] - clip.frames[:-1]).abs().max() > 0
        assert bool(moving) == (kind != "static")


def test_sources_never_cross_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every photograph whose pixels are actually sampled, not just what the params say."""
    used: set[str] = set()
    real = D._pyramid

    def spy(name: str) -> D._Pyramid:
        used.add(name)
        return real(name)

    monkeypatch.setattr("explorer.data.render._pyramid", spy)  # where the renderer looks it up
    for split in D.SPLITS:
        used.clear()
        masks: set[str] = set()
        for i in range(40):
            clip = D.make_clip(split, i, (32, 16), kind="objects" if i % 2 else None)
            assert set(clip.params["sources"]) <= set(D.photos(split))
            masks |= set(clip.params["masks"])
        for i in range(10):
            D.make_image(split, i, (32, 16))
        assert used and used <= set(D.photos(split)), (split, used - set(D.photos(split)))
        if split != "train":
            assert not masks & set(D.TRAIN_ONLY_MASKS)
    for clip in D.eval_clips("test", n=8, size=(32, 16)):
        assert set(clip.params["sources"]) <= set(D.photos("test"))


def test_bucket_mapping() -> None:
    m = np.linspace(0, 30, 301)
    b = D.motion_to_bucket(m)
    assert b[0] == 0 and b[-1] == 255 and np.all(np.diff(b) >= 0)
    assert D.motion_to_bucket(D.BUCKET_M_MAX) == 255
    assert abs(D.motion_to_bucket(D.bucket_to_motion(127)) - 127) <= 1
    assert D.motion_to_bucket(torch.tensor([0.0, 2.0])).tolist() == [0, D.motion_to_bucket(2.0)]


def test_static_is_lowest_and_faster_pans_rank_higher() -> None:
    static = D.make_clip("test", 0, SMALL, kind="static")
    assert static.motion == 0.0 and static.motion_bucket_id == 0
    assert torch.equal(static.frames[0], static.frames[-1])
    clips = [D.make_clip("test", 0, SMALL, kind="pan", motion=m) for m in (0.3, 1.0, 3.0, 8.0)]
    motions = [c.motion for c in clips]
    buckets = [c.motion_bucket_id for c in clips]
    assert motions == sorted(motions) and buckets == sorted(buckets) and len(set(buckets)) == 4
    assert buckets[0] > 0
    for c, m in zip(clips, (0.3, 1.0, 3.0, 8.0), strict=True):
        assert c.motion == pytest.approx(m, rel=0.02)  # a pure pan's mean flow is its speed


def _phase_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer-pixel translation from a to b by phase correlation, refined by a parabola fit."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    r = np.fft.ifft2(fb * np.conj(fa) / (np.abs(fa * np.conj(fb)) + 1e-9)).real
    iy, ix = np.unravel_index(np.argmax(r), r.shape)
    out = []
    for line, i in ((r[iy, :], ix), (r[:, ix], iy)):
        n = len(line)
        y0, y1, y2 = line[(i - 1) % n], line[i], line[(i + 1) % n]
        s = i + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2 + 1e-12)
        out.append(s - n if s > n / 2 else s)
    return np.array(out)


def test_measured_motion_matches_phase_correlation() -> None:
    """The bucket is derived from the known warp; an image-based estimate must agree on what the pixels do."""
    size = (128, 64)
    clip = D.make_clip("test", 3, size, kind="pan", motion=6.0)
    g = ((clip.frames + 1) / 2).mean(dim=1).numpy()
    shifts = [_phase_shift(g[t], g[t + 1]) for t in range(len(g) - 1)]
    est = float(np.mean([np.hypot(*s) for s in shifts])) * D.REF_WIDTH / size[0]
    assert est == pytest.approx(clip.motion, rel=0.1)


def test_fps_mapping() -> None:
    """Same speed (ref px per second) sampled at a lower fps -> more motion per frame -> higher bucket."""
    clips = [D.make_clip("val", 2, SMALL, kind="pan", speed=60.0, fps=f) for f in (24, 12, 6)]
    assert [c.fps for c in clips] == [24, 12, 6]
    for c in clips:
        assert c.motion == pytest.approx(D.motion_per_frame(60.0, c.fps), rel=0.02)
        assert c.params["speed_ref_px_per_s"] == pytest.approx(c.motion * c.fps)
    buckets = [c.motion_bucket_id for c in clips]
    assert buckets == sorted(buckets) and len(set(buckets)) == 3


def test_sampled_conditioning_is_spread() -> None:
    clips = [D.make_clip("train", i, (16, 8)) for i in range(120)]
    buckets = np.array([c.motion_bucket_id for c in clips])
    assert (buckets == 0).any() and (buckets > 160).any() and len(np.unique(buckets)) > 40
    assert len({c.fps for c in clips}) > 10
    assert len({c.params["photo"] for c in clips}) >= 6


def test_eval_set_is_stable_and_spans_buckets() -> None:
    a = D.eval_clips("test", n=24, size=SMALL, seed=0)
    b = D.eval_clips("test", n=24, size=SMALL, seed=0)
    assert len(a) == 24 and all(_same(x, y) for x, y in zip(a, b, strict=True))
    buckets = np.array([c.motion_bucket_id for c in a])
    assert buckets.min() == 0 and buckets.max() > 200 and len(np.unique(buckets)) > 15
    assert {c.params["photo"] for c in a} == set(D.photos("test"))
    requested = [c.params["requested_motion_ref_px"] for c in a]
    assert spearmanr(requested, buckets)[0] > 0.9


def test_dataloader_workers_and_cache(tmp_path: object) -> None:
    loader = torch.utils.data.DataLoader(D.ClipStream("train", (16, 8), start=10), batch_size=2, num_workers=2)
    seen = []
    for k, batch in enumerate(loader):
        assert batch["frames"].shape == (2, D.NUM_FRAMES, 3, 8, 16)
        seen += batch["index"].tolist()
        if k == 3:
            break
    assert sorted(seen) == list(range(10, 18))
    ref = D.make_clip("train", 12, (16, 8))
    ds = D.ClipDataset("train", (16, 8), length=20, cache_dir=tmp_path)
    first, again = ds[12], ds[12]  # render + store, then load
    assert ds.cache is not None and ds.cache.path(12).is_file()
    for item in (first, again):
        assert torch.equal(item["frames"], ref.frames)
        assert int(item["motion_bucket_id"]) == ref.motion_bucket_id and int(item["fps"]) == ref.fps
    mapped = next(iter(torch.utils.data.DataLoader(D.ClipDataset("val", (16, 8), length=8), batch_size=4)))
    assert mapped["index"].tolist() == [0, 1, 2, 3]
    assert torch.equal(mapped["frames"][2], D.make_clip("val", 2, (16, 8)).frames)
    batch = D.make_batch("val", 0, 3, (16, 8))
    assert batch["frames"].shape == (3, D.NUM_FRAMES, 3, 8, 16) and batch["motion_bucket_id"].shape == (3,)
