"""Issue 13, session 16: `adversarial-1step` arms from the new `optimized-xattn` (teacher, starting point and the
discriminator's frozen trunk), distilling from the teacher-pair store (explorer/training/teacher_pairs.py; 8 guided
Euler steps of the teacher, computed once) instead of sampling the teacher online. The held-out discriminator
accuracy is logged every `--probe-every` steps; the EMA's one-step clips are scored at the end on the four test
photographs (frame-0 PSNR, consecutive PSNR, HF kept frame 0 / median, the largest std drift) and the bucket sweep.

    python checkpoints/_partial/probes-session16/adv.py s16-distill --distill-weight 1 --steps 600 --threads 1
    python checkpoints/_partial/probes-session16/adv.py s16-distill-dlow --distill-weight 1 --d-p-mean -3 --steps 600
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root
import torch

from explorer import data
from explorer import metrics as M
from explorer.evaluation import bucket_sweep
from explorer.pipeline import generate, load_stage
from explorer.training.adversarial import AdversarialConfig, finetune_one_step
from explorer.training.curves import PROBE_AUG

ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("--stage", default="checkpoints/optimized-xattn")
ap.add_argument("--pairs", default="runs/teacher-pairs-128x64")
ap.add_argument("--steps", type=int, default=600)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--lr-g", type=float, default=2e-5)
ap.add_argument("--lr-d", type=float, default=2e-4)
ap.add_argument("--distill-weight", type=float, default=1.0)
ap.add_argument("--recon-weight", type=float, default=0.1)
ap.add_argument("--d-p-mean", type=float, default=-1.0)
ap.add_argument("--probe-every", type=int, default=50)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--score-only", action="store_true", help="score the stage at 1 NFE as it is (no training)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
pipe, _ = load_stage(a.stage)
teacher, _ = load_stage(a.stage)
cfg = AdversarialConfig(out=f"runs/{a.name}", size=(128, 64), steps=a.steps, batch=a.batch, lr_g=a.lr_g, lr_d=a.lr_d,
                        warmup=min(50, max(1, a.steps // 10)), ckpt_every=50, num_workers=0, threads=a.threads,
                        log_every=10, distill_weight=a.distill_weight, recon_weight=a.recon_weight,
                        d_p_mean=a.d_p_mean, probe_every=a.probe_every, pairs=a.pairs if a.distill_weight else "")
if not a.score_only:
    finetune_one_step(cfg, pipe.unet, teacher.unet, pipe.vae, pipe.image_encoder, progress=False)
scores: dict[str, dict[str, float]] = {}
for i, (name, image) in enumerate(list(data.test_images().items())[:4]):
    res = generate(pipe, image, width=128, height=64, steps=1, min_guidance=1.0, max_guidance=1.0, seed=i)
    rt = M.vae_round_trip(pipe.vae, image, 128, 64)
    scores[name] = {"frame0_psnr": M.first_frame_psnr(res.frames, rt),
                    "consecutive_psnr": M.consecutive_psnr(res.frames), **M.sharpness_and_fade(res.frames, rt)}
mean = {k: round(sum(s[k] for s in scores.values()) / len(scores), 3) for k in next(iter(scores.values()))}
sweep = bucket_sweep(pipe, 128, 64, steps=1, seed=0, frames=14, min_guidance=1.0, max_guidance=1.0,
                     noise_aug=PROBE_AUG)
row = {"arm": a.name, "config": vars(a), "mean": mean, "photos": scores, "bucket_sweep": sweep}
print(json.dumps({"arm": a.name, **mean, "ratio_255_20": sweep["ratio"]}))
Path(f"runs/{a.name}").mkdir(parents=True, exist_ok=True)
Path(f"runs/{a.name}/score.json").write_text(json.dumps(row, indent=1))
