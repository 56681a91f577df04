"""Metrics on constructed cases with known answers: Fréchet distance, PSNR, Spearman, phase-correlation motion,
the VAE round trip, the FVD-proxy network (shipped weights, corruptions) and the I3D path with a stand-in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import data
from explorer import fvd_proxy as P
from explorer import metrics as M


def _texture(h: int = 96, w: int = 192, seed: int = 0) -> torch.Tensor:
    """A smooth random colour texture (1, 3, H, W) in [-1, 1] with detail at every patch."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 3, h, w)).astype(np.float32))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    return x * 2 - 1


def _pan(speed_x: float, speed_y: float = 0.0, frames: int = 14, size: tuple[int, int] = (128, 64)) -> torch.Tensor:
    """A clip (F, 3, H, W) panning over a texture at a known speed (pixels per frame), cropped from the middle."""
    w, h = size
    tex = _texture(h + 32, w + 64)
    clip = P._shift(tex.expand(frames, 3, h + 32, w + 64).clone(), np.arange(frames) * speed_x,
                    np.arange(frames) * speed_y)
    return clip[:, :, 16 : 16 + h, 32 : 32 + w]


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance


def test_fd_identical_feature_sets_is_zero() -> None:
    feats = np.random.default_rng(0).standard_normal((200, 16))
    assert M.frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_fd_shifted_samples_equals_squared_shift() -> None:
    """Same covariance, mean moved by c: FD = |c|^2 exactly (the trace terms cancel)."""
    feats = np.random.default_rng(1).standard_normal((300, 8))
    c = np.arange(8) * 0.25
    assert M.frechet_distance_features(feats, feats + c) == pytest.approx(float(c @ c), rel=1e-6, abs=1e-8)


def test_fd_closed_form_for_diagonal_gaussians() -> None:
    """FD(N(m1, diag s1), N(m2, diag s2)) = |m1 - m2|^2 + sum (sqrt s1 - sqrt s2)^2."""
    rng = np.random.default_rng(2)
    m1, m2 = rng.standard_normal(10), rng.standard_normal(10)
    s1, s2 = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    expected = float(((m1 - m2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum())
    assert M.frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_fd_general_covariances_match_symmetric_form_and_scalar_case() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu = np.zeros(6)
    exact = np.trace(s1) + np.trace(s2) - 2 * M._trace_sqrt_product_eigh(s1, s2)
    assert M.frechet_distance(mu, s1, mu, s2) == pytest.approx(exact, rel=1e-7)
    # 1-D: (m1-m2)^2 + (s1 - s2)^2 with standard deviations s
    assert M.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_fd_singular_covariances_are_finite_and_consistent() -> None:
    """Fewer samples than dimensions (as with 64 clips and 128-d features): the eps fallback stays accurate."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.5
    fd = M.frechet_distance_features(x, y)
    (m1, s1), (m2, s2) = M.feature_stats(x), M.feature_stats(y)
    exact = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * M._trace_sqrt_product_eigh(s1, s2))
    assert math.isfinite(fd) and fd > 0
    assert fd == pytest.approx(exact, rel=1e-3)


def test_fd_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_known_values() -> None:
    a = np.full((8, 8, 3), 0.5)
    assert M.psnr(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01
    u = np.full((4, 4, 3), 100, dtype=np.uint8)
    assert M.psnr(u, u + 1) == pytest.approx(20 * math.log10(255.0))  # one 8-bit level everywhere: 48.13 dB
    assert M.psnr(a, a) == math.inf
    video = np.stack([u, u + 1, u + 2])
    assert M.first_frame_psnr(video, u.astype(np.float64) / 255) == math.inf
    with pytest.raises(ValueError):
        M.psnr(a, a[:4])


def test_vae_round_trip_shape_and_range() -> None:
    from explorer.components import build_vae

    vae = build_vae("micro").eval()
    img = np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    out = M.vae_round_trip(vae, img, 32, 16)
    assert out.shape == (16, 32, 3) and out.min() >= 0 and out.max() <= 1
    assert np.array_equal(out, M.vae_round_trip(vae, img, 32, 16))  # deterministic: posterior mode


# ---------------------------------------------------------------------------------------------------------------
# Spearman


def test_spearman_known_values() -> None:
    x = [1, 2, 3, 4, 5, 6]
    assert M.spearman(x, [10, 20, 30, 40, 50, 60]) == pytest.approx(1.0)
    assert M.spearman(x, [math.exp(v) for v in x]) == pytest.approx(1.0)  # any monotone map
    assert M.spearman(x, [6, 5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert M.spearman(x, [1, 1, 1, 1, 1, 1]) == 0.0  # constant: undefined -> 0 by convention
    assert M.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6 * 2 / (3 * 8)


# ---------------------------------------------------------------------------------------------------------------
# Phase-correlation motion


@pytest.mark.parametrize("dy,dx", [(0.0, 0.0), (2.0, -3.0), (0.3, 0.7), (-1.6, 4.25)])
def test_phase_correlation_recovers_known_shift(dy: float, dx: float) -> None:
    tex = _texture(128, 128)
    frames = P._shift(tex.expand(2, 3, 128, 128).clone(), np.array([0.0, dx]), np.array([0.0, dy]))
    frames = frames[:, :, 32:96, 32:96]  # away from the border the shift padded
    g = M._gray(frames)
    shift, _ = M.phase_correlation(g[:1, 16:48, 16:48], g[1:, 16:48, 16:48])
    # one fixed Hann window pulls large shifts slightly towards 0 (content leaves the window): a few percent
    assert shift[0, 0].item() == pytest.approx(dy, abs=0.08 + 0.05 * abs(dy))
    assert shift[0, 1].item() == pytest.approx(dx, abs=0.08 + 0.05 * abs(dx))
    # the two-pass grid measurement (window re-cut at the first estimate) removes that pull where the re-cut
    # window fits inside the frame (the centre patch of the 3x3 grid; border patches may be clipped)
    refined, valid = M.frame_pair_shifts(frames, patch=32)
    assert valid.all()
    assert np.abs(refined[0, 4] - [dy, dx]).max() < 0.08  # bilinear sub-pixel shifts are not pure translations
    assert np.abs(np.median(refined[0], axis=0) - [dy, dx]).max() < 0.1


def test_global_motion_of_pans_is_proportional_to_speed() -> None:
    speeds = [0.25, 0.5, 1.0, 2.0, 4.0]  # px per frame at 128 px width
    measured = [M.global_motion(_pan(s)) for s in speeds]
    ratios = [m / (s * M.REF_WIDTH / 128) for m, s in zip(measured, speeds, strict=True)]
    assert all(abs(r - 1) < 0.05 for r in ratios), ratios  # reference px of a 256-wide frame, within 5%
    assert M.global_motion(_pan(0.0)) == pytest.approx(0.0, abs=1e-6)
    diag = M.global_motion(_pan(1.2, 1.6))
    assert diag == pytest.approx(2.0 * M.REF_WIDTH / 128, rel=0.1)  # |(1.2, 1.6)| = 2


def test_global_motion_accepts_uint8_hwc_and_matches_float() -> None:
    clip = _pan(1.0)
    u8 = clip.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert M.global_motion(u8) == pytest.approx(M.global_motion(clip), rel=0.05)


def test_global_motion_tracks_rendered_clips_and_orders_them() -> None:
    """Pans of the data renderer: measured motion within 10% of the known motion; monotone in speed."""
    clips = [data.make_clip("val", 0, data.LOWRES, kind="pan", motion=m) for m in (0.5, 1.0, 2.0, 4.0, 8.0)]
    for c in clips:
        assert M.global_motion(c.frames) == pytest.approx(c.motion, rel=0.1)
    rho, motions = M.motion_spearman([c.motion_bucket_id for c in clips], [c.frames for c in clips])
    assert rho == pytest.approx(1.0) and len(motions) == 5


def test_static_and_flat_clips_measure_zero() -> None:
    static = _pan(0.0)
    assert M.global_motion(static) == 0.0  # exactly: float noise is rounded away (else ranks of noise)
    flat = torch.zeros(14, 3, 64, 128)
    assert M.global_motion(flat) == 0.0
    assert M.patch_size_for(64, 128) == 32 and M.patch_size_for(144, 256) == 64 and M.patch_size_for(16, 32) == 8


# ---------------------------------------------------------------------------------------------------------------
# FVD-proxy network


def test_corruptions_shapes_and_semantics() -> None:
    clip = _pan(1.0, frames=14)
    rng = np.random.default_rng(0)
    for kind in P.CORRUPTIONS:
        out = P.corrupt(clip, kind, rng)
        assert out.shape == clip.shape and out.min() >= -1 and out.max() <= 1, kind
    assert torch.equal(P.corrupt(clip, "clean", rng), clip)
    frozen = P.corrupt(clip, "freeze", rng, severity=1.0)
    assert all(torch.equal(frozen[0], f) for f in frozen)
    shuffled = P.corrupt(clip, "shuffle", rng, severity=1.0)
    assert not torch.equal(shuffled, clip)
    assert sorted(float(f.sum()) for f in shuffled) == pytest.approx(sorted(float(f.sum()) for f in clip))
    with pytest.raises(ValueError):
        P.corrupt(clip, "nope", rng)


def test_proxy_input_preparation() -> None:
    cfg = P.ProxyConfig()
    u8 = np.random.default_rng(0).integers(0, 256, (2, 14, 144, 256, 3), dtype=np.uint8)
    x = P.prepare(u8, cfg)
    assert x.shape == (2, 3, 14, 64, 128) and x.min() >= -1 and x.max() <= 1
    f = P.to_unit_tensor(u8)
    assert torch.allclose(P.to_unit_tensor(list(u8)), f)
    assert P.prepare(f[:, :7], cfg).shape[2] == 14  # other clip lengths are resampled in time


def test_proxy_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = P.ProxyNet(P.ProxyConfig(channels=(8, 8, 16, 16)))
    P.save_proxy(net, tmp_path, {"note": "test"})
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    proxy = P.load_proxy(tmp_path)
    x = torch.rand(3, 14, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        direct = net.eval().features(P.prepare(x, net.config)).double().numpy()
    assert np.allclose(proxy.features(x), direct)
    assert proxy.info["note"] == "test"
    with pytest.raises(FileNotFoundError):
        P.load_proxy(tmp_path / "missing")


def test_shipped_proxy_weights_load_and_separate_real_from_broken() -> None:
    """The committed FVD-proxy: small, safetensors, and it ranks real < blurred/static < noise."""
    weights = P.DEFAULT_DIR / P.WEIGHTS_FILE
    assert weights.is_file(), "checkpoints/fvd_proxy/model.safetensors is shipped"
    assert weights.stat().st_size < 5 * 2**20
    proxy = P.load_proxy()
    assert 100_000 <= sum(p.numel() for p in proxy.net.parameters()) <= 500_000
    real = torch.stack([c.frames for c in data.eval_clips("test", 16, data.LOWRES, seed=0)])
    other = torch.stack([c.frames for c in data.eval_clips("test", 16, data.LOWRES, seed=1)])
    fr = proxy.features(real)
    assert fr.shape == (16, proxy.config.feature_dim)
    assert P.fvd_proxy(real, real, proxy) == pytest.approx(0.0, abs=1e-6)
    same = M.frechet_distance_features(fr, proxy.features(other))
    static = M.frechet_distance_features(fr, proxy.features(real[:, :1].expand_as(real)))
    noise = M.frechet_distance_features(fr, proxy.features((torch.randn(real.shape) * 0.5).clamp(-1, 1)))
    assert same < static < noise
    assert noise > 10 * same


# ---------------------------------------------------------------------------------------------------------------
# Real FVD path with a stand-in TorchScript I3D


class StandInI3D(torch.nn.Module):
    """Same call signature as the StyleGAN-V TorchScript I3D; checks the input convention it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(6, 12)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("expected rescale=False, resize=False, return_features=True")
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise RuntimeError("expected (B, 3, T, 224, 224)")
        if bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise RuntimeError("expected values in [-1, 1]")
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)
        return self.proj(stats)


def stand_in_i3d(path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.script(StandInI3D()).save(str(path))
    return path


def test_fvd_with_stand_in_torchscript_detector(tmp_path: Path) -> None:
    det = M.load_i3d(stand_in_i3d(tmp_path / "i3d_standin.pt"))
    real = torch.stack([c.frames for c in data.eval_clips("test", 6, (64, 32), seed=0)])
    assert M.i3d_preprocess(real).shape == (6, 3, 14, 224, 224)
    feats = M.i3d_features(det, real, batch_size=4)
    assert feats.shape == (6, 12)
    assert M.fvd(real, real, det) == pytest.approx(0.0, abs=1e-6)
    u8 = real.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    assert M.fvd(real, u8, det) == pytest.approx(0.0, abs=1e-3)  # uint8 HWC input, same clips
    assert M.fvd(real, torch.rand(real.shape) * 2 - 1, det) > 0.1
    with pytest.raises(FileNotFoundError):
        M.load_i3d(tmp_path / "missing.pt")


def test_consecutive_psnr_compensates_motion_and_sees_flicker() -> None:
    """Real camera motion scores high once compensated (far above the raw frame difference); texture that
    boils from frame to frame scores low; identical frames hit the cap."""
    from explorer import data

    clip = data.make_clip("test", 3, size=(128, 64), kind="pan", motion=4.0)
    v = ((clip.frames.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    raw = np.mean([M.psnr(v[i], v[i + 1]) for i in range(len(v) - 1)])
    compensated = M.consecutive_psnr(v)
    assert compensated > raw + 8 and compensated > 30
    rng = np.random.default_rng(0)
    boiling = np.clip(v.astype(float) + rng.normal(0, 20, v.shape), 0, 255).astype(np.uint8)
    assert M.consecutive_psnr(boiling) < compensated - 8
    assert M.consecutive_psnr(np.repeat(v[:1], 5, axis=0)) == M.PSNR_CAP_DB


def test_bucket_sweep_reports_motion_per_bucket() -> None:
    from explorer.components import build_pipeline
    from explorer.evaluation import bucket_sweep

    pipe = build_pipeline("micro")
    out = bucket_sweep(pipe, 32, 16, steps=1, seed=0, frames=14, min_guidance=1.0, max_guidance=1.0, noise_aug=0.02)
    assert set(out["motion_ref_px"]) == {"20", "255"} and out["photo"] == "chelsea"
    lo, hi = out["motion_ref_px"]["20"], out["motion_ref_px"]["255"]
    assert out["ratio"] == pytest.approx(hi / lo if lo > 0 else (float("inf") if hi > 0 else 1.0), rel=1e-3)


def test_bootstrap_interval_contains_the_value_and_is_reproducible() -> None:
    """Issue 15: ablation rows need a spread; the resampled FVD-proxy is biased upward (repeated clips shrink the
    covariance), so the interval is bias-corrected and must contain the full-set value."""
    from explorer.evaluation import spread

    rng = np.random.default_rng(0)
    real = rng.normal(size=(32, 128))
    gen = real + rng.normal(scale=0.5, size=(32, 128))
    fd = M.frechet_distance_features(real, gen)
    assert M.frechet_distance_eigh(real, gen) == pytest.approx(fd, rel=1e-5)
    psnrs = list(rng.normal(20, 1, 32))
    s = spread(real, gen, psnrs, list(rng.integers(1, 255, 32)), list(rng.random(32)), list(rng.normal(25, 1, 32)))
    assert s["fvd_proxy"][0] < fd < s["fvd_proxy"][1]
    assert s["first_frame_psnr"][0] < np.mean(psnrs) < s["first_frame_psnr"][1]
    assert set(s) == {"method", "fvd_proxy", "first_frame_psnr", "motion_spearman", "consecutive_psnr"}
    again = M.bootstrap_interval(lambda i: float(np.mean(np.asarray(psnrs)[i])), 32)
    assert again == M.bootstrap_interval(lambda i: float(np.mean(np.asarray(psnrs)[i])), 32)  # seeded
    wide = M.bootstrap_interval(lambda i: float(np.mean(np.asarray(psnrs[:8])[i])), 8)
    assert wide[1] - wide[0] > again[1] - again[0]  # fewer clips, wider interval
    assert M.intervals_overlap((1, 2), (1.5, 3)) and not M.intervals_overlap((1, 2), (2.5, 3))
    assert M.intervals_overlap(None, (1, 2)) is None
    with pytest.raises(ValueError):
        M.bootstrap_interval(lambda i: 0.0, 1)


def test_sharpness_and_fade_see_blur_and_fading() -> None:
    """Issue 13's floors: a blurred clip keeps less high-frequency energy than the round trip, a clip fading to a
    flat colour drifts in pixel standard deviation; a sharp static copy keeps everything and does not drift."""
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    image = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    static = np.stack([image] * 6)
    same = M.sharpness_and_fade(static, image)
    assert same["hf_kept_frame0"] == pytest.approx(1.0) and same["hf_kept_median"] == pytest.approx(1.0)
    assert same["std_drift_max"] == pytest.approx(0.0, abs=1e-9)
    x = torch.from_numpy(static).permute(0, 3, 1, 2).double()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    blurred = blurred.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    soft = M.sharpness_and_fade(blurred, image)
    assert soft["hf_kept_frame0"] < 0.3 and soft["hf_kept_median"] < 0.3
    grey = np.full_like(image, 128)
    fading = np.stack([(image * (1 - t / 5) + grey * (t / 5)).astype(np.uint8) for t in range(6)])
    fade = M.sharpness_and_fade(fading, image)
    assert fade["hf_kept_frame0"] == pytest.approx(1.0, rel=1e-3) and fade["std_drift_max"] > 0.9
    assert fade["hf_kept_median"] < 0.5
