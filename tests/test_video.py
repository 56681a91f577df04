"""Browser-playable mp4 (H.264, yuv420p), the labelled side-by-side video, and the frame grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.video import (
    drawtext_available,
    ffmpeg_exe,
    frame_grid,
    read_video,
    side_by_side,
    video_info,
    write_mp4,
)


def _clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A moving gradient: smooth content, so lossy coding stays close to the input."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        out[t, ..., 0] = (x * 255 // max(width - 1, 1) + 9 * t + seed) % 256
        out[t, ..., 1] = y * 255 // max(height - 1, 1)
        out[t, ..., 2] = 128
    return out


def test_bundled_ffmpeg_exists() -> None:
    assert Path(ffmpeg_exe()).is_file()
    assert isinstance(drawtext_available(), bool)


def test_write_mp4_is_h264_yuv420p(tmp_path: Path) -> None:
    clip = _clip(14, 32, 64)
    info = video_info(write_mp4(clip, tmp_path / "a.mp4", fps=7))
    assert (info.codec, info.pix_fmt, info.frames, info.width, info.height) == ("h264", "yuv420p", 14, 64, 32)
    assert info.fps == pytest.approx(7.0)
    back = read_video(tmp_path / "a.mp4")
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip.astype(int)).mean() < 6


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    info = video_info(write_mp4(_clip(3, 17, 33), tmp_path / "odd.mp4"))
    assert (info.width, info.height, info.frames, info.pix_fmt) == (34, 18, 3, "yuv420p")


def test_write_mp4_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_mp4(np.zeros((8, 8, 3), np.uint8), tmp_path / "x.mp4")


@pytest.mark.parametrize("method", ["ffmpeg", "pil"])
def test_side_by_side_labelled(tmp_path: Path, method: str) -> None:
    if method == "ffmpeg" and not drawtext_available():
        pytest.skip("the bundled ffmpeg cannot draw text here; the PIL path is used instead")
    a = _clip(14, 32, 64)
    b = _clip(10, 16, 32, seed=50)  # smaller and shorter: scaled to the same height, last frame held
    file_input = write_mp4(_clip(14, 32, 64, seed=100), tmp_path / "c.mp4")
    out = side_by_side([a, b, file_input], ["svd (50 NFE)", "mobilevd: 1 NFE, 100% 'x'", "c"],
                       tmp_path / f"sbs_{method}.mp4", fps=7, method=method)
    info = video_info(out)
    bar = 14  # default label bar at this height
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 14)
    assert (info.width, info.height) == (3 * 64, 32 + bar)
    frames = read_video(out)
    assert frames[:, :bar].max() > 100  # label text drawn in the bar
    assert frames[:, bar:, 64:128].mean() > 20  # the second clip is there, scaled up


def test_side_by_side_grid_and_methods_agree(tmp_path: Path) -> None:
    clips = [_clip(4, 16, 32, seed=s) for s in range(5)]
    labels = [f"stage {i}" for i in range(5)]
    pil = video_info(side_by_side(clips, labels, tmp_path / "grid_pil.mp4", method="pil", min_height=32))
    assert (pil.width, pil.height, pil.frames) == (3 * 64, 2 * (32 + 14), 4)  # 5 clips -> 3 columns x 2 rows
    if drawtext_available():
        ff = video_info(side_by_side(clips, labels, tmp_path / "grid_ff.mp4", method="ffmpeg", min_height=32))
        assert (ff.width, ff.height, ff.frames) == (pil.width, pil.height, pil.frames)
    with pytest.raises(ValueError, match="one label per clip"):
        side_by_side(clips, labels[:2], tmp_path / "bad.mp4")


def test_frame_grid_png(tmp_path: Path) -> None:
    grid = frame_grid([_clip(14, 16, 32), _clip(14, 16, 32, seed=3)], tmp_path / "grid.png", labels=["a", "b"],
                      max_columns=7)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.format == "PNG" and img.size == grid.size
    assert grid.size == (7 * 32 + 6 * 2, 2 * (16 + 12) + 2)
    single = frame_grid(_clip(3, 16, 32), max_columns=7)
    assert single.size == (3 * 32 + 2 * 2, 16)
