"""The PatchVAE: a fixed PCA patch encoder (linear, orthonormal) and a residual decoder that starts at the PCA
reconstruction; saved and loaded like any diffusers model; usable by the SVD pipeline and stage folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from explorer import data
from explorer.components import patch_vae_config
from explorer.vae import PatchVAE, build_patch_vae, fit_pca, is_linear_encoder, laplacian_energy, load_vae, psnr_db


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [data.make_image("train", i, size=(64, 32)) for i in range(12)]


@pytest.fixture(scope="module")
def vae(photos: list[torch.Tensor]) -> PatchVAE:
    return build_patch_vae(patch_vae_config("micro"), photos).eval()


def test_pca_basis_is_orthonormal_and_sorted(photos: list[torch.Tensor]) -> None:
    basis, mean, explained = fit_pca(photos, 4, 6)
    assert basis.shape == (6, 48) and mean.shape == (48,)
    assert torch.allclose(basis @ basis.T, torch.eye(6), atol=1e-5)
    assert torch.all(explained[:-1] >= explained[1:] - 1e-7) and explained.sum() == pytest.approx(1.0, abs=1e-5)


def test_untrained_decoder_is_the_linear_reconstruction(vae: PatchVAE, photos: list[torch.Tensor]) -> None:
    x = torch.stack(photos[:4])
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert torch.equal(vae.decode(z).sample, vae.linear_decode(z))
        # the linear reconstruction is the best rank-k projection: better than a flat image, worse than identity
        rec = vae.decode(z).sample
    flat = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    assert psnr_db(rec, x) > psnr_db(flat, x) + 5


def test_encoder_is_linear_and_white_noise_stays_white(vae: PatchVAE) -> None:
    assert is_linear_encoder(vae)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 64, generator=gen) * 2 - 1
    n = torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        lhs = vae.encode(x + 0.3 * n).latent_dist.mode()
        rhs = vae.encode(x).latent_dist.mode() + 0.3 * vae.encode_noise(n)
        assert torch.allclose(lhs, rhs, atol=1e-5)
        big = vae.encode_noise(torch.randn(8, 3, 64, 128, generator=gen))
    assert big.std().item() == pytest.approx(1.0, abs=0.03)  # orthonormal rows: unit pixel noise -> unit latent noise


def test_sample_equals_mode_and_sizes_are_checked(vae: PatchVAE) -> None:
    x = torch.zeros(1, 3, 16, 32)
    dist = vae.encode(x).latent_dist
    assert torch.allclose(dist.sample(torch.Generator().manual_seed(0)), dist.mode(), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vae.encode(torch.zeros(1, 3, 15, 32))
    with pytest.raises(ValueError, match="patch_size"):
        PatchVAE(patch_size=4, block_out_channels=(16, 16))


def test_save_load_roundtrip_and_pipeline_factor(vae: PatchVAE, tmp_path: Path) -> None:
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert not list((tmp_path / "vae").glob("*.bin"))
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded, PatchVAE)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert 2 ** (len(loaded.config.block_out_channels) - 1) == loaded.config.patch_size


def test_laplacian_energy_ranks_sharp_above_blurred() -> None:
    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 3, 32, 32, generator=gen)
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1)
    assert laplacian_energy(sharp).item() > 3 * laplacian_energy(blurred).item()


def test_stage_folder_with_a_patch_vae_loads_and_generates(vae: PatchVAE, tmp_path: Path) -> None:
    """A stage whose shared VAE is a PatchVAE: model_index names it, load_stage builds it, generation runs."""
    import json

    from explorer.components import build_components
    from explorer.pipeline import StageRecord, generate, load_stage, save_stage

    comps = build_components("micro")
    comps["vae"] = vae  # micro: 4 latent channels, as the micro UNet expects
    record = StageRecord(slug="lowres-ft", parent="svd", scale="micro", width=32, height=16, steps=2)
    folder = save_stage(comps, tmp_path / "ckpt" / "lowres-ft", record,
                        shared={"vae": tmp_path / "ckpt" / "_shared" / "vae"}, root=tmp_path / "ckpt")
    assert json.loads((folder / "model_index.json").read_text())["vae"] == ["explorer", "PatchVAE"]
    pipe, _ = load_stage(folder)
    assert isinstance(pipe.vae, PatchVAE)
    res = generate(pipe, torch.zeros(16, 32, 3, dtype=torch.uint8).numpy(), width=32, height=16, steps=2,
                   max_guidance=1.0, seed=0)
    assert res.frames.shape == (14, 16, 32, 3)


def test_rescaled_latent_channels_decode_to_the_same_images(photos: list[torch.Tensor]) -> None:
    """Whitening the latent channels is an exact reparametrisation: the same images come back, every channel's
    variance on the fitting photographs is equalised, and noise augmentation stays exact."""
    from explorer.vae import rescale_latent_channels, whitening_scales

    vae = build_patch_vae(patch_vae_config("micro"), photos).eval()
    with torch.no_grad():  # a decoder that is not the identity on the linear path, so decoder_in matters too
        vae.decoder_out.weight.normal_(0, 0.05)
    x = torch.stack(photos)
    with torch.no_grad():
        before_z = vae.encode(x).latent_dist.mode()
        before = vae.decode(before_z).sample
    variances = before_z.transpose(0, 1).flatten(1).var(dim=1)
    scales = whitening_scales(variances)
    rescale_latent_channels(vae, scales)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert torch.allclose(z, before_z * scales.view(1, -1, 1, 1), atol=1e-5)
        assert torch.allclose(vae.decode(z).sample, before, atol=1e-4)
        v = z.transpose(0, 1).flatten(1).var(dim=1)
        assert torch.allclose(v, v.mean().expand_as(v), rtol=1e-3) and v.mean() == pytest.approx(
            variances.mean().item(), rel=1e-4)
        n = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(vae.encode(x + 0.1 * n).latent_dist.mode(), z + 0.1 * vae.encode_noise(n), atol=1e-5)
    with pytest.raises(ValueError, match="positive scales"):
        rescale_latent_channels(vae, torch.zeros(vae.config.latent_channels))


def test_unet_mapped_onto_rescaled_latents_denoises_the_same() -> None:
    """rescale_unet_latent_channels: D'(S x) = S D(x) exactly for the EDM denoiser when noise and conditioning
    latents are scaled by S too (the warm start of a UNet onto whitened latents)."""
    from explorer import edm
    from explorer.models import build_unet, unet_config
    from explorer.vae import rescale_unet_latent_channels

    torch.manual_seed(0)
    cfg = unet_config("micro")
    cfg.update(in_channels=8, out_channels=4)
    unet = build_unet(cfg).eval().double()  # float64: the micro UNet's norms amplify float32 rounding
    with torch.no_grad():
        unet.conv_out.weight.normal_(0, 0.1)
        unet.conv_out.bias.normal_(0, 0.1)
    scales = torch.tensor([0.3, 1.0, 2.5, 7.0], dtype=torch.float64)
    s = scales.view(1, 1, -1, 1, 1)
    x, cond = torch.randn(1, 3, 4, 8, 16).double(), torch.randn(1, 4, 8, 16).double()
    sigma, embeds = torch.tensor([1.3]).double(), torch.randn(1, 1, cfg["cross_attention_dim"]).double()
    ids = torch.zeros(1, 3).double()
    with torch.no_grad():
        before = edm.denoise(unet, x, sigma, cond, embeds, ids)
        rescale_unet_latent_channels(unet, scales)
        after = edm.denoise(unet, x * s, sigma, cond * scales.view(1, -1, 1, 1), embeds, ids)
    assert torch.allclose(after, before * s, atol=1e-8)
    with pytest.raises(ValueError, match="positive scales"):
        rescale_unet_latent_channels(unet, torch.ones(3))
