"""Does a one-step student follow its teacher's motion on the same noise? (session 20 probe for issue 13)

For stored teacher pairs (training pairs: the student saw them), the student's clip from sigma_max * eps and the
teacher's stored clip are decoded and their per-patch shift fields compared: the cosine between the two fields
(1: same motion, 0: unrelated) and each clip's mean shift magnitude.

    python checkpoints/_partial/probes-session20/student_vs_teacher.py checkpoints/adversarial-1step 2
    python checkpoints/_partial/probes-session20/student_vs_teacher.py runs/adversarial-1step 2   # a run's EMA
    (args: stage folder or run folder, shards, [threads], [first shard])
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from explorer import edm
from explorer import metrics as M
from explorer.pipeline.folder import load_stage

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
source = Path(sys.argv[1])
if (source / "state" / "trainer.json").exists():  # a training run: its EMA on optimized-xattn's architecture
    pipe, _ = load_stage("checkpoints/optimized-xattn")
    pipe.unet.load_state_dict(load_file(str(source / "state" / "ema.safetensors")))
    print("step", json.loads((source / "state" / "trainer.json").read_text())["step"])
else:
    pipe, _ = load_stage(source)
unet, vae = pipe.unet.eval(), pipe.vae.eval()
scale = vae.config.scaling_factor
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rows = []
for k in range(first, first + int(sys.argv[2])):
    s = load_file(f"runs/teacher-pairs-128x64/shard_{k:05d}.safetensors")
    t = {key: v.float() for key, v in s.items()}
    with torch.no_grad():
        for i in range(0, t["eps"].shape[0], 8):
            sl = slice(i, i + 8)
            b = t["eps"][sl].shape[0]
            sig = torch.full((b,), edm.SIGMA_MAX)
            student = edm.denoise(unet, sig.view(b, 1, 1, 1, 1) * t["eps"][sl], sig, t["image_latents"][sl],
                                  t["image_embeds"][sl], t["time_ids"][sl])
            for j in range(b):
                clips = []
                for lat in (student[j], t["target"][sl][j]):
                    x = vae.decode(lat / scale, num_frames=lat.shape[0]).sample.clamp(-1, 1)
                    clips.append(((x + 1) / 2).permute(0, 2, 3, 1).numpy())
                ss, sv = M.frame_pair_shifts(clips[0])
                ts, tv = M.frame_pair_shifts(clips[1])
                v = sv & tv
                a, c = ss[v], ts[v]
                cos = float((a * c).sum() / (np.linalg.norm(a) * np.linalg.norm(c) + 1e-9))
                rows.append((float(t["time_ids"][sl][j][1]), cos, M.global_motion(clips[0]), M.global_motion(clips[1])))
r = np.array(rows)
print(sys.argv[1], "n", len(r))
print(f"cosine(student shifts, teacher shifts) mean {r[:, 1].mean():.3f} median {np.median(r[:, 1]):.3f}")
print(f"student motion {r[:, 2].mean():.2f} px/frame, teacher {r[:, 3].mean():.2f}; "
      f"spearman(bucket, student) {M.spearman(r[:, 0], r[:, 2]):.2f}, "
      f"(bucket, teacher) {M.spearman(r[:, 0], r[:, 3]):.2f}, "
      f"(teacher, student) {M.spearman(r[:, 3], r[:, 2]):.2f}")
