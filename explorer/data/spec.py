"""What a clip is: :class:`Clip` (the rendered frames and their conditioning) and the JSON-serialisable
specification it is rendered from (the virtual camera ``_Spec`` and its rigid sprites ``_Obj``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explorer.data.motion import REF_WIDTH, added_time_ids
from explorer.data.splits import TRAIN_ONLY_MASKS


@dataclass
class Clip:
    """A rendered clip with the conditioning SVD needs; ``frames`` is (F, 3, H, W) float in [-1, 1]."""

    frames: torch.Tensor
    motion_bucket_id: int
    fps: int
    motion: float  # measured mean displacement, reference px (of a 256-wide frame) per frame
    params: dict[str, Any]
    split: str
    index: int
    seed: int

    @property
    def image(self) -> torch.Tensor:
        """The conditioning image (first frame), (3, H, W) in [-1, 1]."""
        return self.frames[0]

    def added_time_ids(self, noise_aug_strength: float = 0.02) -> list[float]:
        """``[fps - 1, motion_bucket_id, noise_aug_strength]`` as SVD's UNet takes it."""
        return added_time_ids(self.fps, self.motion_bucket_id, noise_aug_strength)

    def to_sample(self) -> dict[str, Any]:
        """Tensors only, so torch's default collate can batch it."""
        return {
            "frames": self.frames,
            "motion_bucket_id": torch.tensor(self.motion_bucket_id, dtype=torch.long),
            "fps": torch.tensor(self.fps, dtype=torch.long),
            "motion": torch.tensor(self.motion, dtype=torch.float32),
            "index": torch.tensor(self.index, dtype=torch.long),
        }


@dataclass
class _Obj:
    texture: str
    shape: str  # "blob" | "ellipse" | "horse"
    radius: float  # width units
    shape_coef: list[float]  # blob: [a2, b2, a3, b3, a4, b4]; ellipse: [aspect]
    pos: np.ndarray  # (F, 2) width units, relative to the frame centre, y down
    rot: np.ndarray  # (F,) radians
    scale: np.ndarray  # (F,)
    tex_center: tuple[float, float]  # level-0 px in the texture photograph
    tex_scale: float  # texture px per width unit
    tex_rot: float
    shadow: bool


@dataclass
class _Spec:
    kind: str
    photo: str
    flip: bool
    fps: int
    target: float  # requested per-frame motion (ref px) before fitting into the photograph
    center: np.ndarray  # (F, 2) level-0 px of the (possibly mirrored) photograph
    view: np.ndarray  # (F,) source px per frame width
    rot: np.ndarray  # (F,) radians
    pan: tuple[float, float]  # width units / frame
    zoom_rate: float  # log zoom per frame, > 0 = zooming in
    rot_rate: float  # radians / frame
    accel: float
    objects: list[_Obj] = field(default_factory=list)
    color: list[list[float]] | None = None  # 3x4 affine on RGB in [0, 1]

    def to_params(self) -> dict[str, Any]:
        comps = [n for n, v in (("pan", np.hypot(*self.pan)), ("zoom", self.zoom_rate), ("rotate", self.rot_rate))
                 if abs(v) > 0]
        return {
            "type": self.kind,
            "components": comps,
            "photo": self.photo,
            "flip": self.flip,
            "fps": self.fps,
            "dt": 1.0 / self.fps,
            "requested_motion_ref_px": self.target,
            "pan_velocity_ref_px": [self.pan[0] * REF_WIDTH, self.pan[1] * REF_WIDTH],
            "zoom_rate": self.zoom_rate,
            "rotation_deg_per_frame": math.degrees(self.rot_rate),
            "acceleration": self.accel,
            "camera": {
                "center_px": self.center.round(3).tolist(),
                "view_width_px": self.view.round(3).tolist(),
                "rotation_deg": np.degrees(self.rot).round(4).tolist(),
            },
            "objects": [
                {
                    "texture": o.texture,
                    "shape": o.shape,
                    "radius": o.radius,
                    "track": o.pos.round(5).tolist(),
                    "rotation_deg": np.degrees(o.rot).round(4).tolist(),
                    "scale": o.scale.round(5).tolist(),
                    "shadow": o.shadow,
                }
                for o in self.objects
            ],
            "color": self.color,
            "sources": sorted({self.photo, *(o.texture for o in self.objects)}),
            "masks": sorted({o.shape for o in self.objects if o.shape in TRAIN_ONLY_MASKS}),
        }
