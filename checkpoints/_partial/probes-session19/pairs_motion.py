"""How far the stored teacher pairs move, by motion bucket (session 19 probe for issue 13).

    python checkpoints/_partial/probes-session19/pairs_motion.py 4     # first 4 shards (128 pairs)
"""

import sys

import numpy as np
import torch
from safetensors.torch import load_file

from explorer import metrics as M
from explorer.vae import load_vae

torch.set_num_threads(1)
vae = load_vae("checkpoints/_shared/vae").eval()
scale = vae.config.scaling_factor
buckets, teacher, real = [], [], []
for k in range(int(sys.argv[1])):
    shard = load_file(f"runs/teacher-pairs-128x64/shard_{k:05d}.safetensors")
    for i in range(shard["target"].shape[0]):
        videos = []
        for key in ("target", "latents"):
            with torch.no_grad():
                x = vae.decode(shard[key][i].float() / scale).sample.clamp(-1, 1)
            videos.append(((x + 1) / 2).permute(0, 2, 3, 1).numpy())
        buckets.append(float(shard["time_ids"][i][1]))
        teacher.append(M.global_motion(videos[0]))
        real.append(M.global_motion(videos[1]))
b, t, r = np.array(buckets), np.array(teacher), np.array(real)
print("n", len(b), "teacher spearman", M.spearman(b, t), "real spearman", M.spearman(b, r))
for lo, hi in ((0, 64), (64, 128), (128, 192), (192, 256)):
    m = (b >= lo) & (b < hi)
    if m.any():
        print(f"{lo}-{hi - 1} {int(m.sum())} teacher px/frame {t[m].mean():.2f} real {r[m].mean():.2f}")
