"""Where does the grain come from? Sample latents with the step-15,000 EMA, then decode them (a) with the trained
decoder, (b) with the linear PCA decoder, (c) with fine channels 8-15 replaced by the conditioning image's."""

import sys

sys.path.insert(0, ".")  # run from the repository root
import numpy as np
import torch

from explorer import data
from explorer.metrics import first_frame_psnr, sharpness_and_fade
from explorer.pipeline import prepare_image
from explorer.training.curves import _pipeline
from explorer.training.stage_runs import load_init

torch.set_num_threads(1)
unet, enc, vae, _ = load_init("runs/svd-pretrain", "tiny", "runs/vae/final", "checkpoints/_shared/image_encoder")
pipe = _pipeline(unet, vae, enc)
W, H = 128, 64


def u01(t):
    return ((t.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64)


for i, (name, image) in enumerate(list(data.test_images().items())[:4]):
    img = prepare_image(image, W, H)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        z0 = vae.encode(x).latent_dist.mode()
        rt, rt_lin = u01(vae.decode(z0, num_frames=1).sample), u01(vae.linear_decode(z0))
        g = torch.Generator().manual_seed(i)
        lat = pipe(
            img,
            height=H,
            width=W,
            num_frames=14,
            num_inference_steps=50,
            min_guidance_scale=1.0,
            max_guidance_scale=3.0,
            motion_bucket_id=127,
            fps=7,
            noise_aug_strength=0.02,
            generator=g,
            output_type="latent",
        ).frames  # (1, F, C, h, w) scaled
        z = lat[0] / vae.config.scaling_factor
        dec = u01(vae.decode(z, num_frames=14).sample)
        lin = u01(vae.linear_decode(z))
        zf = z.clone()
        zf[:, 8:] = z0[:, 8:]
        fix = u01(vae.decode(zf, num_frames=14).sample)
        zc = z.clone()
        zc[:, 8:] = 0
        cut = u01(vae.decode(zc, num_frames=14).sample)
    err = ((z[0] - z0[0]) ** 2).flatten(1).mean(1) / z0[0].flatten(1).var(1)
    print(name, f"frame-0 latent rel err ch0-7 {err[:8].mean():.3f} ch8-15 {err[8:].mean():.3f}")
    for lab, v, ref in (("decoder", dec, rt), ("linear", lin, rt_lin), ("fine=cond", fix, rt), ("fine=0", cut, rt)):
        s = sharpness_and_fade(v, ref[0])
        print(
            f"  {lab:10s} HF kept f0 {s['hf_kept_frame0']:.2f} median {s['hf_kept_median']:.2f}  "
            f"frame-0 PSNR {first_frame_psnr(v, ref[0]):.2f}"
        )
