"""A cache of encoded training clips, so a UNet step is only the UNet (no rendering, no VAE, no image encoder).

Each training clip is rendered once, encoded by the frozen VAE (the scaled latents of its 14 frames) and the
frozen image encoder (the embedding of its first frame), and stored in float16 safetensors shards with its fps,
motion bucket and measured motion. Nothing is pickled.

What the UNet sees is what ``StableVideoDiffusionPipeline`` gives it. The only per-step randomness of the
conditioning is SVD's noise augmentation, which is applied in *pixel* space before the VAE encodes the first
frame. The tiny PatchVAE's encoder is linear, so ``encode(first + aug * n) = encode(first) + aug * encode_noise(n)``
exactly: :func:`cached_conditioning` draws the same pixel noise from the same generator as
:func:`explorer.training.denoise.encode_batch` and projects it, giving the same conditioning up to the float16
rounding of the stored latents (tests/test_latent_cache.py). A VAE whose encoder is not linear is refused.

Layout::

    <root>/manifest.json           size, frames, channels, scaling factor, fingerprints of the VAE and image
                                   encoder, data seed and version, shards
    <root>/shard_00000.safetensors latents (n, F, C, h, w) f16, embeds (n, D) f16, fps, motion_bucket_id, index
                                   (n,) int64, motion (n,) f32

Building resumes shard by shard; a cache built with other weights or data refuses to load (fingerprints).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from explorer import data, edm, randomness
from explorer.randomness import Random
from explorer.vae import is_linear_encoder

CACHE_FORMAT = "mobilevd-explorer/latent-cache/1"
MANIFEST = "manifest.json"


class LatentCacheError(ValueError):
    """A latent cache is missing, incomplete, or was built with other weights or data."""


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (all of them, in key order). For a VAE only the encoder and the
    scaling factor count: a decoder finetuned later does not change the latents."""
    if hasattr(module, "encoder") and hasattr(module, "config") and hasattr(module.config, "scaling_factor"):
        return hashlib.sha256((fingerprint(module.encoder) + repr(float(module.config.scaling_factor))).encode()
                              ).hexdigest()[:16]
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class CacheBatch:
    latents: torch.Tensor  # (B, F, C, h, w) scaled clean latents, float32
    embeds: torch.Tensor  # (B, 1, D)
    fps: torch.Tensor  # (B,)
    motion_bucket_id: torch.Tensor  # (B,)
    motion: torch.Tensor  # (B,) reference px per frame
    index: torch.Tensor  # (B,) clip indices of the training split


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


@torch.no_grad()
def _encode_clips(clips: list[data.Clip], vae: Any, image_encoder: Any) -> dict[str, torch.Tensor]:
    from explorer.training.denoise import clip_embed_input

    frames = torch.stack([c.frames for c in clips])  # (n, F, 3, H, W)
    n, f = frames.shape[:2]
    lat = vae.encode(frames.flatten(0, 1)).latent_dist.mode()
    lat = lat.reshape(n, f, *lat.shape[1:]) * vae.config.scaling_factor
    embeds = image_encoder(clip_embed_input(frames[:, 0])).image_embeds
    return {
        "latents": lat.to(torch.float16).contiguous(),
        "embeds": embeds.to(torch.float16).contiguous(),
        "fps": torch.tensor([c.fps for c in clips], dtype=torch.int64),
        "motion_bucket_id": torch.tensor([c.motion_bucket_id for c in clips], dtype=torch.int64),
        "motion": torch.tensor([c.motion for c in clips], dtype=torch.float32),
        "index": torch.tensor([c.index for c in clips], dtype=torch.int64),
    }


def build_latent_cache(root: str | Path, vae: Any, image_encoder: Any, size: tuple[int, int], clips: int,
                       shard_clips: int = 512, data_seed: int = 0, start: int = 0, frames: int = data.NUM_FRAMES,
                       chunk: int = 32, progress: bool = True) -> dict[str, Any]:
    """Encode training clips ``start .. start+clips-1`` at ``size`` into ``root`` (resumes; extends a smaller
    cache of the same weights). Returns the manifest."""
    if not is_linear_encoder(vae):
        raise LatentCacheError("the latent cache needs a VAE with a linear encoder (PatchVAE): SVD's pixel-space "
                               "noise augmentation cannot otherwise be reproduced from stored latents")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vae, image_encoder = vae.eval(), image_encoder.eval()
    width, height = size
    head = {"format": CACHE_FORMAT, "width": width, "height": height, "frames": frames,
            "latent_channels": int(vae.config.latent_channels), "scaling_factor": float(vae.config.scaling_factor),
            "vae": fingerprint(vae), "image_encoder": fingerprint(image_encoder), "data_seed": data_seed,
            "data_version": data.DATA_VERSION, "start": start, "shard_clips": shard_clips}
    path = root / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {**head, "shards": []}
    for key, value in head.items():
        if manifest.get(key) != value:
            raise LatentCacheError(f"{path}: {key} is {manifest.get(key)!r}, this build has {value!r}; "
                                   f"use another folder")
    done = sum(s["count"] for s in manifest["shards"] if s["count"] == shard_clips)
    manifest["shards"] = [s for s in manifest["shards"] if s["count"] == shard_clips]  # a partial last shard
    bar = tqdm(total=clips, initial=min(done, clips), disable=not progress, desc="latent cache")
    while done < clips:
        i = len(manifest["shards"])
        count = min(shard_clips, clips - done)
        first = start + done
        parts = []
        for lo in range(0, count, chunk):
            batch = [data.make_clip("train", first + k, size=size, seed=data_seed)
                     for k in range(lo, min(count, lo + chunk))]
            parts.append(_encode_clips(batch, vae, image_encoder))
            bar.update(len(batch))
        tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if frames != tensors["latents"].shape[1]:
            tensors["latents"] = tensors["latents"][:, :frames].contiguous()
        tmp = root / (_shard_name(i) + f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, root / _shard_name(i))
        manifest["shards"].append({"file": _shard_name(i), "first": first, "count": count})
        done += count
        _write_manifest(root, manifest)
    bar.close()
    _write_manifest(root, manifest)
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)


_NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
                 "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _map_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of a copy-on-write memory map: nothing is read until used, and
    the pages are the OS's file cache, shared by every process that maps the same shard (several training jobs
    or data-parallel processes on one machine hold one copy of the cache in memory, not one each)."""
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
    base = 8 + header_len
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _NUMPY_DTYPES.get(info["dtype"])
        if dtype is None:
            raise LatentCacheError(f"{path}: tensor {name} has dtype {info['dtype']}, which the cache never writes")
        start, end = info["data_offsets"]
        count = (end - start) // np.dtype(dtype).itemsize
        array = np.memmap(path, dtype=dtype, mode="c", offset=base + start, shape=(count,)) if count else \
            np.zeros(0, dtype)
        out[name] = torch.from_numpy(array).reshape(info["shape"])
    return out


class LatentCache:
    """A built cache, memory-mapped; batches are drawn reproducibly from the step number."""

    def __init__(self, root: str | Path, vae: Any | None = None, image_encoder: Any | None = None) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise LatentCacheError(f"no latent cache at {self.root} ({MANIFEST} missing)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise LatentCacheError(f"{path}: unknown format {self.manifest.get('format')!r}")
        for name, module in (("vae", vae), ("image_encoder", image_encoder)):
            if module is not None and fingerprint(module) != self.manifest[name]:
                raise LatentCacheError(f"{path}: built with another {name} (fingerprint "
                                       f"{self.manifest[name]}, given {fingerprint(module)})")
        shards = [_map_safetensors(self.root / s["file"]) for s in self.manifest["shards"]]
        if not shards:
            raise LatentCacheError(f"{path}: the cache holds no clips")
        # the small per-clip tensors are gathered into memory; the latents (almost all of the bytes) stay mapped,
        # shard by shard, and a batch reads only its rows
        self._latents = [s["latents"] for s in shards]
        self._first_row = np.cumsum([0] + [len(x) for x in self._latents])
        self.tensors = {k: torch.cat([s[k] for s in shards]) for k in shards[0] if k != "latents"}

    def __len__(self) -> int:
        return int(self.tensors["index"].shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.manifest["width"]), int(self.manifest["height"])

    def get(self, rows: torch.Tensor | list[int]) -> CacheBatch:
        rows = torch.as_tensor(rows, dtype=torch.long)
        t = self.tensors
        return CacheBatch(self.latents(rows), t["embeds"][rows].float().unsqueeze(1), t["fps"][rows],
                          t["motion_bucket_id"][rows], t["motion"][rows], t["index"][rows])

    def latents(self, rows: torch.Tensor) -> torch.Tensor:
        """The latents of ``rows`` (global row numbers), float32, read from their shards' maps."""
        shard = np.searchsorted(self._first_row, rows.numpy(), side="right") - 1
        picked = [self._latents[s][r - self._first_row[s]] for s, r in zip(shard.tolist(), rows.tolist(), strict=True)]
        if not picked:
            return self._latents[0][:0].float()
        return torch.stack(picked).float()

    def rows_up_to(self, max_motion: float | None) -> torch.Tensor:
        """Rows whose clip moves at most ``max_motion`` reference px per frame (all rows for None)."""
        if max_motion is None:
            return torch.arange(len(self))
        return torch.nonzero(self.tensors["motion"] <= max_motion).flatten()

    def batches(self, batch: int, seed: int, start_step: int = 0,
                max_motion: Callable[[int], float | None] | None = None, processes: int = 1,
                process_index: int = 0) -> Iterator[CacheBatch]:
        """Batch ``step`` for step = start_step, start_step+1, ...: ``batch`` distinct rows drawn uniformly from the
        rows allowed at that step (``max_motion(step)``, the motion curriculum), the same for a given seed and step
        whether or not the run was resumed. Data parallel: the step's global batch of ``processes * batch`` rows is
        drawn once and process ``process_index`` takes its slice, so N processes see what one process with the
        combined batch sees."""
        step, total = start_step, batch * processes
        while True:
            cap = max_motion(step) if max_motion is not None else None
            allowed = self.rows_up_to(cap)
            if len(allowed) < total:
                allowed = torch.arange(len(self))
            rng = np.random.default_rng([seed, step])
            pick = allowed[torch.from_numpy(rng.choice(len(allowed), size=total, replace=False))]
            yield self.get(pick[process_index * batch:(process_index + 1) * batch])
            step += 1


def motion_curriculum(start_cap: float, steps: int, end_cap: float = data.MOTION_RANGE[1]
                      ) -> Callable[[int], float | None]:
    """Max motion (reference px per frame) allowed at a step: ``start_cap`` rising geometrically to ``end_cap``
    over ``steps`` steps, then no cap (the full range). ``steps`` 0: no curriculum."""
    def cap(step: int) -> float | None:
        if steps <= 0 or step >= steps:
            return None
        return float(start_cap * (end_cap / start_cap) ** (step / steps))
    return cap


def cached_conditioning(batch: CacheBatch, vae: Any, generator: Random, aug_mean: float,
                        aug_std: float, device: torch.device | str = "cpu") -> Any:
    """The :class:`~explorer.training.denoise.Conditioning` of a cached batch, with the same random draws, in the
    same order, as ``encode_batch`` makes for the same clips (noise-augmentation strength, then pixel noise)."""
    from explorer.training.denoise import Conditioning

    lat = batch.latents
    b = lat.shape[0]
    factor = int(vae.config.patch_size)
    pixel_shape = (b, 3, lat.shape[-2] * factor, lat.shape[-1] * factor)
    aug = torch.exp(aug_mean + aug_std * randomness.randn(generator, b))
    noise = randomness.randn(generator, pixel_shape)
    with torch.no_grad():
        image_latents = lat[:, 0] / vae.config.scaling_factor + aug.view(b, 1, 1, 1) * vae.encode_noise(noise)
    time_ids = edm.added_time_ids(batch.fps.float(), batch.motion_bucket_id.float(), aug)
    return Conditioning(lat.to(device), image_latents.to(device), batch.embeds.to(device), time_ids.to(device))


__all__ = ["CACHE_FORMAT", "CacheBatch", "LatentCache", "LatentCacheError", "build_latent_cache",
           "cached_conditioning", "fingerprint", "motion_curriculum"]
