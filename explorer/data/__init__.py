"""Offline, deterministic image-to-video data synthesised from the photographs bundled inside scikit-image.

Why: the real training videos (and SVD's weights) cannot be downloaded here, yet every stage of the tiny model
family has to be trained and judged on *something* that behaves like camera footage. A photograph seen through a
moving virtual camera (pan, zoom, roll, combinations) with optional rigid foreground objects cut from other
photographs gives clips whose motion is known exactly, so SVD's micro-conditioning can be derived honestly:

* ``motion_bucket_id`` comes from the *measured* motion of the rendered clip -- the mean magnitude of the dense
  displacement field between consecutive frames, computed from the known warp (the flow SVD estimated with an
  optical-flow network) -- mapped monotonically to 0..255 by :func:`motion_to_bucket`.
* ``fps`` is the rate at which the continuous virtual motion was sampled: per-frame motion = speed / fps, so at a
  given speed a lower fps means more motion per frame.

Everything is generated on the fly from pyramids of pre-downscaled photographs held in memory (sampling from
the level nearest the target scale keeps the bilinear warp anti-aliased), deterministic in
``(split, index, seed)``; the photographs are split train / val / test by source and a test photograph never
appears in a training clip, not even as a sprite. Sizes are ``(width, height)`` everywhere (128x64, 256x144).
See docs/data.md.

The package, by concern (every name below is importable from ``explorer.data`` itself):

* :mod:`~explorer.data.splits` -- the bundled photographs and their train / val / test split;
* :mod:`~explorer.data.pyramids` -- the in-memory photograph pyramids;
* :mod:`~explorer.data.motion` -- measuring a clip's motion and the bucket / fps mappings;
* :mod:`~explorer.data.spec` -- :class:`Clip` and the clip specification it is rendered from;
* :mod:`~explorer.data.render` -- sampling and rendering clips (``make_clip``, ``make_batch``, ``make_image``,
  ``eval_clips``);
* :mod:`~explorer.data.datasets` -- torch datasets; :mod:`~explorer.data.clip_cache` -- the on-disk clip cache.
"""

from __future__ import annotations

from explorer.data.clip_cache import DATA_VERSION, ClipCache
from explorer.data.datasets import ClipDataset, ClipStream, ImageDataset
from explorer.data.motion import (
    BUCKET_M0,
    BUCKET_M_MAX,
    REF_WIDTH,
    added_time_ids,
    bucket_to_motion,
    motion_per_frame,
    motion_to_bucket,
)
from explorer.data.pyramids import _Pyramid as _Pyramid  # private, re-exported: tests/test_data.py reads them
from explorer.data.pyramids import _pyramid as _pyramid
from explorer.data.render import (
    BASE,
    FPS_RANGE,
    KIND_PROBS,
    KINDS,
    LOWRES,
    MAX_ROTATION_DEG,
    MAX_ZOOM_RATE,
    MIN_VIEW_WIDTH,
    MOTION_RANGE,
    NUM_FRAMES,
    SPEED_RANGE,
    eval_clips,
    make_batch,
    make_clip,
    make_image,
    size_arg,
)
from explorer.data.spec import Clip
from explorer.data.splits import (
    EXCLUDED,
    PHOTOS,
    SPLITS,
    TRAIN_ONLY_MASKS,
    Photo,
    is_gray,
    load_photo,
    photo_path,
    photos,
    skimage_data_dir,
    test_images,
)

# torch threads used while rendering (None: leave torch's setting alone). Rendering is many small ops; on a shared
# 2-core machine two threads were measured 6-8x *slower* than one under load, so one is the default. Read here, at
# each render, by explorer.data.render._render_threads: set ``explorer.data.RENDER_THREADS`` to change it.
RENDER_THREADS: int | None = 1

__all__ = [
    "BASE",
    "BUCKET_M0",
    "BUCKET_M_MAX",
    "DATA_VERSION",
    "EXCLUDED",
    "FPS_RANGE",
    "KINDS",
    "KIND_PROBS",
    "LOWRES",
    "MAX_ROTATION_DEG",
    "MAX_ZOOM_RATE",
    "MIN_VIEW_WIDTH",
    "MOTION_RANGE",
    "NUM_FRAMES",
    "PHOTOS",
    "REF_WIDTH",
    "RENDER_THREADS",
    "SPEED_RANGE",
    "SPLITS",
    "TRAIN_ONLY_MASKS",
    "Clip",
    "ClipCache",
    "ClipDataset",
    "ClipStream",
    "ImageDataset",
    "Photo",
    "added_time_ids",
    "bucket_to_motion",
    "eval_clips",
    "is_gray",
    "load_photo",
    "make_batch",
    "make_clip",
    "make_image",
    "motion_per_frame",
    "motion_to_bucket",
    "photo_path",
    "photos",
    "size_arg",
    "skimage_data_dir",
    "test_images",
]
