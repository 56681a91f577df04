"""Train one stage of the tiny path from its parent and export it as a stage folder under checkpoints/.

A *run* folder (``runs/<name>``) holds the resumable training state; a *stage* folder
(``checkpoints/<slug>``) is what ships: the EMA weights in the diffusers layout plus ``stage.json``. Shared
components (VAE, image encoder, feature extractor, scheduler) live once in ``checkpoints/_shared``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import load_file
from transformers import CLIPVisionModelWithProjection

from explorer import stages as registry
from explorer.components import build_feature_extractor, build_image_encoder, build_scheduler
from explorer.models import build_unet, unet_config
from explorer.pipeline import StageRecord, load_stage, save_stage
from explorer.training.denoise import DenoiseConfig, train_denoiser
from explorer.vae import load_vae

SHARED = ("vae", "image_encoder", "feature_extractor", "scheduler")


def unet_config_for(scale: str, vae: Any) -> dict[str, Any]:
    """The UNet config of ``scale`` with its latent channels matched to ``vae`` (noisy + conditioning latents in,
    one latent out), so the same family trains on a VAE with another latent width."""
    cfg = unet_config(scale)
    channels = int(vae.config.latent_channels)
    cfg.update(in_channels=2 * channels, out_channels=channels)
    return cfg


def load_init(
    init: str | None, scale: str, vae_dir: str | None, image_encoder_dir: str | None = None
) -> tuple[UNetSpatioTemporalConditionModel, CLIPVisionModelWithProjection, AutoencoderKLTemporalDecoder, dict]:
    """(unet, image encoder, vae, info) to start from: a stage folder, a run folder (its EMA weights), or
    nothing (random UNet, and a random image encoder unless ``image_encoder_dir`` names a saved one to keep)."""
    info: dict[str, Any] = {"init": init}
    if init and any((Path(init) / name).exists() for name in ("stage.json", "model_index.json")):
        pipe, record = load_stage(init)
        info["parent_record"] = record.to_dict()
        return pipe.unet, pipe.image_encoder, pipe.vae, info
    if vae_dir is None:
        raise ValueError("training from scratch or from a run folder needs --vae (a trained VAE folder)")
    vae = load_vae(vae_dir)
    unet = build_unet(unet_config_for(scale, vae))
    encoder = build_image_encoder(scale)
    if image_encoder_dir:
        encoder = CLIPVisionModelWithProjection.from_pretrained(image_encoder_dir, use_safetensors=True).eval()
        info["image_encoder"] = image_encoder_dir
    if init:
        state = Path(init) / "state"
        if not (state / "ema.safetensors").exists():
            raise ValueError(f"{init} is neither a stage folder nor a run folder with state/ema.safetensors")
        unet.load_state_dict(load_file(str(state / "ema.safetensors")))
        if not image_encoder_dir:
            encoder.load_state_dict(load_file(str(state / "ema_image_encoder.safetensors")))
    return unet, encoder, vae, info


def export_stage(
    slug: str,
    unet: UNetSpatioTemporalConditionModel,
    image_encoder: CLIPVisionModelWithProjection,
    vae: AutoencoderKLTemporalDecoder,
    checkpoints: str | Path,
    extra: dict[str, Any],
    size: tuple[int, int] | None = None,
    transforms: list[registry.Transform] | None = None,
    scale: str = "tiny",
    unet_from: str | None = None,
) -> Path:
    """Write ``checkpoints/<slug>`` with the shared components stored once in ``checkpoints/_shared``.

    ``unet_from`` names a stage whose UNet weights this one uses unchanged (referenced, not copied): e.g.
    `optimized-xattn` is `lowres-ft` with an exact rewrite applied at load time.
    """
    stage = registry.get_stage(slug)
    width, height = size or stage.size("tiny")
    record = StageRecord(
        slug=stage.slug, parent=stage.parent, scale=scale,
        transforms=tuple(transforms if transforms is not None else registry.architecture_transforms(slug)),
        width=width, height=height, frames=stage.frames, steps=stage.steps,
        min_guidance=stage.min_guidance, max_guidance=stage.max_guidance, extra=extra,
    )
    root = Path(checkpoints)
    comps = {"unet": unet, "vae": vae, "image_encoder": image_encoder,
             "feature_extractor": build_feature_extractor(), "scheduler": build_scheduler()}
    shared = {name: root / "_shared" / name for name in SHARED}
    if unet_from is not None:
        comps.pop("unet")
        shared["unet"] = root / unet_from / "unet"
    return save_stage(comps, root / stage.slug, record, shared=shared, root=root)


def export_svd_512(checkpoints: str | Path, size: tuple[int, int] | None = None) -> Path:
    """`svd-512`: the `svd` weights sampled at the low resolution without finetuning. Its UNet is the `svd`
    stage's own (referenced, not copied), only the record differs."""
    root = Path(checkpoints)
    pipe, svd_record = load_stage(root / "svd")
    return export_stage("svd-512", pipe.unet, pipe.image_encoder, pipe.vae, root,
                        extra={"training": "none: svd sampled at low resolution"}, size=size, transforms=[],
                        scale=svd_record.scale, unet_from="svd")


def train_denoise_stage(
    slug: str,
    cfg: DenoiseConfig,
    init: str | None,
    vae_dir: str | None = None,
    checkpoints: str | None = "checkpoints",
    scale: str = "tiny",
    progress: bool = True,
    size: tuple[int, int] | None = None,
    image_encoder_dir: str | None = None,
) -> dict[str, Any]:
    """Denoising training of ``slug`` (the base `svd` phases or `lowres-ft`); exports when ``checkpoints``.
    ``image_encoder_dir``: keep this saved image encoder (frozen, e.g. for a latent-cached run)."""
    unet, encoder, vae, info = load_init(init, scale, vae_dir, image_encoder_dir)
    result = train_denoiser(cfg, unet, vae, encoder, progress=progress)
    if not result["finished"]:  # stopped on time: resumable, nothing exported
        return {"stage": slug, "run": cfg.out, "steps": cfg.steps, "stopped_at": result["step"],
                "finished": False, "log": result["log"]}
    unet.load_state_dict({k: v.to(p.dtype) for (k, v), p in zip(result["ema_unet"].items(),
                                                                  unet.state_dict().values(), strict=True)})
    if cfg.train_image_encoder:  # a frozen encoder keeps its exact weights (its EMA differs by float rounding)
        encoder.load_state_dict(result["ema_image_encoder"])
    summary = {"stage": slug, "run": cfg.out, "steps": cfg.steps, "size": list(cfg.size), "batch": cfg.batch,
               "init": init, "log": result["log"]}
    log_path = Path(result["log"])
    log_rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.exists() else []
    if log_rows:
        summary["train_seconds"] = log_rows[-1].get("elapsed_s")
        summary["clips_seen"] = log_rows[-1].get("clips")
    if checkpoints:
        folder = export_stage(slug, unet.float(), encoder.float(), vae.float(), checkpoints,
                              extra={"training": summary}, size=size, scale=scale)
        summary["folder"] = str(folder)
    return summary
