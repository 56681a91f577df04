"""The on-disk clip cache (uint8 frames + JSON metadata in ``.npz``, no pickles)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from explorer.data.render import _levels_to_unit, make_clip

DATA_VERSION = 1  # bump when the generator changes; part of the on-disk cache path


class ClipCache:
    """On-disk cache of rendered clips (uint8 frames + JSON metadata in .npz, no pickles) under an ignored folder.

    Frames are quantised to 8 bits when rendered, so a cached clip equals the freshly generated one exactly.
    The folder name carries split, size, seed and DATA_VERSION, so a generator change never reads stale clips.
    """

    def __init__(self, root: str | os.PathLike, split: str, size: tuple[int, int], seed: int) -> None:
        w, h = size
        self.split, self.size, self.seed = split, (w, h), seed
        self.dir = Path(root) / f"{split}_{w}x{h}_seed{seed}_v{DATA_VERSION}"

    def path(self, index: int) -> Path:
        return self.dir / f"{index:08d}.npz"

    def get(self, index: int) -> dict[str, torch.Tensor]:
        """Load clip `index`, rendering and storing it first if absent (atomic rename, safe across workers)."""
        p = self.path(index)
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                frames = _levels_to_unit(torch.from_numpy(z["frames"]).float())
            return {
                "frames": frames,
                "motion_bucket_id": torch.tensor(meta["motion_bucket_id"], dtype=torch.long),
                "fps": torch.tensor(meta["fps"], dtype=torch.long),
                "motion": torch.tensor(meta["motion"], dtype=torch.float32),
                "index": torch.tensor(index, dtype=torch.long),
            }
        clip = make_clip(self.split, index, self.size, self.seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        u8 = clip.frames.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        meta = {"motion_bucket_id": clip.motion_bucket_id, "fps": clip.fps, "motion": clip.motion,
                "params": clip.params}
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, frames=u8, meta=np.array(json.dumps(meta)))
        os.replace(tmp, p)
        return clip.to_sample()
