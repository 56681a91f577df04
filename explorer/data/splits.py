"""The bundled photographs and their fixed train / val / test split (by source: a test photograph never appears
in a training clip, not even as a sprite). See docs/data.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Photo:
    """One bundled photograph, its split, and the part of it that is picture (not border)."""

    name: str
    file: str
    split: str
    weight: float = 1.0  # relative probability of being the background of a clip
    box: tuple[float, float, float, float] | None = None  # usable region (x0, y0, x1, y1) as fractions
    note: str = ""


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "astronaut.png", "train", 1.5, note="portrait, RGB"),
    Photo("hubble_deep_field", "hubble_deep_field.jpg", "train", 1.0, note="galaxies on black, RGB"),
    Photo("ihc", "ihc.png", "train", 1.0, note="stained tissue, RGB"),
    Photo("retina", "retina.jpg", "train", 1.0, (0.163, 0.163, 0.837, 0.837), "fundus, RGB; inside the disc"),
    Photo("moon", "moon.png", "train", 1.0, note="lunar surface, gray"),
    Photo("brick", "brick.png", "train", 0.7, note="wall texture, gray"),
    Photo("grass", "grass.png", "train", 0.7, note="texture, gray"),
    Photo("gravel", "gravel.png", "train", 0.7, note="texture, gray"),
    Photo("text", "text.png", "train", 0.5, note="handwriting on paper, gray"),
    Photo("page", "page.png", "train", 0.5, note="printed page, gray"),
    Photo("cell", "cell.png", "train", 0.3, note="microscopy, mostly flat, gray"),
    Photo("camera", "camera.png", "val", 1.0, note="cameraman, gray"),
    Photo("coins", "coins.png", "val", 1.0, note="coins, gray"),
    Photo("chelsea", "chelsea.png", "test", 1.0, note="cat close-up, RGB"),
    Photo("coffee", "coffee.png", "test", 1.0, note="still life, RGB"),
    Photo("rocket", "rocket.jpg", "test", 1.0, note="night scene, RGB"),
    Photo("motorcycle", "motorcycle_left.png", "test", 1.0, note="cluttered indoor scene, RGB"),
)

# Bundled files not used as photographs, and why (motorcycle_right is the stereo twin of a test photograph and
# so must never reach training; horse.png is used only as a train-only sprite silhouette).
EXCLUDED: dict[str, str] = {
    "motorcycle_right.png": "stereo twin of the test photograph motorcycle_left.png",
    "horse.png": "silhouette, not a photograph (its shape is a train-only sprite mask)",
    "chessboard_GRAY.png": "synthetic pattern",
    "chessboard_RGB.png": "synthetic pattern",
    "color.png": "synthetic colour wheel",
    "logo.png": "graphic",
    "phantom.png": "synthetic phantom",
    "clock_motion.png": "motion-blurred (would teach blur)",
    "microaneurysms.png": "too small (102x102)",
    "lfw_subset.npy": "25x25 faces, too small",
}
TRAIN_ONLY_MASKS: tuple[str, ...] = ("horse",)
_BY_NAME = {p.name: p for p in PHOTOS}


def skimage_data_dir() -> Path:
    """The folder of photographs shipped inside the installed scikit-image wheel (no fetcher, no network)."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def photos(split: str) -> list[str]:
    """Names of the photographs of one split (fixed assignment, see docs/data.md)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return [p.name for p in PHOTOS if p.split == split]


def photo_path(name: str) -> Path:
    """File of a photograph, e.g. for the app's example gallery."""
    return skimage_data_dir() / _BY_NAME[name].file


def load_photo(name: str) -> np.ndarray:
    """A photograph as uint8 RGB (H, W, 3); grayscale ones are replicated to three channels."""
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        arr = np.asarray(im.convert("RGB"))
    return arr


def is_gray(name: str) -> bool:
    """True for photographs that were grayscale on disk (they get tinted by the train-time colour augmentation)."""
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        return im.mode in ("L", "I", "I;16", "1")


def test_images() -> dict[str, np.ndarray]:
    """The held-out test photographs as uint8 RGB arrays (name -> (H, W, 3)), e.g. as app examples."""
    return {name: load_photo(name) for name in photos("test")}
