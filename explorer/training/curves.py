"""Learning curves as data: what a denoising run has learned, measured on test clips every few thousand steps.

Two probes, both on held-out test photographs and deterministic:

* :func:`denoising_errors` -- the relative denoising error ``MSE(D(x0 + s n), x0) / Var(x0)`` at fixed noise levels,
  over all frames and over frame 0 alone, beside the *copy baseline* (the conditioning image's latent copied into
  every frame). A denoiser that cannot beat copying at high noise has not learned to carry the conditioning image;
  one whose frame-0 error does not fall toward 0 ignores it.
  Per latent channel too (``channels``): the overall error is dominated by the few high-variance channels, and a
  denoiser that leaves noise in the low-variance, fine-detail channels samples grain (docs/training.md, session 13).
* :func:`sample_psnr` -- frame-0 PSNR of a full sampled clip (the stage's sampler: 50 steps with CFG) against the
  VAE round trip of the conditioning image, the same definition as ``scripts/evaluate.py``.

Rows are appended to ``<run>/curve.jsonl``; docs/training.md plots them (``scripts/plot_curves.py``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explorer import data, edm

PROBE_SIGMAS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
# the last steps of the sampler: a denoiser that leaves most of the input noise here (noise_left near 1) bakes
# speckle into every frame; it flickers, and frame 0 cannot match the conditioning image (docs/training.md, session 10)
LOW_SIGMAS: tuple[float, ...] = (0.03, 0.1)
PROBE_AUG = 0.02  # the pipeline's default noise augmentation


@torch.no_grad()
def denoising_errors(unet: Any, vae: Any, image_encoder: Any, size: tuple[int, int], clips: int = 16,
                     sigmas: tuple[float, ...] = PROBE_SIGMAS, seed: int = 0,
                     frames: int = data.NUM_FRAMES) -> dict[str, dict[str, float]]:
    """Relative denoising error per noise level on ``clips`` fixed test clips at ``size``:
    ``{sigma: {"all", "frame0", "copy_all", "copy_frame0", "noise_left", "channels"}}``; ``noise_left`` is the
    output's error as a fraction of the input noise's variance (1: the denoiser returns its input; above 1: it adds
    error); ``channels`` the relative error of each latent channel against that channel's own variance (above 1:
    worse than predicting the channel's mean)."""
    from explorer.training.denoise import clip_embed_input

    unet.eval()
    test = data.eval_clips("test", n=clips, size=size)
    x = torch.stack([c.frames[:frames] for c in test])  # (B, F, 3, H, W)
    b, f = x.shape[:2]
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x0 = vae.encode(x.flatten(0, 1)).latent_dist.mode()
    x0 = (x0.reshape(b, f, *x0.shape[1:]) * vae.config.scaling_factor).to(device)
    first = x[:, 0]
    image_latents = vae.encode(first + PROBE_AUG * torch.randn(first.shape, generator=gen)).latent_dist.mode()
    embeds = image_encoder(clip_embed_input(first)).image_embeds.unsqueeze(1).to(device)
    time_ids = edm.added_time_ids(torch.tensor([float(c.fps) for c in test]),
                                  torch.tensor([float(c.motion_bucket_id) for c in test]), PROBE_AUG).to(device)
    image_latents = image_latents.to(device)
    copy = (image_latents * vae.config.scaling_factor).unsqueeze(1).expand_as(x0)
    var_all = x0.var().item()
    var_f0 = x0[:, 0].var().item()
    var_channels = channel_variances(x0)
    out: dict[str, dict[str, float]] = {}
    for s in sigmas:
        noise = torch.randn(x0.shape, generator=gen).to(device)
        sigma = torch.full((b,), float(s), device=device)
        d = edm.denoise(unet, x0 + s * noise, sigma, image_latents, embeds, time_ids)
        out[f"{s:g}"] = {
            "all": ((d - x0) ** 2).mean().item() / var_all,
            "frame0": ((d[:, 0] - x0[:, 0]) ** 2).mean().item() / var_f0,
            "copy_all": ((copy - x0) ** 2).mean().item() / var_all,
            "copy_frame0": ((copy[:, 0] - x0[:, 0]) ** 2).mean().item() / var_f0,
            "noise_left": ((d - x0) ** 2).mean().item() / s**2,
            "channels": [round(v, 4) for v in (channel_mse(d, x0) / var_channels).tolist()],
        }
    return out


def channel_variances(latents: torch.Tensor) -> torch.Tensor:
    """Variance of each latent channel of clips ``latents`` (B, F, C, h, w) over clips, frames and positions."""
    return latents.transpose(0, 2).flatten(1).var(dim=1)


def channel_mse(denoised: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each latent channel (B, F, C, h, w) -> (C,)."""
    return ((denoised - target) ** 2).transpose(0, 2).flatten(1).mean(dim=1)


def low_variance_error(denoise_row: dict[str, Any]) -> float | None:
    """Mean relative error of the last half of the latent channels at one sigma: the fine detail, as a PatchVAE's
    PCA channels come in falling variance. None for rows from before the per-channel probe."""
    errs = denoise_row.get("channels")
    return float(np.mean(errs[len(errs) // 2:])) if errs else None


@torch.no_grad()
def sample_quality(unet: Any, vae: Any, image_encoder: Any, size: tuple[int, int], photos: int = 4,
                   steps: int = 50, seed: int = 0, min_guidance: float = 1.0,
                   max_guidance: float = 3.0) -> dict[str, dict[str, float]]:
    """One sampled clip per test photograph at ``size``, measured as ``scripts/evaluate.py`` measures a stage:
    ``{"frame0_psnr": {photo: dB, ..., "mean": dB}, "consecutive_psnr": {...}, "hf_kept_frame0": {...}}`` --
    frame 0 against the VAE round trip of the conditioning image, the mean motion-compensated PSNR between
    consecutive frames (flicker; the base floor is 24 dB), and frame 0's high-frequency energy as a fraction of
    the round trip's (``explorer.metrics.sharpness_and_fade``: above 1 is grain, below 1 blur)."""
    from explorer import metrics as M
    from explorer.pipeline import generate

    pipe = _pipeline(unet, vae, image_encoder)
    width, height = size
    frame0: dict[str, float] = {}
    consecutive: dict[str, float] = {}
    hf_kept: dict[str, float] = {}
    for i, (name, image) in enumerate(list(data.test_images().items())[:photos]):
        res = generate(pipe, image, width=width, height=height, steps=steps, min_guidance=min_guidance,
                       max_guidance=max_guidance, seed=seed + i)
        round_trip = M.vae_round_trip(vae, image, width, height)
        frame0[name] = round(M.first_frame_psnr(res.frames, round_trip), 3)
        consecutive[name] = round(M.consecutive_psnr(res.frames), 3)
        hf_kept[name] = round(M.sharpness_and_fade(res.frames, round_trip)["hf_kept_frame0"], 3)
    return {"frame0_psnr": _with_mean(frame0), "consecutive_psnr": _with_mean(consecutive),
            "hf_kept_frame0": _with_mean(hf_kept)}


@torch.no_grad()
def bucket_motion(unet: Any, vae: Any, image_encoder: Any, size: tuple[int, int], steps: int = 50,
                  seed: int = 0) -> dict[str, Any]:
    """Does the motion bucket move the clip yet? ``explorer.evaluation.bucket_sweep`` (one test photograph, one
    seed, buckets 20 and 255, measured global motion and their ratio; the base floor is 3x)."""
    from explorer.evaluation import bucket_sweep

    return bucket_sweep(_pipeline(unet, vae, image_encoder), size[0], size[1], steps=steps, seed=seed,
                        frames=data.NUM_FRAMES, min_guidance=1.0, max_guidance=3.0, noise_aug=PROBE_AUG)


def _pipeline(unet: Any, vae: Any, image_encoder: Any) -> Any:
    from diffusers import StableVideoDiffusionPipeline

    from explorer.components import build_feature_extractor, build_scheduler

    unet.eval()
    pipe = StableVideoDiffusionPipeline(unet=unet, vae=vae, image_encoder=image_encoder,
                                        feature_extractor=build_feature_extractor(), scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _with_mean(values: dict[str, float]) -> dict[str, float]:
    finite = [v for v in values.values() if math.isfinite(v)]
    return {**values, "mean": round(float(np.mean(finite)), 3) if finite else float("nan")}


def curve_row(unet: Any, vae: Any, image_encoder: Any, size: tuple[int, int], clips: int = 16, photos: int = 4,
              sample_steps: int = 50) -> dict[str, Any]:
    """One learning-curve row (without the step, which the caller adds)."""
    row: dict[str, Any] = {"size": list(size), "probe_clips": clips,
                           "denoise": denoising_errors(unet, vae, image_encoder, size, clips,
                                                       PROBE_SIGMAS + LOW_SIGMAS)}
    if photos > 0:
        quality = sample_quality(unet, vae, image_encoder, size, photos, sample_steps)
        row["sample_steps"] = sample_steps
        row["sample_frame0_psnr"] = quality["frame0_psnr"]
        row["sample_consecutive_psnr"] = quality["consecutive_psnr"]
        row["sample_hf_kept_frame0"] = quality["hf_kept_frame0"]
        row["bucket_sweep"] = bucket_motion(unet, vae, image_encoder, size, sample_steps)
    return row


def write_row(curve: str | Path, unet: Any, vae: Any, image_encoder: Any, size: tuple[int, int], step: int,
              clips: int, probe_clips: int = 16, photos: int = 4) -> dict[str, Any]:
    """Measure :func:`curve_row` for EMA weights (``unet``) at ``step`` and append it to the ``curve`` file: the one
    writer of rows, for a run's own probe and for :func:`measure_run`."""
    from explorer.training.common import JsonlLog

    t0 = time.time()
    row = curve_row(unet, vae, image_encoder, size, probe_clips, photos)
    out = {"step": step, "clips": clips, "weights": "ema", "probe_seconds": round(time.time() - t0, 1), **row}
    JsonlLog(Path(curve)).write(**out)
    return out


def measure_run(run: str, vae_dir: str, image_encoder_dir: str, scale: str = "tiny",
                photos: int = 4) -> dict[str, Any]:
    """A row for a run's EMA weights as they are now (its last checkpoint), appended to its ``curve.jsonl`` as the
    run itself would write it at that step: for rows the run did not write (a run started before a measurement
    existed, a paired probe's common starting point). An existing row for the step is not replaced."""
    from explorer.training.stage_runs import load_init

    curve = Path(run) / "curve.jsonl"
    record = json.loads((Path(run) / "state" / "trainer.json").read_text())
    step, config = int(record["step"]), record["config"]
    if any(r["step"] == step for r in read_curves([run]).get(Path(run).name, [])):
        raise ValueError(f"{curve} already has a row for step {step}")
    unet, encoder, vae, _ = load_init(run, scale, vae_dir, image_encoder_dir)
    return write_row(curve, unet.float(), vae, encoder, tuple(config["size"]), step, step * int(config["batch"]),
                     config.get("probe_clips", 16), photos)


def read_curves(runs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``{run name: rows}`` from each run folder's curve.jsonl (missing files give no rows)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        path = Path(run) / "curve.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        out[Path(run).name] = sorted(rows, key=lambda r: r["step"])
    return out


def curve_table(curves: dict[str, list[dict[str, Any]]]) -> str:
    """A markdown table: one row per probe, relative error per sigma (all frames; copy baseline in brackets),
    frame-0 error at sigma 30, the noise left at the low sigmas, and the 50-step samples' frame-0 PSNR,
    consecutive-frame PSNR and bucket 255 / 20 motion ratio (— where a row predates the measurement)."""
    sigmas = list(PROBE_SIGMAS)
    head = (["run", "step", "clips", "size"] + [f"err σ={s:g} (copy)" for s in sigmas]
            + ["frame-0 err σ=30 (copy)", "noise left σ=0.03 / 0.1", "fine-channel err σ=0.3 / 1",
               "sample frame-0 PSNR dB", "consecutive PSNR dB", "HF kept f0", "motion 255/20"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in curves.items():
        for r in rows:
            d = r["denoise"]
            cells = [name, str(r["step"]), str(r["clips"]), "x".join(map(str, r["size"]))]
            cells += [f"{d[f'{s:g}']['all']:.3f} ({d[f'{s:g}']['copy_all']:.3f})" for s in sigmas]
            cells.append(f"{d['30']['frame0']:.3f} ({d['30']['copy_frame0']:.3f})")
            low = [d.get(f"{s:g}", {}).get("noise_left") for s in LOW_SIGMAS]
            cells.append("—" if None in low else " / ".join(f"{v:.2f}" for v in low))
            fine = [low_variance_error(d.get(k, {})) for k in ("0.3", "1")]
            cells.append("—" if None in fine else " / ".join(f"{v:.2f}" for v in fine))
            for key in ("sample_frame0_psnr", "sample_consecutive_psnr", "sample_hf_kept_frame0"):
                value = r.get(key, {}).get("mean")
                cells.append("—" if value is None else f"{value:.2f}")
            ratio = r.get("bucket_sweep", {}).get("ratio")
            cells.append("—" if ratio is None else f"{ratio:.2f}x")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Relative denoising error per sigma (solid) against the copy baseline (dotted), and the sample's frame-0
    PSNR, over clips seen; phases one after another on the x axis. Needs matplotlib (requirements-dev)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offset = 0
    for name, rows in curves.items():
        if not rows:
            continue
        x = [offset + r["clips"] for r in rows]
        for i, s in enumerate(PROBE_SIGMAS):
            key = f"{s:g}"
            ax1.plot(x, [r["denoise"][key]["all"] for r in rows], "-o", ms=3, color=colours[i],
                     label=f"σ={key}" if offset == 0 else None)
            ax1.plot(x, [r["denoise"][key]["copy_all"] for r in rows], ":", color=colours[i])
        line = ax2.plot(x, [r.get("sample_frame0_psnr", {}).get("mean", float("nan")) for r in rows], "-o", ms=3,
                        label=f"frame 0, {name} ({'x'.join(map(str, rows[0]['size']))})")[0]
        consecutive = [r.get("sample_consecutive_psnr", {}).get("mean", float("nan")) for r in rows]
        if any(math.isfinite(v) for v in consecutive):
            ax2.plot(x, consecutive, "--s", ms=3, color=line.get_color(), label=f"consecutive frames, {name}")
        ax1.axvline(offset, color="0.8", lw=0.8)
        offset = x[-1]
    ax1.set_yscale("log")
    ax1.set_xlabel("training clips seen")
    ax1.set_ylabel("MSE / Var(x0), all frames")
    ax1.set_title("denoising error on 16 test clips (dotted: copy the conditioning latent)")
    ax1.legend(fontsize=8)
    ax2.axhline(25, color="0.6", ls="--", lw=0.8)
    ax2.axhline(24, color="0.8", ls=":", lw=0.8)
    ax2.set_xlabel("training clips seen")
    ax2.set_ylabel("dB")
    ax2.set_title("50 steps with CFG, test photographs: frame-0 PSNR (floor 25 dB),\n"
                  "consecutive-frame PSNR (floor 24 dB)", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
__all__ = ["LOW_SIGMAS", "PROBE_SIGMAS", "bucket_motion", "channel_mse", "channel_variances", "curve_row",
           "curve_table", "denoising_errors", "low_variance_error",
           "measure_run", "plot_curves", "read_curves", "sample_quality", "write_row"]
