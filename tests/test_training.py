"""Training loops: one short step of each component, resumption, export to a loadable stage folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from explorer import edm
from explorer.components import build_vae
from explorer.training.common import EMA, Checkpointer, lr_at
from explorer.training.denoise import DenoiseConfig
from explorer.training.vae import VAETrainConfig, psnr, train_vae


def test_edm_matches_diffusers_scheduler() -> None:
    from explorer.components import build_scheduler

    sched = build_scheduler()
    sched.set_timesteps(4)
    assert torch.allclose(sched.sigmas[:-1], edm.karras_sigmas(4), rtol=1e-5)
    assert torch.allclose(sched.timesteps, edm.c_noise(edm.karras_sigmas(4)), rtol=1e-5)
    ids = edm.added_time_ids(7, 127, 0.02, batch=2)
    assert ids.tolist() == [[6.0, 127.0, 0.02]] * 2 or torch.allclose(ids, torch.tensor([[6.0, 127.0, 0.02]] * 2))


def test_denoise_is_exact_for_perfect_v() -> None:
    """D(x) recovers x0 when the network outputs the true v-target (sanity of c_skip/c_out/c_in)."""
    x0 = torch.randn(2, 3, 4, 2, 2)
    sigma = torch.tensor([0.5, 20.0])
    noise = torch.randn_like(x0)
    s = sigma.view(2, 1, 1, 1, 1)
    x = x0 + s * noise
    # v such that c_skip*x + c_out*v = x0
    v = (x0 - edm.c_skip(s) * x) / edm.c_out(s)

    class Oracle(torch.nn.Module):
        def forward(self, sample, t, encoder_hidden_states, added_time_ids):  # noqa: ANN001
            return type("O", (), {"sample": v})()

    out = edm.denoise(Oracle(), x, sigma, torch.zeros(2, 4, 2, 2), torch.zeros(2, 1, 8), torch.zeros(2, 3))
    assert torch.allclose(out, x0, atol=1e-5)


def test_frame0_weight_reweights_only_frame_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """frame0_weight scales frame 0's share of the loss against the others; the per-frame weights average 1."""
    from explorer.training import denoise as D

    monkeypatch.setattr(D.edm, "denoise", lambda unet, noisy, *a: torch.zeros_like(noisy))
    x0 = torch.zeros(2, 14, 4, 3, 3)
    cond = D.Conditioning(x0, torch.zeros(2, 4, 3, 3), torch.zeros(2, 1, 8), torch.zeros(2, 3))

    def loss(frame: int, weight: float) -> float:
        cond.latents = x0.clone()
        cond.latents[:, frame] = 1.0
        return D.denoise_loss(None, cond, torch.Generator().manual_seed(0), 0.7, 1.6, 0.0, weight).item()

    assert loss(0, 1.0) == pytest.approx(loss(5, 1.0))
    assert loss(0, 8.0) / loss(0, 1.0) == pytest.approx(8 * 14 / 21)  # frame 0: 8 / mean weight (8 + 13) / 14
    assert loss(5, 8.0) / loss(5, 1.0) == pytest.approx(14 / 21)
    assert DenoiseConfig().frame0_weight == 1.0  # SVD's objective unless a plan asks otherwise


def test_channel_weights_follow_channel_variance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel weights ~ Var^-power with mean 1; they scale each channel's share of the loss and nothing else."""
    from explorer.training import denoise as D
    from explorer.training.curves import channel_variances, low_variance_error

    lat = torch.randn(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    lat[:, :, 0] *= 2.0  # channel 0: 4x the variance of channel 1
    var = channel_variances(lat)
    assert var[0] / var[1] == pytest.approx(4.0, rel=0.3)
    assert torch.allclose(D.latent_channel_weights(lat, 0.0), torch.ones(2))
    w = D.latent_channel_weights(lat, 1.0)
    assert w.mean().item() == pytest.approx(1.0) and (w[1] / w[0]).item() == pytest.approx((var[0] / var[1]).item())
    monkeypatch.setattr(D.edm, "denoise", lambda unet, noisy, *a: torch.zeros_like(noisy))
    x0 = torch.zeros(2, 3, 2, 3, 3)
    cond = D.Conditioning(x0, torch.zeros(2, 2, 3, 3), torch.zeros(2, 1, 8), torch.zeros(2, 3))

    def loss(channel: int, weights: torch.Tensor | None) -> float:
        cond.latents = x0.clone()
        cond.latents[:, :, channel] = 1.0
        return D.denoise_loss(None, cond, torch.Generator().manual_seed(0), 0.7, 1.6, 0.0, 1.0, weights).item()

    weights = torch.tensor([0.5, 1.5])
    assert loss(0, weights) / loss(0, None) == pytest.approx(0.5)
    assert loss(1, weights) / loss(1, None) == pytest.approx(1.5)
    assert DenoiseConfig().channel_weight_power == 0.0  # SVD's objective unless a plan asks otherwise
    assert low_variance_error({"channels": [0.1, 0.2, 1.0, 2.0]}) == pytest.approx(1.5)
    assert low_variance_error({"all": 0.5}) is None


def test_lr_schedule_and_ema() -> None:
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(100, 1.0, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5, warmup=0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert not torch.allclose(ema.shadow["weight"], model.weight)


def test_checkpointer_roundtrip(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    ck = Checkpointer(tmp_path / "state")
    ck.save(5, {"m": model}, {"o": opt}, meta={"x": 1})
    ck.save(6, {"m": model}, {"o": opt}, meta={"x": 2})  # overwrite path works
    model2 = torch.nn.Linear(3, 3)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    rec = ck.load({"m": model2}, {"o": opt2})
    assert rec["step"] == 6 and rec["x"] == 2
    assert torch.equal(model.weight, model2.weight)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    (tmp_path / "state" / "optim_o.safetensors").unlink()  # a weights-only snapshot still resumes
    assert ck.load({"m": torch.nn.Linear(3, 3)}, {"o": torch.optim.AdamW(model2.parameters())})["step"] == 6


def test_vae_training_step_and_resume(tmp_path: Path) -> None:
    cfg = VAETrainConfig(out=str(tmp_path / "vae"), scale="micro", steps=2, clips_per_step=1, clip_frames=2,
                         clip_size=(32, 16), crops_per_step=2, crop_size=(16, 16), ckpt_every=1, eval_images=2,
                         pca_images=8)
    metrics = train_vae(cfg, progress=False)
    assert metrics["steps"] == 2 and metrics["scaling_factor"] > 0 and metrics["class"] == "PatchVAE"
    assert metrics["encoder_trained"] is False
    for row in metrics["by_size"].values():  # the VAE beside the linear baseline of the same latent size
        assert set(row["first_frames"]) == {"vae", "linear"} and row["photographs"]["vae"]["psnr"] > 10
    assert (tmp_path / "vae" / "final" / "diffusion_pytorch_model.safetensors").exists()
    cfg.steps = 3
    assert train_vae(cfg, progress=False)["steps"] == 3  # resumed from step 2
    rows = [json.loads(x) for x in (tmp_path / "vae" / "log.jsonl").read_text().splitlines()]
    assert rows


def test_decoder_only_finetuning_keeps_the_latent_space(tmp_path: Path) -> None:
    from dataclasses import replace

    from diffusers import AutoencoderKLTemporalDecoder

    base = VAETrainConfig(out=str(tmp_path / "vae"), scale="micro", steps=1, clips_per_step=1, clip_frames=2,
                          clip_size=(32, 16), crops_per_step=2, crop_size=(16, 16), ckpt_every=1, eval_images=2,
                          arch="kl")
    train_vae(base, progress=False)
    parent = AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / "vae" / "final")
    cfg = replace(base, out=str(tmp_path / "dec"), steps=2, init=str(tmp_path / "vae" / "final"),
                  train_encoder=False, lr=1e-2)
    metrics = train_vae(cfg, progress=False)
    child = AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / "dec" / "final")
    assert metrics["encoder_trained"] is False
    assert child.config.scaling_factor == parent.config.scaling_factor
    p_sd, c_sd = parent.state_dict(), child.state_dict()
    for k in p_sd:
        same = torch.equal(p_sd[k], c_sd[k])
        assert same if k.startswith(("encoder.", "quant_conv.")) else True, k
    assert any(not torch.equal(p_sd[k], c_sd[k]) for k in p_sd if k.startswith("decoder."))


def test_patch_vae_training_keeps_the_projection_exactly(tmp_path: Path) -> None:
    """Only the residual decoder trains; the exported encoder and linear decoder equal the PCA fit bit for bit."""
    from explorer.training.vae import _initial_vae
    from explorer.vae import load_vae

    cfg = VAETrainConfig(out=str(tmp_path / "vae"), scale="micro", steps=3, clips_per_step=1, clip_frames=2,
                         clip_size=(32, 16), crops_per_step=2, crop_size=(16, 16), ckpt_every=1, eval_images=2,
                         pca_images=8, lr=1e-2, warmup=1)
    train_vae(cfg, progress=False)
    fresh, trained = _initial_vae(cfg).state_dict(), load_vae(tmp_path / "vae" / "final").state_dict()
    for k, v in fresh.items():
        if k.startswith(("encoder.", "linear_decoder.")):
            assert torch.equal(v, trained[k]), k
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh if k.startswith("decoder_out"))


def test_psnr_known_values() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a) > 100
    b = a + 0.2  # [0,1] error 0.1 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-3)


def test_denoise_stage_train_export_load_generate(tmp_path: Path) -> None:
    from explorer.pipeline import generate, load_stage
    from explorer.training.stage_runs import train_denoise_stage

    vae = build_vae("micro")
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    cfg = DenoiseConfig(out=str(tmp_path / "run"), size=(32, 16), frames=14, steps=2, batch=1, ckpt_every=1,
                        num_workers=0, warmup=1, log_every=1, channel_weight_power=0.5)  # weights from encoded clips
    summary = train_denoise_stage("lowres-ft", cfg, None, vae_dir=str(tmp_path / "vae"),
                                  checkpoints=str(tmp_path / "ckpt"), scale="micro", progress=False)
    assert summary["steps"] == 2
    pipe, record = load_stage(tmp_path / "ckpt" / "lowres-ft")
    assert record.slug == "lowres-ft" and record.extra["training"]["steps"] == 2
    res = generate(pipe, torch.zeros(16, 32, 3, dtype=torch.uint8).numpy(), width=32, height=16, steps=1,
                   max_guidance=1.0, seed=0)
    assert res.frames.shape == (14, 16, 32, 3)
    # resuming continues from the saved step
    cfg.steps = 3
    summary = train_denoise_stage("lowres-ft", cfg, None, vae_dir=str(tmp_path / "vae"), checkpoints=None,
                                  scale="micro", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_adversarial_pieces() -> None:
    from explorer.training.adversarial import discriminator_sigmas, generator_sigmas, hinge_d, pseudo_huber

    levels = generator_sigmas(4, 3)
    assert levels[0].item() == pytest.approx(700.0) and len(levels) == 3
    assert levels[-1].item() == pytest.approx(2.2691, rel=1e-3)
    s = discriminator_sigmas(2000, torch.Generator().manual_seed(0))
    assert abs(s.log().mean().item() + 1.0) < 0.1  # log-normal around P_mean = -1
    assert hinge_d([torch.full((4,), 2.0)], [torch.full((4,), -2.0)]).item() == 0.0  # confident D: no loss
    a = torch.zeros(2, 3)
    assert pseudo_huber(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert pseudo_huber(a, a + 10).item() == pytest.approx(10 - 0.03, rel=1e-3)  # L1-like for large errors


def test_adversarial_training_steps(tmp_path: Path) -> None:
    from explorer.components import build_image_encoder
    from explorer.models import build_unet
    from explorer.training.adversarial import AdversarialConfig, train_adversarial

    unet, teacher = build_unet("micro", seed=0), build_unet("micro", seed=1)
    vae, enc = build_vae("micro"), build_image_encoder("micro")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    cfg = AdversarialConfig(out=str(tmp_path / "adv"), size=(32, 16), steps=2, batch=2, num_workers=0,
                            ckpt_every=1, log_every=1, r1_every=1, warmup=1)
    res = train_adversarial(cfg, unet, teacher, vae, enc, progress=False)
    changed = any(not torch.equal(before[k], v) for k, v in unet.state_dict().items())
    assert changed and "ema_unet" in res
    rows = [json.loads(x) for x in (tmp_path / "adv" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and rows[-1]["r1"] >= 0
    cfg.steps = 3
    train_adversarial(cfg, unet, teacher, vae, enc, progress=False)  # resumes at step 2
    rows = [json.loads(x) for x in (tmp_path / "adv" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_frozen_image_encoder_is_exported_bit_identical(tmp_path: Path) -> None:
    """lowres-ft freezes the image encoder shared with svd: its export must not differ by EMA rounding (the
    shared ``_shared/image_encoder`` folder refuses a different encoder)."""
    from explorer.training.stage_runs import train_denoise_stage

    vae = build_vae("micro")
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    ckpt = tmp_path / "ckpt"
    base = DenoiseConfig(out=str(tmp_path / "svd"), size=(32, 16), frames=14, steps=1, batch=1, ckpt_every=1,
                         num_workers=0, warmup=1, log_every=1)
    train_denoise_stage("svd", base, None, vae_dir=str(tmp_path / "vae"), checkpoints=str(ckpt), scale="micro",
                        progress=False)
    cfg = DenoiseConfig(out=str(tmp_path / "low"), size=(32, 16), frames=14, steps=3, batch=1, ckpt_every=1,
                        num_workers=0, warmup=1, log_every=1, train_image_encoder=False)
    train_denoise_stage("lowres-ft", cfg, str(ckpt / "svd"), checkpoints=str(ckpt), scale="micro", progress=False)
    assert (ckpt / "lowres-ft" / "stage.json").is_file()


def test_snapshot_and_restore_a_run(tmp_path: Path) -> None:
    """A committed snapshot (UNet weights in float16, no optimizer) resumes the same run at the same step."""
    from explorer.training.common import restore_run, snapshot_run

    run = tmp_path / "runs" / "r"
    unet, enc = torch.nn.Linear(4, 4), torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(unet.parameters())
    Checkpointer(run / "state").save(7, {"unet": unet, "ema": unet.state_dict(), "image_encoder": enc}, {"opt": opt},
                                     meta={"ema_updates": 7})
    (run / "curve.jsonl").write_text('{"step": 7}\n')
    snap = snapshot_run(run, tmp_path / "ckpt" / "_partial" / "r")
    assert not list(snap.rglob("optim_*")) and (snap / "curve.jsonl").is_file()
    from safetensors.torch import load_file

    assert load_file(str(snap / "state" / "ema.safetensors"))["weight"].dtype == torch.float16
    assert not (snap / "state" / "unet.safetensors").exists()  # restored from the EMA
    assert torch.equal(load_file(str(snap / "state" / "image_encoder.safetensors"))["weight"], enc.weight)
    with pytest.raises(FileExistsError):
        restore_run(snap, run)  # never overwrites a run that is as far or further
    fresh = restore_run(snap, tmp_path / "runs2" / "r")
    model = torch.nn.Linear(4, 4)
    record = Checkpointer(fresh / "state").load({"unet": model}, {"opt": torch.optim.AdamW(model.parameters())})
    assert record["step"] == 7 and model.weight.dtype == torch.float32
    assert torch.allclose(model.weight, unet.weight, atol=1e-3)
    # a run with a frozen image encoder: the encoder (loaded from its own folder) is not in the snapshot
    frozen = tmp_path / "runs" / "f"
    Checkpointer(frozen / "state").save(3, {"unet": unet, "ema": unet.state_dict(), "image_encoder": enc,
                                            "ema_image_encoder": enc.state_dict()}, {"opt": opt},
                                        meta={"ema_updates": 3, "config": {"train_image_encoder": False}})
    fsnap = snapshot_run(frozen, tmp_path / "ckpt" / "_partial" / "f")
    assert sorted(f.name for f in (fsnap / "state").glob("*.safetensors")) == ["ema.safetensors"]


def test_learning_curve_table_and_plot(tmp_path: Path) -> None:
    from explorer.training.curves import LOW_SIGMAS, PROBE_SIGMAS, curve_table, plot_curves, read_curves

    run = tmp_path / "svd-pretrain-small"
    run.mkdir()
    rows = []
    for step in (0, 1000):
        den = {f"{s:g}": {"all": 1.0 - step / 2000, "frame0": 0.5, "copy_all": 0.3, "copy_frame0": 0.001}
               for s in PROBE_SIGMAS}
        rows.append({"step": step, "clips": step * 16, "size": [64, 32], "denoise": den,
                     "sample_frame0_psnr": {"mean": 10.0 + step / 100}})
        if step:  # rows from before the flicker and motion probes show a dash there
            rows[-1].update(sample_consecutive_psnr={"mean": 21.5}, bucket_sweep={"ratio": 2.25})
            for s in LOW_SIGMAS:
                rows[-1]["denoise"][f"{s:g}"] = {"noise_left": 0.5 + s}
    rows.append({**rows[-1], "step": 2000, "clips": 32000, "sample_hf_kept_frame0": {"mean": 4.5},
                 "denoise": {k: {**v, "channels": [0.01, 0.02, 0.9, 1.1]} for k, v in rows[-1]["denoise"].items()}})
    (run / "curve.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curves = read_curves([str(run), str(tmp_path / "absent")])
    table = curve_table(curves)
    assert "| svd-pretrain-small | 1000 | 16000 | 64x32 | 0.500 (0.300)" in table and "20.00" in table
    assert "| 0.53 / 0.60 | — | 20.00 | 21.50 | — | 2.25x |" in table
    assert "| 0.53 / 0.60 | 1.00 / 1.00 | 20.00 | 21.50 | 4.50 | 2.25x |" in table
    assert "| — | — | 10.00 | — | — | — |" in table
    plot_curves(curves, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_teacher_sample_and_distillation_and_held_out_probe(tmp_path: Path) -> None:
    """Issue 13's levers: the teacher's Euler sampler (one step = its denoised estimate at sigma_max; guidance
    1 = no unconditional branch), the distillation term in the generator loss (logged; off by default leaves the
    pure adversarial run unchanged) and the held-out discriminator accuracy (logged every probe_every steps)."""
    from explorer import edm
    from explorer.components import build_image_encoder
    from explorer.models import build_unet
    from explorer.training.adversarial import AdversarialConfig, train_adversarial
    from explorer.training.denoise import Conditioning
    from explorer.training.distill import teacher_sample

    teacher = build_unet("micro", seed=1).eval()
    g = torch.Generator().manual_seed(0)
    c = teacher.config
    latents = torch.randn(2, 14, c.out_channels, 2, 4, generator=g)
    cond = Conditioning(latents, torch.randn(2, c.out_channels, 2, 4, generator=g),
                        torch.randn(2, 1, c.cross_attention_dim, generator=g), edm.added_time_ids(6, 127, 0.02, 2))
    noise = torch.randn(latents.shape, generator=g)
    one = teacher_sample(teacher, cond, noise, steps=1, min_guidance=1.0, max_guidance=1.0)
    sigma = torch.full((2,), edm.SIGMA_MAX)
    with torch.no_grad():
        direct = edm.denoise(teacher, noise * edm.SIGMA_MAX, sigma, cond.image_latents, cond.image_embeds,
                             cond.time_ids)
    assert torch.allclose(one, direct)
    guided = teacher_sample(teacher, cond, noise, steps=3, min_guidance=1.0, max_guidance=3.0)
    assert guided.shape == latents.shape and torch.isfinite(guided).all()
    with pytest.raises(ValueError):
        teacher_sample(teacher, cond, noise, steps=0)

    def run(name: str, **kw: Any) -> list[dict[str, Any]]:
        unet = build_unet("micro", seed=0)
        settings = {"size": (32, 16), "steps": 2, "batch": 2, "num_workers": 0, "ckpt_every": 2, "log_every": 1,
                    "r1_every": 1, "warmup": 1, **kw}
        cfg = AdversarialConfig(out=str(tmp_path / name), **settings)
        train_adversarial(cfg, unet, build_unet("micro", seed=1), build_vae("micro"), build_image_encoder("micro"),
                          progress=False)
        return [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]

    plain = run("plain")
    dmd = run("dmd", dmd_weight=1.0, distill_guidance=(1.0, 2.0))
    assert {"dmd", "dmd_fake"} <= set(dmd[-1]) and "distill" not in dmd[-1]
    assert dmd[0]["loss_d"] == plain[0]["loss_d"] and math.isfinite(dmd[-1]["dmd_fake"])
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "dmd" / "state" / "dmd_fake.safetensors"))  # the fake denoiser resumes too
    motion = run("motion", motion_d_weight=1.0, motion_d_width=8, probe_every=2, probe_clips=2)
    assert {"adv_motion", "loss_md", "md_real", "md_fake", "motion_heldout_rank"} <= set(motion[-1])
    assert motion[0]["loss_d"] == plain[0]["loss_d"]  # its draws come after the heads' update
    assert any(k.startswith("motion.") for k in load_file(str(tmp_path / "motion" / "state" /
                                                                    "disc_heads.safetensors")))
    resumed = run("motion", motion_d_weight=1.0, motion_d_width=8, steps=3)  # resumes its state and optimizer
    assert [r["step"] for r in resumed] == [1, 2, 3]
    off = run("off", distill_weight=0.0, distill_steps=2, probe_every=2, probe_clips=2)
    on = run("on", distill_weight=1.0, distill_steps=2, distill_guidance=(1.0, 2.0))
    assert "distill" not in plain[-1] and "distill" in on[-1] and on[-1]["distill"] > 0
    for key in ("loss_d", "adv", "rec"):  # the probe and the unused distillation settings change nothing
        assert [r[key] for r in off] == [r[key] for r in plain]
    assert "heldout_acc" not in off[0] and 0.0 <= off[1]["heldout_acc"] <= 1.0
    assert {"heldout_acc_real", "heldout_acc_fake", "heldout_rank"} <= set(off[1])
    assert on[0]["loss_d"] == plain[0]["loss_d"]  # the distillation draws come after every other draw
    with pytest.raises(ValueError, match="multiple of log_every"):
        run("bad", probe_every=3, log_every=2)


def test_local_temporal_head_sees_translation_the_pooled_one_cannot() -> None:
    """A feature map that translates (circularly) over frames has the same spatial mean in every frame as a static
    one: the pooled head gives both the same logits, the per-location head (SF-V's) tells them apart."""
    from explorer.training.adversarial import LocalTemporalHead, TemporalHead

    torch.manual_seed(0)
    frames, c = 6, 8
    base = torch.randn(2, c, 8, 8)
    static = base.unsqueeze(1).expand(2, frames, c, 8, 8).reshape(-1, c, 8, 8)
    moving = torch.stack([base.roll(t, dims=-1) for t in range(frames)], 1).reshape(-1, c, 8, 8)
    cond = torch.randn(2 * frames, 16)
    for head, sees in ((TemporalHead(c, 16, 16), False), (LocalTemporalHead(c, 16, 16), True)):
        a, b = head(static, cond, frames), head(moving, cond, frames)
        assert a.shape == (2 * frames,)
        assert (not torch.allclose(a, b, atol=1e-4)) is sees, type(head).__name__


def test_latent_motion_discriminator_learns_motion_for_the_requested_bucket() -> None:
    """Real clips translate at a speed set by their motion bucket, generated ones stand still: within 60 updates
    the motion discriminator ranks a moving clip above a still one of unseen texture at a high bucket."""
    from explorer.training.adversarial import hinge_d
    from explorer.training.motion_disc import LatentMotionDiscriminator

    torch.manual_seed(0)
    frames, c, h, w = 6, 4, 8, 16
    disc = LatentMotionDiscriminator(c, width=16, cond_dim=32)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.0, 0.99))

    def clips(n: int, bucket: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        tex = torch.randn(n, c, h, w)
        speed = round(2 * bucket / 255)
        moving = torch.stack([tex.roll(speed * t, dims=-1) for t in range(frames)], 1)
        still = tex.unsqueeze(1).expand(n, frames, c, h, w)
        return moving, still, tex, edm.added_time_ids(6, bucket, 0.02, n)

    sigma = torch.full((16,), 0.05)
    for _ in range(60):
        buckets = [20.0, 230.0]
        moving, still, tex, ids = (torch.cat(t) for t in zip(*(clips(8, b) for b in buckets), strict=True))
        logits = disc(torch.cat([moving, still]), torch.cat([sigma, sigma]), torch.cat([tex, tex]),
                      torch.cat([ids, ids]))
        half = logits[0].shape[0] // 2  # per-frame logits of [real; generated]
        loss = hinge_d([logits[0][:half]], [logits[0][half:]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    moving, still, tex, ids = clips(8, 230.0)
    with torch.no_grad():
        real, fake = (disc(x, sigma[:8], tex, ids)[0].reshape(8, frames).mean(1) for x in (moving, still))
    assert (real > fake).float().mean() >= 0.9


def test_discriminator_accuracy_ranking_is_threshold_free() -> None:
    from explorer.training.distill import discriminator_accuracy

    real, fake = torch.tensor([3.0, 2.0, 1.0, 0.5]), torch.tensor([2.5, 1.5, 0.0, 1.0])  # all logits >= 0
    out = discriminator_accuracy([torch.cat([real, fake])])
    assert out["heldout_acc"] == pytest.approx((1.0 + 0.0) / 2)  # calls everything real: chance
    assert out["heldout_rank"] == pytest.approx(0.75)  # but ranks 3 of 4 pairs right


def test_dmd_gradient_is_fake_minus_teacher_and_vanishes_when_they_agree() -> None:
    """DMD's generator loss passes (fake - teacher) / (mean |student - teacher|) / N to the student: zero when the
    fake denoiser is the teacher, and exactly that difference otherwise; neither denoiser gets a gradient."""
    from explorer.models import build_unet
    from explorer.training.denoise import Conditioning
    from explorer.training.dmd import DMDSettings, dmd_generator_loss, fake_denoiser_loss

    teacher, other = build_unet("micro", seed=1).eval(), build_unet("micro", seed=2).eval()
    g = torch.Generator().manual_seed(0)
    c = teacher.config
    shape = (2, 14, c.out_channels, 2, 4)
    cond = Conditioning(torch.randn(shape, generator=g), torch.randn(2, c.out_channels, 2, 4, generator=g),
                        torch.randn(2, 1, c.cross_attention_dim, generator=g), edm.added_time_ids(6, 127, 0.02, 2))
    settings = DMDSettings(guidance=(1.0, 1.0))
    student = torch.randn(shape, generator=g, requires_grad=True)
    dmd_generator_loss(student, cond, teacher, teacher, torch.Generator().manual_seed(3), settings).backward()
    assert student.grad is not None and student.grad.abs().max() == 0
    student.grad = None
    dmd_generator_loss(student, cond, teacher, other, torch.Generator().manual_seed(3), settings).backward()
    # the same draws by hand
    gen = torch.Generator().manual_seed(3)
    from explorer.training.dmd import dmd_sigmas

    sigma = dmd_sigmas(2, gen, settings)
    noisy = student.detach() + sigma.view(2, 1, 1, 1, 1) * torch.randn(shape, generator=gen)
    with torch.no_grad():
        args = (noisy, sigma, cond.image_latents, cond.image_embeds, cond.time_ids)
        real, fake = edm.denoise(teacher, *args), edm.denoise(other, *args)
    scale = (student.detach() - real).abs().flatten(1).mean(1).view(2, 1, 1, 1, 1)
    assert torch.allclose(student.grad, (fake - real) / scale / student.numel(), atol=1e-7, rtol=1e-4)
    assert all(p.grad is None for p in (*teacher.parameters(), *other.parameters()))
    loss = fake_denoiser_loss(other, student, cond, torch.Generator().manual_seed(4), settings)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and any(p.grad is not None for p in other.parameters())
