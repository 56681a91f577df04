"""Does the guidance ramp cause the flicker? Sample a finished stage (default: the 256x144 `svd` finetune) on the
four test photographs at several (min, max) guidance ramps and record frame-0 PSNR, consecutive PSNR (flicker),
frame-0 HF kept and the bucket sweep, exactly as the learning-curve rows measure them.

    python checkpoints/_partial/probes-session15/guidance.py /work/ck-new/svd 256x144 [threads] > guidance.jsonl
"""

import json
import sys

sys.path.insert(0, ".")  # run from the repository root
import torch

from explorer.evaluation import bucket_sweep
from explorer.pipeline import load_stage
from explorer.training.curves import PROBE_AUG, sample_quality

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
folder, size = sys.argv[1], tuple(int(v) for v in sys.argv[2].split("x"))
ramps = [(1.0, 3.0), (1.0, 2.0), (1.0, 5.0), (3.0, 3.0)]
pipe, _ = load_stage(folder)
for lo, hi in ramps:
    q = sample_quality(pipe.unet, pipe.vae, pipe.image_encoder, size, min_guidance=lo, max_guidance=hi)
    sweep = bucket_sweep(pipe, size[0], size[1], steps=50, seed=0, frames=14, min_guidance=lo, max_guidance=hi,
                         noise_aug=PROBE_AUG)
    print(json.dumps({"min_guidance": lo, "max_guidance": hi, **q, "bucket_sweep": sweep}), flush=True)
