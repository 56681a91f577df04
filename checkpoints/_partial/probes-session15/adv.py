"""Issue 13, first measurements on the new base: one arm of `adversarial-1step` from the new `optimized-xattn`
(the step-15,000 EMA with the exact cross-attention rewrite; it is also the teacher and the discriminator's
frozen trunk), Plan's recipe unless a flag says otherwise; the held-out discriminator accuracy is logged every
`--probe-every` steps, and the EMA's one-step clips are scored on the four test photographs at the end.

    python checkpoints/_partial/probes-session15/adv.py adv-pure --steps 200 --threads 1
    python checkpoints/_partial/probes-session15/adv.py adv-distill --distill-weight 1 --steps 200 --threads 1
    python checkpoints/_partial/probes-session15/adv.py adv-start --score-only     # the starting point at 1 NFE
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root
import torch

from explorer.evaluation import bucket_sweep
from explorer.pipeline import load_stage
from explorer.training.adversarial import AdversarialConfig, finetune_one_step
from explorer.training.curves import PROBE_AUG, sample_quality

ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("--stage", default="/work/ck-new/optimized-xattn")
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--lr-g", type=float, default=2e-5)
ap.add_argument("--distill-weight", type=float, default=0.0)
ap.add_argument("--distill-steps", type=int, default=8)
ap.add_argument("--d-p-mean", type=float, default=-1.0)
ap.add_argument("--probe-every", type=int, default=50)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--score-only", action="store_true", help="score the stage at 1 NFE as it is (no training)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
pipe, _ = load_stage(a.stage)
teacher, _ = load_stage(a.stage)
cfg = AdversarialConfig(out=f"runs/{a.name}", size=(128, 64), steps=a.steps, batch=a.batch, lr_g=a.lr_g,
                        warmup=min(50, max(1, a.steps // 10)), ckpt_every=50, num_workers=0, threads=a.threads,
                        log_every=10, distill_weight=a.distill_weight, distill_steps=a.distill_steps,
                        d_p_mean=a.d_p_mean, probe_every=a.probe_every)
if not a.score_only:
    finetune_one_step(cfg, pipe.unet, teacher.unet, pipe.vae, pipe.image_encoder, progress=False)
q = sample_quality(pipe.unet, pipe.vae, pipe.image_encoder, (128, 64), steps=1, min_guidance=1.0, max_guidance=1.0)
sweep = bucket_sweep(pipe, 128, 64, steps=1, seed=0, frames=14, min_guidance=1.0, max_guidance=1.0,
                     noise_aug=PROBE_AUG)
row = {"arm": a.name, "config": vars(a), **q, "bucket_sweep": sweep}
print(json.dumps(row))
Path(f"runs/{a.name}").mkdir(parents=True, exist_ok=True)
with open(f"runs/{a.name}/score.json", "w") as fh:
    json.dump(row, fh, indent=1)
