"""UNet configurations at the two scales the project uses.

``full`` is Stable Video Diffusion's image-to-video UNet exactly as published (diffusers config of
``stabilityai/stable-video-diffusion-img2vid``); ``tiny`` is the project's own small SVD-family UNet at a width a
2-core CPU can train and run (see the note at its config); ``micro`` keeps SVD's exact block layout (all 38
temporal blocks) at the narrowest width, for fast tests and ``build_path --quick``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers import UNetSpatioTemporalConditionModel

SVD_DOWN_BLOCKS = (
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "DownBlockSpatioTemporal",
)
SVD_UP_BLOCKS = (
    "UpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
)

# The published SVD img2vid UNet (1.52 B parameters).
FULL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": SVD_DOWN_BLOCKS,
    "up_block_types": SVD_UP_BLOCKS,
    "block_out_channels": (320, 640, 1280, 1280),
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": (5, 10, 20, 20),
    "num_frames": 25,
}

# The project's tiny SVD-family UNet: SVD's four levels, layers per block (2 down / 3 up) and kinds of temporal
# blocks, narrower (GroupNorm(32) inside diffusers' blocks makes 32 the narrowest legal width). One measured
# deviation: level 0 has no transformer (plain spatio-temporal resnet blocks, like SVD's lowest level). At the
# tiny base size its spatial self-attention runs over 64x36 = 2304 tokens per frame and cost 4-5x the whole rest
# of the UNet on this 2-core CPU (4.95 s vs 0.99 s per CFG evaluation at 256x144, 1 thread), which would put the
# tiny `svd` far beyond a minute per clip and the training budget beyond reach. Levels 1-2 and the mid block keep
# SVD's transformers, so every transform (cross-attention rewrite, multiscaling, gates, funnels) applies; the
# tiny UNet has 22 temporal resnets + 11 temporal transformers = 33 temporal blocks (full SVD: 38).
TINY_UNET_CONFIG: dict[str, Any] = {
    **FULL_UNET_CONFIG,
    "sample_size": 16,
    "down_block_types": (
        "DownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ),
    "up_block_types": (
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "UpBlockSpatioTemporal",
    ),
    "in_channels": 16,  # 8 noisy + 8 conditioning latent channels (the tiny VAE has 8 latent channels)
    "out_channels": 8,
    "block_out_channels": (32, 32, 64, 64),
    "addition_time_embed_dim": 64,
    "projection_class_embeddings_input_dim": 192,
    "cross_attention_dim": 256,
    "num_attention_heads": (1, 1, 2, 2),
    "num_frames": 14,
}

# Smallest member with the same block layout; for unit tests and --quick runs only.
MICRO_UNET_CONFIG: dict[str, Any] = {
    **FULL_UNET_CONFIG,
    "sample_size": 8,
    "block_out_channels": (32, 32, 32, 32),
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "cross_attention_dim": 32,
    "num_attention_heads": (2, 2, 2, 2),
    "num_frames": 14,
}

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "full": FULL_UNET_CONFIG,
    "tiny": TINY_UNET_CONFIG,
    "micro": MICRO_UNET_CONFIG,
}

# Pixel size of one latent pixel, per scale (SVD's VAE is 8x; the tiny VAE is 4x).
VAE_FACTOR: dict[str, int] = {"full": 8, "tiny": 4, "micro": 4}


def unet_config(scale: str) -> dict[str, Any]:
    """A fresh copy of the UNet config of ``scale`` ('full', 'tiny' or 'micro')."""
    if scale not in UNET_CONFIGS:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(UNET_CONFIGS)}")
    return copy.deepcopy(UNET_CONFIGS[scale])


def build_unet(
    config: dict[str, Any] | str, device: str | torch.device = "cpu", seed: int | None = 0
) -> UNetSpatioTemporalConditionModel:
    """Build a UNet from a config (or a scale name) with random weights.

    On ``device='meta'`` no memory is allocated. diffusers' AlphaBlender creates ``mix_factor`` with the
    legacy ``torch.Tensor`` constructor, which ignores a ``torch.device`` context, so the model is moved with
    ``.to`` afterwards instead of being built under the context manager.
    """
    cfg = unet_config(config) if isinstance(config, str) else dict(config)
    if str(device) == "meta":
        with torch.device("meta"):
            unet = UNetSpatioTemporalConditionModel(**cfg)
        return unet.to("meta")
    if seed is not None:
        torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**cfg)
    return unet.to(device)


def unet_inputs(
    unet: UNetSpatioTemporalConditionModel,
    height: int,
    width: int,
    frames: int,
    batch: int = 1,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random inputs for one UNet evaluation at latent size ``height`` x ``width``.

    The context is one token (SVD's CLIP image embedding); ``added_time_ids`` are SVD's defaults.
    """
    device = device if device is not None else unet.device
    cfg = unet.config
    gen = torch.Generator("cpu").manual_seed(seed)
    ctx_dim = cfg.cross_attention_dim
    ctx_dim = ctx_dim[0] if isinstance(ctx_dim, (list, tuple)) else ctx_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    if str(device) == "meta":
        return {
            "sample": torch.empty(batch, frames, cfg.in_channels, height, width, device="meta", dtype=dtype),
            "timestep": torch.empty((), device="meta", dtype=dtype),
            "encoder_hidden_states": torch.empty(batch, 1, ctx_dim, device="meta", dtype=dtype),
            "added_time_ids": torch.empty(batch, 3, device="meta", dtype=dtype),
        }
    return {
        "sample": rand(batch, frames, cfg.in_channels, height, width),
        "timestep": torch.tensor(0.5, dtype=dtype, device=device),
        "encoder_hidden_states": rand(batch, 1, ctx_dim),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * batch, dtype=dtype, device=device),
    }
