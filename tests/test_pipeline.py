"""Components at each scale, generation (shapes, NFE, seeded determinism, shared noise) and input images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.components import (
    SVD_SCHEDULER_CONFIG,
    build_components,
    build_pipeline,
    build_scheduler,
    image_encoder_config,
    vae_config,
)
from explorer.models import VAE_FACTOR, unet_config
from explorer.pipeline import (
    ImageInputError,
    generate,
    initial_latents,
    load_image,
    prepare_image,
)

W, H, F = 32, 16, 3  # multiples of 8 px; latent 8x4 at the micro VAE's factor 4
BASE = {"width": W, "height": H, "num_frames": F, "steps": 2, "min_guidance": 1.0, "max_guidance": 1.0}



@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("micro", seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random((24, 40, 3))


# ---------------------------------------------------------------------------------------------------------
# Components


@pytest.mark.parametrize("scale", ["full", "tiny", "micro"])
def test_component_configs_fit_the_unet(scale: str) -> None:
    assert image_encoder_config(scale)["projection_dim"] == unet_config(scale)["cross_attention_dim"]
    assert 2 ** (len(vae_config(scale)["block_out_channels"]) - 1) == VAE_FACTOR[scale]
    assert image_encoder_config(scale)["image_size"] == 224  # the SVD pipeline resizes to 224 itself


def test_full_components_have_svd_sizes() -> None:
    comps = build_components("full", device="meta")
    millions = {n: sum(p.numel() for p in comps[n].parameters()) / 1e6 for n in ("unet", "vae", "image_encoder")}
    assert millions["unet"] == pytest.approx(1524.6, abs=0.1)
    assert millions["vae"] == pytest.approx(97.7, abs=0.1)
    assert millions["image_encoder"] == pytest.approx(632.1, abs=0.1)


def test_tiny_pipeline_runs() -> None:
    tiny = build_pipeline("tiny", seed=0)
    res = generate(tiny, np.zeros((8, 8, 3)), width=64, height=32, num_frames=2, steps=1, min_guidance=1.0,
                   max_guidance=1.0)
    assert res.frames.shape == (2, 32, 64, 3) and res.nfe == 1


def test_random_pipelines_are_seeded() -> None:
    a, b, c = build_pipeline("micro", seed=5), build_pipeline("micro", seed=5), build_pipeline("micro", seed=6)
    for name in ("unet", "vae", "image_encoder"):
        sa, sb, sc = (getattr(p, name).state_dict() for p in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].numel() > 1)


def test_scheduler_is_svds_and_one_step_returns_x0() -> None:
    sched = build_scheduler()
    for key, value in SVD_SCHEDULER_CONFIG.items():
        assert sched.config[key] == value
    sched.set_timesteps(1)
    assert sched.sigmas.tolist() == [700.0, 0.0]  # one evaluation at sigma_max, then sigma 0
    assert float(sched.timesteps[0]) == pytest.approx(0.25 * np.log(700.0), rel=1e-5)  # c_noise
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 3, 3, generator=gen) * sched.init_noise_sigma
    v = torch.randn(x.shape, generator=gen)
    sched.scale_model_input(x, sched.timesteps[0])
    out = sched.step(v, sched.timesteps[0], x)
    s = 700.0
    x0 = x / (s**2 + 1) - v * s / (s**2 + 1) ** 0.5  # EDM c_skip x + c_out F with v-prediction
    assert torch.allclose(out.prev_sample, x0, atol=1e-3)
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Generation


def test_generate_shapes_and_nfe(pipe, image) -> None:
    res = generate(pipe, image, **{**BASE, "max_guidance": 2.0}, seed=1)
    assert res.frames.shape == (F, H, W, 3) and res.frames.dtype == np.uint8
    assert res.nfe == 2 * 2 and res.unet_calls == 2  # CFG: a batch of 2 per step
    assert res.settings["cfg"] is True and res.seed == 1
    assert (res.settings["fps"], res.settings["motion_bucket_id"], res.settings["noise_aug_strength"]) == (7, 127, 0.02)
    assert 0 < res.unet_seconds <= res.seconds
    assert res.peak_memory is not None and res.peak_memory > 0
    one = generate(pipe, image, **{**BASE, "steps": 1}, seed=1)
    assert one.nfe == 1 and one.unet_calls == 1 and one.settings["cfg"] is False


def test_generate_splits_its_time_into_the_pipeline_parts(pipe, image) -> None:
    """The breakdown names every part, sums to the call's time, times the UNet as the forward hook does, and
    leaves the pipeline's own methods in place afterwards."""
    res = generate(pipe, image, **BASE, seed=2)
    parts = res.breakdown
    assert list(parts) == ["image_encoder", "vae_encode", "unet", "vae_decode", "postprocess", "other"]
    assert all(v >= 0 for v in parts.values())
    assert parts["unet"] == res.unet_seconds
    assert parts["image_encoder"] > 0 and parts["vae_encode"] > 0 and parts["vae_decode"] > 0
    assert sum(parts.values()) == pytest.approx(res.seconds, rel=1e-6, abs=1e-6)
    for name in ("_encode_image", "_encode_vae_image", "decode_latents"):
        assert name not in vars(pipe)
    assert "postprocess_video" not in vars(pipe.video_processor)


def test_generate_is_bit_identical_for_a_seed(pipe, image) -> None:
    first = generate(pipe, image, **BASE, seed=3)
    again = generate(pipe, image, **BASE, seed=3)
    other = generate(pipe, image, **BASE, seed=4)
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def test_every_stage_starts_from_the_same_noise(image) -> None:
    """Two different models (stages) receive identical initial noise and augmentation noise for a seed."""
    seen: list[torch.Tensor] = []

    def record_first_input(module, args, kwargs):
        seen.append((args[0] if args else kwargs["sample"]).clone())

    for seed in (0, 1):
        model = build_pipeline("micro", seed=seed)
        handle = model.unet.register_forward_pre_hook(record_first_input, with_kwargs=True)
        try:
            generate(model, image, **{**BASE, "steps": 1}, seed=11)
        finally:
            handle.remove()
    noisy_a, noisy_b = seen[0][:, :, :4], seen[1][:, :, :4]  # the noisy half of the 8 input channels
    assert torch.equal(noisy_a, noisy_b)
    latents, _ = initial_latents(11, F, H, W, channels=4, vae_factor=4)
    sched = build_scheduler()
    sched.set_timesteps(1)
    expected = sched.scale_model_input(latents * sched.init_noise_sigma, sched.timesteps[0])
    assert torch.allclose(noisy_a, expected)


def test_progress_and_defaults_validation(pipe, image) -> None:
    calls: list[tuple[int, int]] = []
    generate(pipe, image, **BASE, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    with pytest.raises(ValueError, match="min_guidance <= max_guidance"):
        generate(pipe, image, **{**BASE, "min_guidance": 3.0, "max_guidance": 2.0})
    with pytest.raises(ValueError, match="multiples of 8"):
        generate(pipe, image, **{**BASE, "width": 36})
    with pytest.raises(ValueError, match="width is required"):
        generate(pipe, image, steps=1, min_guidance=1.0, max_guidance=1.0)
    with pytest.raises(ValueError, match="steps"):
        generate(pipe, image, **{**BASE, "steps": 0})


# ---------------------------------------------------------------------------------------------------------
# The conditioning image


def _stripes(width: int, height: int) -> Image.Image:
    """Red | green | blue vertical thirds."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 3, 0] = 255
    arr[:, width // 3 : 2 * width // 3, 1] = 255
    arr[:, 2 * width // 3 :, 2] = 255
    return Image.fromarray(arr)


def test_prepare_image_keeps_aspect_and_centre_crops() -> None:
    out = prepare_image(_stripes(300, 100), 32, 32)  # a wide image into a square: only the green third remains
    arr = np.asarray(out)
    assert out.mode == "RGB" and out.size == (32, 32)
    assert (arr[:, 4:-4, 1] > 200).all() and (arr[:, 4:-4, 0] < 30).all() and (arr[:, 4:-4, 2] < 30).all()
    wide = np.asarray(prepare_image(_stripes(90, 90), 64, 16))  # square into wide: crop rows, keep all columns
    assert wide.shape == (16, 64, 3)
    assert (wide[:, 2, 0] > 200).all() and (wide[:, 32, 1] > 200).all() and (wide[:, -2, 2] > 200).all()


def test_prepare_image_applies_exif_orientation() -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20, 0] = 255  # left half red
    arr[:, 20:, 2] = 255  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    upright = load_image(buf.getvalue())
    assert upright.size == (20, 40)
    out = np.asarray(prepare_image(buf.getvalue(), 16, 32))
    assert out[2, 8, 0] > 200 and out[2, 8, 2] < 60  # red on top
    assert out[-3, 8, 2] > 200 and out[-3, 8, 0] < 60  # blue at the bottom


def test_prepare_image_modes() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(prepare_image(rgba, 8, 8)).min() == 255  # composited over white
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    assert abs(int(np.asarray(prepare_image(half, 8, 8))[0, 0, 0]) - 127) <= 1
    grey = np.asarray(prepare_image(Image.new("L", (8, 8), 77), 8, 8))
    assert grey.shape == (8, 8, 3) and (grey == 77).all()
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(np.asarray(prepare_image(pal, 8, 8))[0, 0]) == (10, 200, 30)
    pal.info["transparency"] = 1
    assert tuple(np.asarray(prepare_image(pal, 8, 8))[0, 0]) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((8, 8), 128 * 257, np.uint16))
    assert sixteen.mode.startswith("I;16")
    assert (np.asarray(prepare_image(sixteen, 8, 8)) == 128).all()
    buf = io.BytesIO()
    sixteen.save(buf, format="PNG")  # 16-bit PNG read back from bytes
    assert (np.asarray(prepare_image(buf.getvalue(), 8, 8)) == 128).all()
    assert (np.asarray(prepare_image(np.full((4, 4), 0.5), 8, 8)) == 128).all()  # float arrays in [0, 1]
    assert (np.asarray(prepare_image(np.full((4, 4, 3), 65535, np.uint16), 8, 8)) == 255).all()


def test_prepare_image_rejects_bad_inputs(tmp_path) -> None:
    with pytest.raises(ImageInputError, match="not a readable image"):
        prepare_image(b"definitely not an image", 8, 8)
    with pytest.raises(ImageInputError, match="empty"):
        prepare_image(b"", 8, 8)
    with pytest.raises(ImageInputError, match="unsupported"):
        prepare_image(12345, 8, 8)
    with pytest.raises(ImageInputError, match="not found"):
        prepare_image(tmp_path / "missing.png", 8, 8)
    with pytest.raises(ImageInputError, match="too large"):
        prepare_image(Image.new("RGB", (100, 100)), 8, 8, max_pixels=5000)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    with pytest.raises(ImageInputError, match="corrupt|truncated|not a readable"):
        prepare_image(buf.getvalue()[: len(buf.getvalue()) // 2], 8, 8)
    with pytest.raises(ImageInputError, match="shape"):
        prepare_image(np.zeros((4, 4, 5)), 8, 8)
    with pytest.raises(ImageInputError, match="NaN"):
        prepare_image(np.full((4, 4), np.nan), 8, 8)
    with pytest.raises(ImageInputError, match="positive"):
        prepare_image(Image.new("RGB", (8, 8)), 0, 8)
    path = tmp_path / "ok.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(path)
    assert tuple(np.asarray(prepare_image(path, 8, 8))[0, 0]) == (1, 2, 3)


def test_peak_memory_is_per_call_not_the_process_lifetime_peak(pipe, image) -> None:
    """Issue 15: every card showed the same process-wide ru_maxrss. A call's peak is what *it* added."""
    import numpy as np

    from explorer.pipeline import RssSampler

    hog = np.ones(400 * 2**20 // 8)  # 400 MB held (and touched) before the call: not the call's memory
    small = generate(pipe, image, width=32, height=16, num_frames=2, steps=1, min_guidance=1.0, max_guidance=1.0,
                     seed=0)
    del hog
    assert "added above" in small.settings["peak_memory"]
    assert 0.0 <= small.peak_memory < 300
    sampler = RssSampler()
    sampler.start()
    block = np.ones(200 * 2**20 // 8)
    sampler.stop()
    assert sampler.added_mb > 150
    del block
