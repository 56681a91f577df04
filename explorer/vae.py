"""The tiny family's autoencoder: a linear patch encoder (PCA of 4x4 patches) and a learned residual decoder.

Why not a small ``AutoencoderKLTemporalDecoder`` trained from scratch: on this project's CPU budget the tiny
convolutional VAE reached 23.3 dB on test first frames, worse than simply projecting 4x4 RGB patches onto their
top principal components, with no training at all (docs/vae.md has the measurements). So the tiny VAE *starts*
at that linear optimum and only learns what a linear map cannot do:

* **encoder**: ``z = W (patch - mu)``, one 4x4 / stride-4 convolution whose 16 filters are the orthonormal top
  principal components of the training photographs' patches. Fixed after fitting: the latent space never moves
  under UNets trained on it, the latent of a noise-augmented image is exactly ``z(image) + aug * W noise`` (what
  lets the latent cache reproduce SVD's pixel-space noise augmentation bit for bit), and because ``W`` is
  orthonormal, an MSE in latent space is the MSE of the projected pixels.
* **decoder**: the transposed projection ``x = W^T z + mu`` (the PCA reconstruction) plus a residual
  convolutional network whose last layer starts at zero, so the untrained decoder *is* the linear baseline and
  training can only improve on it (de-blocking, edges, detail the 16 components dropped).

Frames are decoded independently (no temporal layers): a consistent latent video gives a consistent video.
The class speaks the part of ``AutoencoderKLTemporalDecoder``'s interface that ``StableVideoDiffusionPipeline``
uses (``encode(x).latent_dist.mode()``, ``decode(z, num_frames).sample``, ``config.scaling_factor``,
``config.block_out_channels`` for the 4x factor), saves with ``save_pretrained`` (safetensors) and loads
through :func:`load_vae`, which also loads diffusers' SVD VAE from the same kind of folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Log-variance of the posterior: the encoder is deterministic; the distribution object is kept only because the
# SVD pipeline asks for ``latent_dist.mode()``. exp(0.5 * -30) = 3e-7: a sample equals the mode to float rounding.
_LOGVAR = -30.0


class _ResBlock(nn.Module):
    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class PatchVAE(ModelMixin, ConfigMixin):
    """Linear PCA patch encoder + residual convolutional decoder (see the module docstring).

    ``block_out_channels`` are the decoder's widths from the latent resolution up, one per 2x level, so the
    pipeline's ``vae_scale_factor = 2 ** (len(block_out_channels) - 1)`` equals ``patch_size``.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        patch_size: int = 4,
        block_out_channels: tuple[int, ...] = (96, 64, 32),
        layers_per_block: int = 2,
        norm_num_groups: int = 8,
        scaling_factor: float = 1.0,
        force_upcast: bool = False,
        sample_size: int = 256,
    ) -> None:
        super().__init__()
        if 2 ** (len(block_out_channels) - 1) != patch_size:
            raise ValueError(f"block_out_channels {block_out_channels} give factor "
                             f"{2 ** (len(block_out_channels) - 1)}, not patch_size {patch_size}")
        patch_dim = in_channels * patch_size * patch_size
        if latent_channels > patch_dim:
            raise ValueError(f"latent_channels {latent_channels} > patch dimension {patch_dim}")
        # encoder: z = W (p - mu) as one strided convolution (weight W, bias -W mu)
        self.encoder = nn.Conv2d(in_channels, latent_channels, patch_size, stride=patch_size)
        # linear decoder: p = W^T z + mu, then pixel shuffle
        self.linear_decoder = nn.Conv2d(latent_channels, out_channels * patch_size * patch_size, 1)
        widths = list(block_out_channels)
        self.decoder_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.decoder_levels = nn.ModuleList()
        self.decoder_up = nn.ModuleList()
        for i, w in enumerate(widths):
            self.decoder_levels.append(nn.Sequential(*[_ResBlock(w, norm_num_groups) for _ in range(layers_per_block)]))
            if i + 1 < len(widths):
                self.decoder_up.append(nn.Conv2d(w, widths[i + 1], 3, padding=1))
        self.decoder_norm = nn.GroupNorm(norm_num_groups, widths[-1])
        # input: the last level's features and the linear reconstruction; output: a residual, zero at start
        self.decoder_out = nn.Conv2d(widths[-1] + out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.decoder_out.weight)
        nn.init.zeros_(self.decoder_out.bias)
        self.set_projection(torch.eye(patch_dim)[:latent_channels], torch.zeros(patch_dim))

    # ------------------------------------------------------------------------------------------- projection
    @torch.no_grad()
    def set_projection(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """Set the encoder to ``W (p - mu)`` and the linear decoder to ``W^T z + mu``.

        ``basis``: (latent_channels, C*p*p) orthonormal rows in ``F.pixel_unshuffle`` order; ``mean``: (C*p*p,).
        """
        c, p = self.config.in_channels, self.config.patch_size
        k = self.config.latent_channels
        basis = basis.to(self.encoder.weight.dtype)
        mean = mean.to(self.encoder.weight.dtype)
        # pixel_unshuffle orders a patch as (channel, dy, dx): the same order as a conv kernel's (C, p, p)
        self.encoder.weight.copy_(basis.reshape(k, c, p, p))
        self.encoder.bias.copy_(-(basis @ mean))
        self.linear_decoder.weight.copy_(basis.T.reshape(c * p * p, k, 1, 1))
        self.linear_decoder.bias.copy_(mean)

    def projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(basis W, mean mu) of the linear encoder."""
        k = self.config.latent_channels
        w = self.encoder.weight.detach().reshape(k, -1)
        mean = self.linear_decoder.bias.detach().clone()
        return w, mean

    # ----------------------------------------------------------------------------------------- interface
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple[Any]:
        """Posterior of images ``x`` (N, 3, H, W) in [-1, 1]; H and W multiples of ``patch_size``."""
        p = self.config.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        z = self.encoder(x)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.full_like(z, _LOGVAR)], dim=1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def encode_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The latent displacement of adding pixel ``noise``: ``encode(x + n) = encode(x) + encode_noise(n)``
        exactly (the encoder is linear). For white noise this is white noise of the same std per channel (W
        orthonormal), times the channel's scale when the channels were rescaled (``rescale_latent_channels``)."""
        return F.conv2d(noise, self.encoder.weight, None, stride=self.config.patch_size)

    def linear_decode(self, z: torch.Tensor) -> torch.Tensor:
        """The PCA reconstruction ``W^T z + mu`` (the untrained decoder; the linear baseline)."""
        return F.pixel_shuffle(self.linear_decoder(z), self.config.patch_size)

    def decode(self, z: torch.Tensor, num_frames: int | None = None,
               return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Images from latents (N, latent_channels, h, w); ``num_frames`` is accepted for the SVD pipeline and
        ignored (frames are decoded independently)."""
        del num_frames
        if not self.decoder_in.weight.is_contiguous(memory_format=torch.channels_last):
            # oneDNN's CPU convolutions run this decoder's narrow (16-64 channel) layers ~2.3x faster in NHWC,
            # with the same result to float rounding; loading replaces the parameters, so it is checked here
            self.to(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
        base = self.linear_decode(z)
        h = self.decoder_in(z)
        for i, level in enumerate(self.decoder_levels):
            h = level(h)
            if i < len(self.decoder_up):
                h = self.decoder_up[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = F.silu(self.decoder_norm(h))
        out = (base + self.decoder_out(torch.cat([h, base], dim=1))).contiguous()
        return DecoderOutput(sample=out) if return_dict else (out,)

    def forward(self, sample: torch.Tensor, num_frames: int = 1, sample_posterior: bool = False,
                return_dict: bool = True, generator: torch.Generator | None = None) -> DecoderOutput | tuple:
        dist = self.encode(sample).latent_dist
        z = dist.sample(generator=generator) if sample_posterior else dist.mode()
        return self.decode(z, num_frames=num_frames, return_dict=return_dict)


# ------------------------------------------------------------------------------------------------ fitting
def patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N*h*w, C*p*p) patch vectors of images (N, C, H, W), in ``pixel_unshuffle`` order."""
    p = F.pixel_unshuffle(images, patch_size)
    return p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])


@torch.no_grad()
def fit_pca(images: torch.Tensor | list[torch.Tensor], patch_size: int,
            components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(basis (k, d), mean (d,), explained variance fraction per component (d,)) of the images' patches.

    ``images`` may be a list of (3, H, W) tensors of different sizes. Computed in float64.
    """
    rows = [patches(x[None] if x.ndim == 3 else x, patch_size).double() for x in images]
    data = torch.cat(rows)
    mean = data.mean(0)
    cov = (data - mean).T @ (data - mean) / len(data)
    values, vectors = torch.linalg.eigh(cov)
    values, vectors = values.flip(0), vectors.flip(1)
    # a deterministic sign per component (eigh's is arbitrary): the largest-magnitude entry is positive
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
    vectors = vectors * signs
    return vectors[:, :components].T.float(), mean.float(), (values / values.sum()).float()


def build_patch_vae(config: dict[str, Any], photos: list[torch.Tensor] | None = None,
                    seed: int = 0) -> PatchVAE:
    """A PatchVAE with seeded decoder weights and, when ``photos`` are given, the PCA projection fitted on them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = PatchVAE(**config)
    if photos is not None:
        basis, mean, _ = fit_pca(photos, vae.config.patch_size, vae.config.latent_channels)
        vae.set_projection(basis, mean)
    return vae


@torch.no_grad()
def rescale_latent_channels(vae: PatchVAE, scales: torch.Tensor) -> PatchVAE:
    """Multiply latent channel ``c`` by ``scales[c]`` without changing any decoded image (in place).

    The encoder's rows are scaled by ``scales`` and the decoder's input layers (the linear decoder and
    ``decoder_in``) by ``1 / scales``, so ``decode(encode(x))`` is unchanged up to float rounding, and
    ``encode_noise`` follows (noise augmentation stays exact). Why: the PCA channels differ ~1,300x in variance,
    so under one noise level the fine-detail channels are drowned first and weigh almost nothing in the
    denoising loss; ``whitening_scales`` equalises them.
    """
    scales = scales.to(vae.encoder.weight.dtype).flatten()
    if scales.numel() != vae.config.latent_channels or not bool((scales > 0).all()):
        raise ValueError(f"need {vae.config.latent_channels} positive scales, got {scales.tolist()}")
    vae.encoder.weight.mul_(scales.view(-1, 1, 1, 1))
    vae.encoder.bias.mul_(scales)
    vae.linear_decoder.weight.div_(scales.view(1, -1, 1, 1))
    vae.decoder_in.weight.div_(scales.view(1, -1, 1, 1))
    return vae


@torch.no_grad()
def rescale_unet_latent_channels(unet: Any, scales: torch.Tensor) -> Any:
    """Map an SVD-family UNet onto latents rescaled by ``rescale_latent_channels(vae, scales)`` (in place).

    The UNet's input is the noisy latents and the image latents side by side, and its output a v-prediction per
    latent channel; dividing ``conv_in``'s columns of both by ``scales`` and multiplying ``conv_out``'s rows by them
    gives ``D'(S x) = S D(x)`` for the EDM denoiser exactly, when the noise is scaled too. Under the isotropic noise
    the new latents are trained with, this is a warm start, not an equivalence (docs/training.md, session 14).
    """
    scales = scales.to(unet.conv_in.weight.dtype).flatten()
    c = scales.numel()
    if unet.conv_in.in_channels != 2 * c or unet.conv_out.out_channels != c or not bool((scales > 0).all()):
        raise ValueError(f"need {unet.conv_out.out_channels} positive scales for a UNet with "
                         f"{unet.conv_in.in_channels} input channels, got {scales.tolist()}")
    unet.conv_in.weight.div_(scales.repeat(2).view(1, -1, 1, 1))
    unet.conv_out.weight.mul_(scales.view(-1, 1, 1, 1))
    unet.conv_out.bias.mul_(scales)
    return unet


def whitening_scales(variances: torch.Tensor) -> torch.Tensor:
    """Per-channel scales that give every latent channel the same variance while keeping the mean variance
    (so the VAE's ``scaling_factor`` stays right): ``sqrt(mean(v) / v)``."""
    v = variances.double().flatten()
    return (v.mean() / v).sqrt().float()


# ------------------------------------------------------------------------------------------------ loading
VAE_CLASSES: dict[str, type] = {"AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder,
                                "PatchVAE": PatchVAE}


def vae_class(config: dict[str, Any]) -> type:
    """The VAE class a ``vae/config.json`` names (diffusers' SVD VAE when it names none)."""
    name = config.get("_class_name", "AutoencoderKLTemporalDecoder")
    if name not in VAE_CLASSES:
        raise ValueError(f"unknown VAE class {name!r}; expected one of {sorted(VAE_CLASSES)}")
    return VAE_CLASSES[name]


def load_vae(folder: str | Path) -> AutoencoderKLTemporalDecoder | PatchVAE:
    """A saved VAE folder (safetensors) of either class, in eval mode."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return vae_class(config).from_pretrained(str(folder), use_safetensors=True).eval()


def is_linear_encoder(vae: Any) -> bool:
    """Whether ``encode(x + n) = encode(x) + encode_noise(n)`` holds exactly (what the latent cache needs)."""
    return isinstance(vae, PatchVAE)


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Per-image variance of the Laplacian of the luminance (N,): the high-frequency energy an image holds."""
    gray = images.mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=gray.dtype).view(1, 1, 3, 3)
    return F.conv2d(gray, kernel).var(dim=(1, 2, 3))


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (computed on [0, 1], after clamping)."""
    mse = F.mse_loss((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


__all__ = ["PatchVAE", "VAE_CLASSES", "build_patch_vae", "fit_pca", "is_linear_encoder", "laplacian_energy",
           "load_vae", "patches", "psnr_db", "vae_class"]
