"""Video files that play in a browser, a labelled side-by-side comparison, and a frame-grid PNG.

Every mp4 is H.264 (libx264) in yuv420p with ``+faststart``, encoded by the ffmpeg binary that the imageio-ffmpeg
wheel ships (no system ffmpeg needed); ffmpeg-python builds the command lines. yuv420p needs even sizes, so odd
widths/heights are padded by one black pixel.

Labels of the side-by-side video: the bundled ffmpeg (imageio-ffmpeg 0.8, ffmpeg 9) is built with libfreetype and
fontconfig, so ``drawtext`` is used, with an explicit TrueType file when one is found (DejaVu Sans, or
``$MOBILEVD_FONT``) and the label read from a ``textfile`` with ``expansion=none`` (no escaping problems).
:func:`drawtext_available` probes it once; where it fails (another ffmpeg build, no fonts at all) the labels are
drawn into the frames with PIL (its built-in font) and the composed frames are encoded instead. Both give the
same geometry: each clip scaled to a common height, centred in equal cells, a black label bar above each.
Frame counts are read back with imageio's ffmpeg reader (ffprobe is not shipped).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ffmpeg
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ClipLike = np.ndarray | str | os.PathLike[str]

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def font_file() -> str | None:
    """A TrueType font for labels: ``$MOBILEVD_FONT``, a common system font, or None."""
    env = os.environ.get("MOBILEVD_FONT")
    for candidate in ((env,) if env else ()) + _FONT_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_file()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    return ImageFont.load_default(size)


def _text_width(text: str, size: int) -> int:
    left, _, right, _ = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=_font(size))
    return int(right - left)


def _fit_font_size(text: str, max_width: int, bar: int) -> int:
    """Largest font size (<= 70% of the bar) whose rendering of ``text`` fits ``max_width`` pixels."""
    size = max(6, int(bar * 0.7))
    while size > 6 and _text_width(text, size) > max_width:
        size -= 1
    return size


def _run(stream: ffmpeg.nodes.OutputStream, input_bytes: bytes | None = None) -> None:
    stream = stream.global_args("-hide_banner", "-loglevel", "error").overwrite_output()
    try:
        stream.run(cmd=ffmpeg_exe(), input=input_bytes, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"ffmpeg failed: {tail}") from exc


def _h264(stream: ffmpeg.nodes.FilterableStream, path: Path, fps: float, crf: int) -> ffmpeg.nodes.OutputStream:
    return ffmpeg.output(
        stream,
        str(path),
        vcodec="libx264",
        pix_fmt="yuv420p",
        crf=crf,
        preset="medium",
        r=fps,
        movflags="+faststart",
    )


def _check_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def write_mp4(frames: np.ndarray, path: str | os.PathLike[str], fps: float = 7, crf: int = 18) -> Path:
    """Encode uint8 frames [F, H, W, 3] as H.264 / yuv420p mp4 (plays in browsers). Returns the path."""
    arr = _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, height, width, _ = arr.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
    if width % 2 or height % 2:
        stream = stream.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2", 0, 0, color="black")
    _run(_h264(stream, path, fps, crf), arr.tobytes())
    return path


@dataclass(frozen=True)
class VideoInfo:
    """What a written video holds (frames counted by decoding)."""

    frames: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, size, fps, codec and pixel format of a video, via imageio's ffmpeg reader."""
    import imageio.v2 as iio

    reader = iio.get_reader(str(path), "ffmpeg")
    try:
        meta = reader.get_meta_data()
        count = sum(1 for _ in reader)
    finally:
        reader.close()
    width, height = meta["size"]
    pix_fmt = str(meta.get("pix_fmt", "")).split("(")[0]
    return VideoInfo(count, int(width), int(height), float(meta.get("fps", 0.0)), str(meta.get("codec", "")), pix_fmt)


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a video to uint8 frames [F, H, W, 3]."""
    import imageio.v2 as iio

    reader = iio.get_reader(str(path), "ffmpeg")
    try:
        frames = [np.asarray(f)[..., :3] for f in reader]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path} holds no frames")
    return np.stack(frames).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def drawtext_available() -> bool:
    """Whether the bundled ffmpeg can draw a label (drawtext filter with a usable font); probed once."""
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "label.txt"
        text.write_text("probe: 50% 'x'", encoding="utf-8")
        opts = {"textfile": str(text), "expansion": "none", "fontsize": 10, "fontcolor": "white"}
        if font_file():
            opts["fontfile"] = font_file()
        stream = ffmpeg.input("color=c=black:s=64x32:d=0.1", f="lavfi").filter("drawtext", **opts)
        out = ffmpeg.output(stream, str(Path(tmp) / "probe.mp4"), vcodec="libx264", pix_fmt="yuv420p")
        try:
            _run(out)
        except (RuntimeError, OSError, subprocess.SubprocessError):
            return False
        return (Path(tmp) / "probe.mp4").stat().st_size > 0


@dataclass(frozen=True)
class _Layout:
    cell_w: int
    cell_h: int  # video part (without the label bar)
    bar: int
    columns: int
    rows: int
    sizes: tuple[tuple[int, int], ...]  # each clip's scaled (w, h)
    frames: int


def _even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def _layout(clips: Sequence[np.ndarray], columns: int | None, min_height: int, label_height: int | None) -> _Layout:
    height = _even(max(max(c.shape[1] for c in clips), min_height))
    sizes = tuple((_even(c.shape[2] * height / c.shape[1]), height) for c in clips)
    cell_w = max(w for w, _ in sizes)
    n = len(clips)
    cols = columns if columns else (n if n <= 4 else math.ceil(math.sqrt(n)))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    bar = _even(label_height if label_height else max(14, height * 0.12))
    return _Layout(cell_w, height, bar, cols, rows, sizes, max(c.shape[0] for c in clips))


def _as_clip(clip: ClipLike) -> np.ndarray:
    if isinstance(clip, np.ndarray):
        return _check_frames(clip)
    return _check_frames(read_video(clip))


def _compose_pil(clips: Sequence[np.ndarray], labels: Sequence[str], lay: _Layout) -> np.ndarray:
    """The composed frames, labels drawn with PIL (fallback path)."""
    cell_full = lay.cell_h + lay.bar
    canvas = np.zeros((lay.frames, lay.rows * cell_full, lay.columns * lay.cell_w, 3), dtype=np.uint8)
    for i, (clip, label, (w, h)) in enumerate(zip(clips, labels, lay.sizes, strict=True)):
        row, col = divmod(i, lay.columns)
        x0 = col * lay.cell_w + (lay.cell_w - w) // 2
        y0 = row * cell_full
        bar = Image.new("RGB", (lay.cell_w, lay.bar), (0, 0, 0))
        draw = ImageDraw.Draw(bar)
        size = _fit_font_size(label, lay.cell_w - 4, lay.bar)
        font = _font(size)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.text(((lay.cell_w - (right - left)) / 2 - left, (lay.bar - (bottom - top)) / 2 - top), label,
                  fill=(255, 255, 255), font=font)
        canvas[:, y0 : y0 + lay.bar, col * lay.cell_w : (col + 1) * lay.cell_w] = np.asarray(bar)
        for t in range(lay.frames):
            frame = clip[min(t, clip.shape[0] - 1)]
            if frame.shape[:2] != (h, w):
                frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.LANCZOS))
            canvas[t, y0 + lay.bar : y0 + lay.bar + h, x0 : x0 + w] = frame
    return canvas


def _compose_ffmpeg(
    clips: Sequence[np.ndarray], labels: Sequence[str], lay: _Layout, path: Path, fps: float, crf: int, tmp: Path
) -> None:
    """Compose with ffmpeg filters: scale, tpad, pad (label bar + cell), drawtext, hstack/xstack."""
    cell_full = lay.cell_h + lay.bar
    streams = []
    for i, (clip, label, (w, h)) in enumerate(zip(clips, labels, lay.sizes, strict=True)):
        raw = tmp / f"clip{i}.rgb"
        raw.write_bytes(np.ascontiguousarray(clip).tobytes())
        s = ffmpeg.input(str(raw), format="rawvideo", pix_fmt="rgb24", s=f"{clip.shape[2]}x{clip.shape[1]}",
                         framerate=fps)
        if (clip.shape[2], clip.shape[1]) != (w, h):
            s = s.filter("scale", w, h, flags="lanczos")
        if clip.shape[0] < lay.frames:
            s = s.filter("tpad", stop_mode="clone", stop=lay.frames - clip.shape[0])
        s = s.filter("pad", lay.cell_w, cell_full, (lay.cell_w - w) // 2, lay.bar, color="black")
        text = tmp / f"label{i}.txt"
        text.write_text(label, encoding="utf-8")
        opts = {
            "textfile": str(text),
            "expansion": "none",
            "fontsize": _fit_font_size(label, lay.cell_w - 4, lay.bar),
            "fontcolor": "white",
            "x": "(w-text_w)/2",
            "y": f"({lay.bar}-text_h)/2",
        }
        if font_file():
            opts["fontfile"] = font_file()
        streams.append(s.filter("drawtext", **opts))
    if len(streams) == 1:
        out = streams[0]
    elif lay.rows == 1:
        out = ffmpeg.filter(streams, "hstack", inputs=len(streams))
    else:
        positions = "|".join(
            f"{(i % lay.columns) * lay.cell_w}_{(i // lay.columns) * cell_full}" for i in range(len(streams))
        )
        out = ffmpeg.filter(streams, "xstack", inputs=len(streams), layout=positions, fill="black")
        # xstack sizes the canvas to the used cells; pad an incomplete last row to the full grid
        out = out.filter("pad", lay.columns * lay.cell_w, lay.rows * cell_full, 0, 0, color="black")
    _run(_h264(out, path, fps, crf))


def side_by_side(
    clips: Sequence[ClipLike],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    fps: float = 7,
    *,
    columns: int | None = None,
    min_height: int = 0,
    label_height: int | None = None,
    method: Literal["auto", "ffmpeg", "pil"] = "auto",
    crf: int = 18,
) -> Path:
    """A labelled comparison mp4 (H.264, yuv420p): clips (arrays or video files) in a row, or a grid
    (``columns``; default one row up to 4 clips). Clips are scaled to a common height (at least ``min_height``,
    e.g. 256 to enlarge tiny-model clips), centred in equal cells and padded in time with their last frame.
    ``method='auto'`` uses ffmpeg's drawtext when :func:`drawtext_available`, else PIL-drawn labels."""
    if len(clips) == 0 or len(clips) != len(labels):
        raise ValueError(f"need one label per clip, got {len(clips)} clips and {len(labels)} labels")
    arrays = [_as_clip(c) for c in clips]
    lay = _layout(arrays, columns, min_height, label_height)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    use_ffmpeg = method == "ffmpeg" or (method == "auto" and drawtext_available())
    if method not in ("auto", "ffmpeg", "pil"):
        raise ValueError(f"method must be 'auto', 'ffmpeg' or 'pil', got {method!r}")
    if use_ffmpeg:
        tmp = Path(tempfile.mkdtemp(prefix="mobilevd-sbs-"))
        try:
            _compose_ffmpeg(arrays, [str(x) for x in labels], lay, path, fps, crf, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        write_mp4(_compose_pil(arrays, [str(x) for x in labels], lay), path, fps=fps, crf=crf)
    return path


def frame_grid(
    clips: np.ndarray | Sequence[np.ndarray],
    path: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    max_columns: int = 7,
    gap: int = 2,
) -> Image.Image:
    """A PNG-able grid: one row per clip, up to ``max_columns`` evenly spaced frames per row, optional label
    bar above each row. The fallback for viewers that cannot play video. Saved as PNG when ``path`` is given."""
    arr_list = [np.asarray(clips)] if isinstance(clips, np.ndarray) and np.asarray(clips).ndim == 4 else list(clips)
    arrays = [_check_frames(c) for c in arr_list]
    if labels is not None and len(labels) != len(arrays):
        raise ValueError(f"need one label per clip, got {len(arrays)} clips and {len(labels)} labels")
    height = max(c.shape[1] for c in arrays)
    ncols = max(1, min(max_columns, max(c.shape[0] for c in arrays)))
    widths = [int(round(c.shape[2] * height / c.shape[1])) for c in arrays]
    cell_w = max(widths)
    bar = max(12, int(height * 0.15)) if labels is not None else 0
    total_w = ncols * cell_w + (ncols - 1) * gap
    total_h = len(arrays) * (height + bar) + (len(arrays) - 1) * gap
    grid = Image.new("RGB", (total_w, total_h), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    for r, (clip, w) in enumerate(zip(arrays, widths, strict=True)):
        y = r * (height + bar + gap)
        if labels is not None:
            label = str(labels[r])
            font = _font(_fit_font_size(label, total_w - 4, bar))
            draw.text((2, y + 1), label, fill=(255, 255, 255), font=font)
        idx = np.linspace(0, clip.shape[0] - 1, num=min(ncols, clip.shape[0])).round().astype(int)
        for c, t in enumerate(idx):
            tile = Image.fromarray(clip[t])
            if tile.size != (w, height):
                tile = tile.resize((w, height), Image.Resampling.LANCZOS)
            grid.paste(tile, (c * (cell_w + gap) + (cell_w - w) // 2, y + bar))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        grid.save(str(path), format="PNG")
    return grid
