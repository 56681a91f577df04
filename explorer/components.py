"""The non-UNet components of a ``StableVideoDiffusionPipeline`` at each scale, and random pipelines.

``full`` reproduces the published ``stabilityai/stable-video-diffusion-img2vid`` components (their config files
copied as dicts), so random full-size pipelines have exactly SVD's shapes. ``tiny`` is the project's small family
(VAE factor 4, a small CLIP image encoder whose projection matches the tiny UNet's cross-attention width) that a
2-core CPU can train and run. ``micro`` is the smallest member, for fast tests.

Why the small image encoders keep ``image_size=224``: diffusers' SVD pipeline resizes the conditioning image to a
hard-coded 224x224 before the image encoder (``_encode_image``), and transformers' CLIP refuses other input sizes
unless position embeddings are interpolated. A large patch instead keeps them cheap: 7x7 tokens (tiny), 4x4 (micro).

Why the scheduler is the same at every scale: the stage path (adversarial one-step sampling at sigma_max, EDM
preconditioning) is defined on SVD's EDM/v-prediction schedule; the tiny family is trained with the same objective.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from explorer.models import VAE_FACTOR, build_unet, unet_config

SCALES: tuple[str, ...] = ("full", "tiny", "micro")

# ``scheduler/scheduler_config.json`` of stabilityai/stable-video-diffusion-img2vid: EDM Karras sigmas in
# [0.002, 700] (rho 7), v-prediction, continuous timesteps c_noise = 0.25 ln(sigma). The beta entries are unused
# once Karras sigmas with explicit sigma_min/max are set, but are kept verbatim so the config is the published one.
SVD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# ``feature_extractor/preprocessor_config.json`` of SVD img2vid (OpenAI CLIP normalisation). The pipeline only
# uses it to normalise (it resizes to 224 itself), so the same processor serves every scale.
SVD_FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

_DOWN4 = ("DownEncoderBlock2D",) * 4
_DOWN3 = ("DownEncoderBlock2D",) * 3

VAE_CONFIGS: dict[str, dict[str, Any]] = {
    # ``vae/config.json`` of SVD img2vid (8x, 4 latent channels, 97.7 M parameters).
    "full": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": _DOWN4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    },
    # 4x: three levels, one resnet per encoder level (two per decoder level, diffusers adds one). The training
    # script is expected to re-estimate ``scaling_factor`` (1 / latent std) once the VAE is trained.
    "tiny": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": _DOWN3,
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 1,
        # 8 latent channels: with 4, the small VAE plateaued near 20.5 dB on test photographs after 1300 steps
        # (the floor is 26 dB); 8 channels at 4x halve the compression (16 px x 3 colours -> 8 numbers).
        "latent_channels": 8,
        "sample_size": 256,
        "scaling_factor": 0.18215,
        "force_upcast": False,
    },
    # GroupNorm(32) makes 32 the narrowest legal width.
    "micro": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": _DOWN3,
        "block_out_channels": (32, 32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "sample_size": 32,
        "scaling_factor": 0.18215,
        "force_upcast": False,
    },
}

IMAGE_ENCODER_CONFIGS: dict[str, dict[str, Any]] = {
    # ``image_encoder/config.json`` of SVD img2vid: OpenCLIP ViT-H/14 vision tower, 1024-d projection.
    "full": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "projection_dim": 1024,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    },
    # 7x7 patches of 32 px, 4 layers of width 128; projection = TINY_UNET_CONFIG cross_attention_dim (256).
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "projection_dim": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 32,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    },
    # 4x4 patches of 56 px, one layer of width 32; projection = MICRO_UNET_CONFIG cross_attention_dim (32).
    "micro": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 56,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    },
}


# The tiny family's PatchVAE (explorer/vae.py): a fixed PCA patch encoder and a learned residual decoder. 16
# latent channels at 4x: the linear projection alone keeps 93% of a test photograph's high-frequency energy at
# 128x64 (8 channels: 73%; docs/vae.md). The decoder's widths run from the latent resolution up.
PATCH_VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 16,
        "patch_size": 4,
        "block_out_channels": (64, 32, 16),
        "layers_per_block": 2,
        "norm_num_groups": 8,
        "scaling_factor": 1.0,
        "force_upcast": False,
        "sample_size": 256,
    },
    "micro": {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "patch_size": 4,
        "block_out_channels": (16, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "scaling_factor": 1.0,
        "force_upcast": False,
        "sample_size": 32,
    },
}


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {list(SCALES)}")


def vae_config(scale: str) -> dict[str, Any]:
    """A fresh copy of the ``AutoencoderKLTemporalDecoder`` config of ``scale``."""
    _check_scale(scale)
    return copy.deepcopy(VAE_CONFIGS[scale])


def patch_vae_config(scale: str) -> dict[str, Any]:
    """A fresh copy of the ``PatchVAE`` config of ``scale`` ('tiny' or 'micro')."""
    if scale not in PATCH_VAE_CONFIGS:
        raise ValueError(f"no PatchVAE at scale {scale!r}; expected one of {sorted(PATCH_VAE_CONFIGS)}")
    return copy.deepcopy(PATCH_VAE_CONFIGS[scale])


def image_encoder_config(scale: str) -> dict[str, Any]:
    """A fresh copy of the ``CLIPVisionConfig`` keyword arguments of ``scale``."""
    _check_scale(scale)
    return copy.deepcopy(IMAGE_ENCODER_CONFIGS[scale])


def scheduler_config() -> dict[str, Any]:
    """SVD's published scheduler config (the same at every scale)."""
    return copy.deepcopy(SVD_SCHEDULER_CONFIG)


def build_vae(scale: str, seed: int | None = 0, device: str | torch.device = "cpu") -> AutoencoderKLTemporalDecoder:
    """A randomly initialised VAE of ``scale`` (on ``device='meta'`` no memory is allocated)."""
    cfg = vae_config(scale)
    if str(device) == "meta":
        with torch.device("meta"):
            return AutoencoderKLTemporalDecoder(**cfg).to("meta")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        vae = AutoencoderKLTemporalDecoder(**cfg)
    return vae.to(device)


def build_image_encoder(
    scale: str, seed: int | None = 0, device: str | torch.device = "cpu"
) -> CLIPVisionModelWithProjection:
    """A randomly initialised CLIP image encoder of ``scale`` giving one token of the UNet's context width."""
    config = CLIPVisionConfig(**image_encoder_config(scale))
    if str(device) == "meta":
        with torch.device("meta"):
            return CLIPVisionModelWithProjection(config).to("meta")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(config)
    return encoder.eval().to(device)


def build_feature_extractor() -> Any:
    """SVD's CLIP image processor.

    transformers 5 picks a torchvision backend when it is installed and otherwise falls back (with a warning)
    to the PIL backend; the pipeline only uses it to normalise, so both give the same numbers. The fallback
    warning is silenced here because it is expected on CPU-only installs.
    """
    from transformers import CLIPImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return CLIPImageProcessor(**copy.deepcopy(SVD_FEATURE_EXTRACTOR_CONFIG))
        finally:
            hf_logging.set_verbosity(level)


def build_scheduler() -> EulerDiscreteScheduler:
    """SVD's EDM Euler scheduler (Karras sigmas 700 -> 0.002, v-prediction)."""
    return EulerDiscreteScheduler(**scheduler_config())


def build_components(
    scale: str, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """All five pipeline components of ``scale`` with random weights, seeded (each component its own seed)."""
    _check_scale(scale)
    ucfg = unet_config(scale)
    icfg = image_encoder_config(scale)
    if icfg["projection_dim"] != ucfg["cross_attention_dim"]:
        raise AssertionError(f"{scale}: image encoder projection {icfg['projection_dim']} != UNet cross dim")
    if VAE_FACTOR[scale] != 2 ** (len(VAE_CONFIGS[scale]["block_out_channels"]) - 1):
        raise AssertionError(f"{scale}: VAE config does not give factor {VAE_FACTOR[scale]}")
    with torch.random.fork_rng(devices=[]):
        unet = build_unet(ucfg, device=device, seed=seed)
    components: dict[str, Any] = {
        "unet": unet,
        "vae": build_vae(scale, seed=seed + 1, device=device),
        "image_encoder": build_image_encoder(scale, seed=seed + 2, device=device),
        "feature_extractor": build_feature_extractor(),
        "scheduler": build_scheduler(),
    }
    if str(device) != "meta" and dtype != torch.float32:
        for name in ("unet", "vae", "image_encoder"):
            components[name] = components[name].to(dtype=dtype)
    for name in ("unet", "vae", "image_encoder"):
        components[name].eval()
    return components


def build_pipeline(
    scale: str, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> StableVideoDiffusionPipeline:
    """A complete random ``StableVideoDiffusionPipeline`` of ``scale`` (deterministic for a given seed)."""
    pipe = StableVideoDiffusionPipeline(**build_components(scale, seed=seed, device=device, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe
