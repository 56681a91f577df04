"""What the trainer conditions the UNet on equals what StableVideoDiffusionPipeline feeds it at sampling time.

The trainer (explorer.training.denoise: encode_batch + edm.denoise) and the stock pipeline must agree on every
input of the UNet -- the unscaled image latents of the noise-augmented first frame (noise added in pixel space),
the CLIP embedding of the clean first frame, ``[fps - 1, bucket, aug]``, the timestep 0.25 ln(sigma), the input
scaling c_in -- or a trained model samples something it never saw. The UNet's first call inside the pipeline is
captured and rebuilt from the trainer's functions with the same random draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import data, edm
from explorer.components import build_components, patch_vae_config
from explorer.training.denoise import clip_embed_input
from explorer.vae import build_patch_vae

W, H, FRAMES = 32, 16, 14


def _vae(kind: str):  # noqa: ANN202
    if kind == "kl":
        return None
    return build_patch_vae(patch_vae_config("micro"), [data.make_image("train", i, size=(64, 32)) for i in range(4)])


@pytest.mark.parametrize("vae_kind", ["kl", "patch"])
def test_trainer_inputs_equal_the_pipeline_unet_inputs(vae_kind: str) -> None:
    from diffusers import StableVideoDiffusionPipeline

    comps = build_components("micro")
    if (vae := _vae(vae_kind)) is not None:
        comps["vae"] = vae.eval()
    pipe = StableVideoDiffusionPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8))
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, args, kwargs):  # noqa: ANN001, ANN202
        if not captured:
            captured.update(sample=args[0].clone(), timestep=torch.as_tensor(args[1]).clone(),
                            embeds=kwargs["encoder_hidden_states"].clone(), time_ids=kwargs["added_time_ids"].clone())

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    fps, bucket, aug, seed = 9, 100, 0.05, 3
    unit = torch.randn(1, FRAMES, pipe.unet.config.out_channels, H // 4, W // 4,
                       generator=torch.Generator().manual_seed(11))  # the pipeline scales it by init_noise_sigma
    pipe(image, height=H, width=W, num_frames=FRAMES, num_inference_steps=2, min_guidance_scale=1.0,
         max_guidance_scale=1.0, fps=fps, motion_bucket_id=bucket, noise_aug_strength=aug,
         generator=torch.Generator().manual_seed(seed), latents=unit.clone(), output_type="pt")

    # the trainer's recipe, same draws: the pipeline's first random draw is the pixel-space augmentation noise
    first = pipe.video_processor.preprocess(image, height=H, width=W)  # (1, 3, H, W) in [-1, 1]
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        image_latents = pipe.vae.encode(first + aug * noise).latent_dist.mode()
        embeds = pipe.image_encoder(clip_embed_input(first)).image_embeds.unsqueeze(1)
    sigma = edm.karras_sigmas(2)[:1]
    latents = unit * pipe.scheduler.init_noise_sigma
    time_ids = edm.added_time_ids(fps, bucket, aug)
    cond = image_latents.unsqueeze(1).expand(1, FRAMES, *image_latents.shape[1:])
    model_in = torch.cat([latents * edm.c_in(sigma.view(1, 1, 1, 1, 1)), cond], dim=2)

    assert torch.allclose(captured["sample"], model_in, atol=1e-5, rtol=1e-4)
    assert torch.allclose(captured["timestep"].float().reshape(-1)[:1], edm.c_noise(sigma), atol=1e-5)
    assert torch.allclose(captured["embeds"], embeds, atol=1e-5)
    assert torch.allclose(captured["time_ids"].float(), time_ids, atol=1e-6)
