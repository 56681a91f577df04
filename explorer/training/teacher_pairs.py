"""The teacher's own samples, computed once: (conditioning, noise, teacher clip) pairs for one-step distillation.

Why (issue 13, docs/training.md): the one-step stages regress their output from ``sigma_max * eps`` onto the
teacher's multi-step sample from the same ``eps`` (``AdversarialConfig.distill_weight``), so each seed commits to
one motion instead of the mean over motions (the old stages' fade). Computed online, the teacher's 8 guided Euler
steps are 16 UNet evaluations of the batch per training step, five times the rest of the step on this CPU; the
one-step stages of the path (five of them, and their ablations) all distil from the same teacher at the same size,
so the pairs are computed once and read back.

Layout::

    <root>/manifest.json            format, size, frames, teacher steps and guidance, fingerprints of the teacher,
                                    VAE and image encoder, data seed, shard size, shards written
    <root>/shard_00000.safetensors  latents (the real clip), image_latents (noise-augmented first frame), image_embeds,
                                    time_ids, eps (float16, and the teacher ran on exactly these values), target

Shard ``k`` holds training clips ``k * shard ... (k + 1) * shard - 1`` of ``data_seed`` with noise drawn from
``(seed, k)``, so building resumes shard by shard and any prefix of shards is the same whatever was built after.
A store built with other weights refuses to load for them (fingerprints).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from explorer import data
from explorer.latent_cache import fingerprint
from explorer.training.denoise import Conditioning, encode_batch
from explorer.training.distill import teacher_sample

PAIRS_FORMAT = "mobilevd-explorer/teacher-pairs/1"
MANIFEST = "manifest.json"
_KEYS = ("latents", "image_latents", "image_embeds", "time_ids", "eps", "target")


class TeacherPairsError(ValueError):
    """A pair store is missing, empty, or was built with other weights."""


@dataclass
class PairsConfig:
    out: str = "runs/teacher-pairs-128x64"
    size: tuple[int, int] = data.LOWRES
    frames: int = data.NUM_FRAMES
    pairs: int = 1024
    shard: int = 32
    teacher_steps: int = 8  # guided Euler steps (docs/training.md: 8 steps sample as well as 50 at this scale)
    guidance: tuple[float, float] = (1.0, 3.0)  # SVD's ramp over frames
    aug_mean: float = -3.0  # the adversarial loop's noise augmentation of the first frame
    aug_std: float = 0.5
    seed: int = 0
    data_seed: int = 11  # not the adversarial loop's clip stream, so held-in clips stay distinct
    chunk: int = 8  # clips per teacher batch (the noise draws follow it, so it is a setting of the store)
    threads: int = 0


def fingerprints(teacher: torch.nn.Module, vae: torch.nn.Module, image_encoder: torch.nn.Module) -> dict[str, str]:
    return {"teacher": fingerprint(teacher), "vae": fingerprint(vae), "image_encoder": fingerprint(image_encoder)}


@torch.no_grad()
def build_pairs(cfg: PairsConfig, teacher: torch.nn.Module, vae: torch.nn.Module, image_encoder: torch.nn.Module,
                progress: bool = True) -> dict[str, Any]:
    """Write (or finish) the store at ``cfg.out``; returns its manifest."""
    if cfg.pairs < 1 or cfg.shard < 1 or cfg.pairs % cfg.shard:
        raise ValueError(f"pairs ({cfg.pairs}) must be a positive multiple of shard ({cfg.shard})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    for m in (teacher, vae, image_encoder):
        m.requires_grad_(False).eval()
    if next(teacher.parameters()).device.type == "cpu":
        from explorer.cpu_speed import use_fast_temporal_convs

        use_fast_temporal_convs(teacher)
    prints = fingerprints(teacher, vae, image_encoder)
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "pairs", "threads")}
    if manifest and (manifest["fingerprints"] != prints or manifest["settings"] != json.loads(json.dumps(settings))):
        raise TeacherPairsError(f"{root} was built with other weights or settings; use another --out")
    manifest = {"format": PAIRS_FORMAT, "settings": settings, "fingerprints": prints,
                "shards": manifest.get("shards", 0), "seconds": manifest.get("seconds", 0.0)}
    n_shards = cfg.pairs // cfg.shard
    bar = tqdm(total=n_shards, initial=manifest["shards"], disable=not progress, desc="teacher pairs")
    for k in range(manifest["shards"], n_shards):
        t0 = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in _KEYS}
        for start in range(0, cfg.shard, cfg.chunk):
            n = min(cfg.chunk, cfg.shard - start)
            clips = [data.make_clip("train", k * cfg.shard + start + i, cfg.size, cfg.data_seed).to_sample()
                     for i in range(n)]
            batch = {key: torch.stack([c[key] for c in clips]) for key in ("frames", "fps", "motion_bucket_id")}
            batch["frames"] = batch["frames"][:, : cfg.frames]
            cond = encode_batch(batch, vae, image_encoder, gen, cfg.aug_mean, cfg.aug_std)
            cond = Conditioning(*(v.half().float() for v in (cond.latents, cond.image_latents, cond.image_embeds)),
                                cond.time_ids)  # the teacher sees exactly the stored (float16) values
            eps = torch.randn(cond.latents.shape, generator=gen).half().float()
            target = teacher_sample(teacher, cond, eps, cfg.teacher_steps, *cfg.guidance)
            for key, v in zip(_KEYS, (cond.latents, cond.image_latents, cond.image_embeds, cond.time_ids, eps, target),
                              strict=True):
                parts[key].append(v)
        tensors = {key: torch.cat(v).contiguous() for key, v in parts.items()}
        tensors = {key: (v if key == "time_ids" else v.half()) for key, v in tensors.items()}
        tmp = root / f"shard_{k:05d}.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(root / f"shard_{k:05d}.safetensors")
        manifest["shards"] = k + 1
        manifest["seconds"] = round(manifest["seconds"] + time.time() - t0, 1)
        tmp_manifest = root / (MANIFEST + ".tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1))
        tmp_manifest.replace(manifest_path)
        bar.update(1)
    bar.close()
    return manifest


class PairStore:
    """The built shards of a store, in memory (float16; 1,024 pairs at 128x64 are 720 MB), drawn in a seeded
    permutation per epoch. ``indices(step, batch)`` is a pure function of the step, so a resumed run draws what an
    uninterrupted one would; data-parallel processes take consecutive slices of each global batch."""

    def __init__(self, root: str | Path, expect: dict[str, str] | None = None, seed: int = 0) -> None:
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise TeacherPairsError(f"no teacher pairs at {root} "
                                    "(build them: python scripts/build_path.py --only teacher-pairs)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != PAIRS_FORMAT or not self.manifest.get("shards"):
            raise TeacherPairsError(f"{root} holds no complete shard of teacher pairs")
        if expect is not None and self.manifest["fingerprints"] != expect:
            raise TeacherPairsError(f"{root} was built with another teacher, VAE or image encoder")
        shards = [load_file(str(root / f"shard_{k:05d}.safetensors")) for k in range(self.manifest["shards"])]
        self.tensors = {key: torch.cat([s[key] for s in shards]) for key in _KEYS}
        self.seed = int(seed)

    def __len__(self) -> int:
        return int(self.tensors["eps"].shape[0])

    def indices(self, step: int, batch: int, process_index: int = 0, processes: int = 1) -> torch.Tensor:
        n, global_batch = len(self), batch * processes
        first = step * global_batch + process_index * batch
        out = []
        for j in range(first, first + batch):
            epoch, pos = divmod(j, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            out.append(int(perm[pos]))
        return torch.tensor(out)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[Conditioning, torch.Tensor, torch.Tensor]:
        """(conditioning with the real clip's latents, eps, the teacher's clip from ``sigma_max * eps``)."""
        t = {key: v[idx].float().to(device) for key, v in self.tensors.items()}
        return Conditioning(t["latents"], t["image_latents"], t["image_embeds"], t["time_ids"]), t["eps"], t["target"]


__all__ = ["PairStore", "PairsConfig", "TeacherPairsError", "build_pairs", "fingerprints"]
