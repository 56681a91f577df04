"""Issue 13: how many sampler steps does the teacher (`lowres-ft`, 128x64, CFG ramp 1->3) need before its clips
stop improving? The distillation targets are the teacher's samples, so their quality caps the one-step stages.
Scored as the curve rows score a sample (4 test photographs; frame-0 PSNR, consecutive PSNR, HF kept) plus the
bucket sweep, and timed per clip.

    python checkpoints/_partial/probes-session16/teacher_steps.py checkpoints/lowres-ft 4,8,16,50 2
"""

import json
import sys
import time

sys.path.insert(0, ".")
import torch

from explorer.evaluation import bucket_sweep
from explorer.pipeline import load_stage
from explorer.training.curves import PROBE_AUG, sample_quality

stage, steps_list, threads = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
torch.set_num_threads(threads)
pipe, _ = load_stage(stage)
for steps in steps_list:
    t0 = time.time()
    q = sample_quality(pipe.unet, pipe.vae, pipe.image_encoder, (128, 64), steps=steps)
    per_clip = (time.time() - t0) / 4
    sweep = bucket_sweep(pipe, 128, 64, steps=steps, seed=0, frames=14, min_guidance=1.0, max_guidance=3.0,
                         noise_aug=PROBE_AUG)
    print(json.dumps({"steps": steps, "s_per_clip": round(per_clip, 2), "frame0": q["frame0_psnr"]["mean"],
                      "consecutive": q["consecutive_psnr"]["mean"], "hf_kept_f0": q["hf_kept_frame0"],
                      "ratio_255_20": sweep.get("ratio")}), flush=True)
