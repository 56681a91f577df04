"""The latent cache: what a cached batch conditions the UNet on equals what encode_batch (the pipeline's recipe)
gives for the same clips and draws; building resumes; a cache of other weights is refused; training reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from explorer import data
from explorer.components import build_image_encoder, build_vae, patch_vae_config
from explorer.latent_cache import (
    LatentCache,
    LatentCacheError,
    build_latent_cache,
    cached_conditioning,
    motion_curriculum,
)
from explorer.training.denoise import encode_batch
from explorer.vae import build_patch_vae

SIZE = (32, 16)


@pytest.fixture(scope="module")
def parts() -> tuple:
    vae = build_patch_vae(patch_vae_config("micro"), [data.make_image("train", i, size=(64, 32)) for i in range(8)])
    vae.register_to_config(scaling_factor=1.7)
    return vae.eval(), build_image_encoder("micro").eval()


@pytest.fixture(scope="module")
def cache_dir(parts: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    vae, enc = parts
    root = tmp_path_factory.mktemp("cache") / "lat"
    build_latent_cache(root, vae, enc, SIZE, clips=6, shard_clips=4, chunk=3, progress=False)
    return root


def test_cached_batch_equals_encode_batch(parts: tuple, cache_dir: Path) -> None:
    vae, enc = parts
    cache = LatentCache(cache_dir, vae=vae, image_encoder=enc)
    rows = [1, 4]
    cb = cache.get(rows)
    clips = [data.make_clip("train", i, size=SIZE) for i in cb.index.tolist()]
    batch = {"frames": torch.stack([c.frames for c in clips]),
             "fps": torch.tensor([c.fps for c in clips]),
             "motion_bucket_id": torch.tensor([c.motion_bucket_id for c in clips])}
    ref = encode_batch(batch, vae, enc, torch.Generator().manual_seed(5), -3.0, 0.5)
    got = cached_conditioning(cb, vae, torch.Generator().manual_seed(5), -3.0, 0.5)
    tol = dict(atol=2e-2, rtol=2e-3)  # float16 storage
    assert torch.allclose(got.latents, ref.latents, **tol)
    assert torch.allclose(got.image_latents, ref.image_latents, **tol)
    assert torch.allclose(got.image_embeds, ref.image_embeds, **tol)
    assert torch.allclose(got.time_ids, ref.time_ids)
    # and the same noise draws: a different seed gives a different augmentation
    other = cached_conditioning(cb, vae, torch.Generator().manual_seed(6), -3.0, 0.5)
    assert not torch.allclose(other.time_ids, ref.time_ids)


def test_build_resumes_and_extends(parts: tuple, cache_dir: Path) -> None:
    vae, enc = parts
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [4, 2]
    before = (cache_dir / "shard_00000.safetensors").stat().st_mtime_ns
    build_latent_cache(cache_dir, vae, enc, SIZE, clips=9, shard_clips=4, chunk=3, progress=False)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 1]
    assert (cache_dir / "shard_00000.safetensors").stat().st_mtime_ns == before  # full shards are kept
    cache = LatentCache(cache_dir)
    assert len(cache) == 9 and cache.tensors["index"].tolist() == list(range(9))
    # the latents are stored in float16 and read through memory maps, shard by shard: rows from any shards, in any
    # order, equal the stored values
    from safetensors.torch import load_file

    stored = torch.cat([load_file(str(cache_dir / f"shard_{i:05d}.safetensors"))["latents"] for i in range(3)])
    assert stored.dtype == torch.float16
    rows = torch.tensor([8, 0, 5, 3, 4])
    assert torch.equal(cache.latents(rows), stored[rows].float())
    assert torch.equal(cache.get(rows).latents, stored[rows].float())


def test_other_weights_or_a_nonlinear_vae_are_refused(parts: tuple, cache_dir: Path, tmp_path: Path) -> None:
    vae, enc = parts
    with pytest.raises(LatentCacheError, match="another image_encoder"):
        LatentCache(cache_dir, vae=vae, image_encoder=build_image_encoder("micro", seed=3))
    with pytest.raises(LatentCacheError, match="linear encoder"):
        build_latent_cache(tmp_path / "x", build_vae("micro"), enc, SIZE, clips=1, progress=False)
    with pytest.raises(LatentCacheError, match="no latent cache"):
        LatentCache(tmp_path / "missing")
    with pytest.raises(LatentCacheError, match="another folder"):
        build_latent_cache(cache_dir, vae, enc, (64, 32), clips=1, shard_clips=4, progress=False)


def test_batches_are_reproducible_and_follow_the_curriculum(parts: tuple, cache_dir: Path) -> None:
    cache = LatentCache(cache_dir)
    a = [b.index.tolist() for _, b in zip(range(3), cache.batches(2, seed=1, start_step=0), strict=False)]
    b = [b.index.tolist() for _, b in zip(range(2), cache.batches(2, seed=1, start_step=1), strict=False)]
    assert a[1:] == b  # resuming at a step gives the same batches
    cap = motion_curriculum(0.5, 10)
    assert cap(0) == pytest.approx(0.5) and cap(5) > cap(1) and cap(10) is None
    low = float(cache.tensors["motion"].min())
    rows = cache.rows_up_to(low)
    assert all(cache.tensors["motion"][rows] <= low)


def test_cached_training_run_with_curve(parts: tuple, cache_dir: Path, tmp_path: Path) -> None:
    from explorer.models import build_unet, unet_config
    from explorer.training.denoise import DenoiseConfig, train_denoiser

    vae, enc = parts
    cfg_u = unet_config("micro")
    cfg_u.update(in_channels=2 * vae.config.latent_channels, out_channels=vae.config.latent_channels)
    unet = build_unet(cfg_u)
    cfg = DenoiseConfig(out=str(tmp_path / "run"), size=SIZE, steps=2, batch=2, warmup=1, ckpt_every=1, log_every=1,
                        num_workers=0, cache=str(cache_dir), train_image_encoder=False, curriculum_start=1.0,
                        curriculum_steps=2, probe_every=2, probe_clips=2, probe_photos=1, channel_weight_power=0.5)
    train_denoiser(cfg, unet, vae, enc, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    weights = log[0]["channel_weights"]  # measured on the cache, recorded once
    assert len(weights) == vae.config.latent_channels and sum(weights) == pytest.approx(len(weights), rel=1e-3)
    for r in rows:
        assert set(r["denoise"]) == {"0.03", "0.1", "0.3", "1", "3", "10", "30"}
        assert all(v["noise_left"] >= 0 for v in r["denoise"].values())
        assert all(len(v["channels"]) == vae.config.latent_channels for v in r["denoise"].values())
        assert r["sample_hf_kept_frame0"]["mean"] >= 0
        assert r["denoise"]["30"]["copy_frame0"] < 0.05  # copying the conditioning latent is near-exact on frame 0
        assert "mean" in r["sample_frame0_psnr"] and "mean" in r["sample_consecutive_psnr"]
        assert set(r["bucket_sweep"]["motion_ref_px"]) == {"20", "255"} and r["bucket_sweep"]["ratio"] >= 0
    with pytest.raises(ValueError, match="train_image_encoder=False"):
        train_denoiser(DenoiseConfig(out=str(tmp_path / "r2"), cache=str(cache_dir)), unet, vae, enc)

    # scripts/curve_row.py measures the run's EMA as the run itself did at that step (the same numbers to float
    # noise: the weights go through a checkpoint and a fresh model), and refuses to write a second row for a step
    from scripts.curve_row import main as curve_row_main

    vae.save_pretrained(tmp_path / "vae")
    enc.save_pretrained(tmp_path / "enc")
    args = [str(tmp_path / "run"), "--vae", str(tmp_path / "vae"), "--image-encoder", str(tmp_path / "enc"),
            "--scale", "micro", "--photos", "1"]
    with pytest.raises(SystemExit):
        curve_row_main(args)
    curve = tmp_path / "run" / "curve.jsonl"
    curve.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n")
    assert curve_row_main(args) == 0
    again = [json.loads(x) for x in curve.read_text().splitlines()]
    assert [r["step"] for r in again] == [0, 2]
    assert set(again[1]) == set(rows[1])
    for sigma, errors in rows[1]["denoise"].items():
        channels = errors.pop("channels")
        assert again[1]["denoise"][sigma].pop("channels") == pytest.approx(channels, rel=1e-2, abs=1e-3), sigma
        assert again[1]["denoise"][sigma] == pytest.approx(errors, rel=1e-2), sigma


def test_a_time_limited_run_stops_resumable(parts: tuple, cache_dir: Path, tmp_path: Path) -> None:
    """max_seconds: the run checkpoints and stops unfinished (no config.json), and the same call resumes."""
    from explorer.models import build_unet, unet_config
    from explorer.training.common import Checkpointer
    from explorer.training.denoise import DenoiseConfig, train_denoiser

    vae, enc = parts
    cfg_u = unet_config("micro")
    cfg_u.update(in_channels=2 * vae.config.latent_channels, out_channels=vae.config.latent_channels)
    cfg = DenoiseConfig(out=str(tmp_path / "run"), size=SIZE, steps=50, batch=1, warmup=1, ckpt_every=100,
                        log_every=1, num_workers=0, cache=str(cache_dir), train_image_encoder=False,
                        max_seconds=1e-9)
    res = train_denoiser(cfg, build_unet(cfg_u), vae, enc, progress=False)
    assert res["finished"] is False and res["step"] == 1
    assert Checkpointer(tmp_path / "run" / "state").exists() and not (tmp_path / "run" / "config.json").exists()
    cfg.max_seconds, cfg.steps = 0.0, 2
    res = train_denoiser(cfg, build_unet(cfg_u), vae, enc, progress=False)
    assert res["finished"] and res["step"] == 2 and (tmp_path / "run" / "config.json").exists()
