"""Can the discriminator tell real clips from one-step clips at all? (session 20 probe for issue 13)

The generator is frozen (a shipped one-step stage); only discriminator heads train (hinge, SF-V's noise levels),
on real clips vs the stage's one-step clips from the stored pairs' conditioning and noise. Accuracy is measured on
held-out pairs (the last shards) with fixed noise. One arm per head layout, same data and draws.

    python checkpoints/_partial/probes-session20/d_probe.py checkpoints/adversarial-1step 150 pooled,local 8
    (arms: head[:lr[:ln sigma mean]], heads "pooled" / "local" temporal only or "spatial"; last: training shards)
"""

import sys
import time

import torch
from safetensors.torch import load_file

from explorer import edm
from explorer.pipeline.folder import load_stage
from explorer.training.adversarial import Discriminator, discriminator_sigmas, hinge_d
from explorer.training.adversarial import _twice as twice
from explorer.training.denoise import Conditioning
from explorer.training.distill import discriminator_accuracy

torch.set_num_threads(2)
student = load_stage(sys.argv[1]).pipe.unet.eval()
trunk_pipe = load_stage("checkpoints/optimized-xattn").pipe
steps, arms = int(sys.argv[2]), sys.argv[3].split(",")


def load(shards):
    cache = f"/tmp/d_probe_{sys.argv[1].replace('/', '_')}_{shards[0]}_{len(shards)}.pt"
    try:
        return torch.load(cache)
    except FileNotFoundError:
        pass
    parts = [load_file(f"runs/teacher-pairs-128x64/shard_{k:05d}.safetensors") for k in shards]
    t = {key: torch.cat([p[key] for p in parts]).float() for key in parts[0]}
    fakes = []
    with torch.no_grad():
        for i in range(0, t["eps"].shape[0], 8):
            sl = slice(i, i + 8)
            b = t["eps"][sl].shape[0]
            sig = torch.full((b,), edm.SIGMA_MAX)
            fakes.append(edm.denoise(student, sig.view(b, 1, 1, 1, 1) * t["eps"][sl], sig, t["image_latents"][sl],
                                     t["image_embeds"][sl], t["time_ids"][sl]))
    t["fake"] = torch.cat(fakes)
    torch.save(t, cache)
    return t


t0 = time.time()
train, held = load(range(0, int(sys.argv[4]) if len(sys.argv) > 4 else 8)), load(range(28, 32))
print(f"fakes computed in {time.time() - t0:.0f} s", flush=True)


def cond(t, idx):
    return Conditioning(t["latents"][idx], t["image_latents"][idx], t["image_embeds"][idx], t["time_ids"][idx])


def accuracy(disc, gen, p_mean):
    accs = []
    with torch.no_grad():
        for i in range(0, 64, 8):
            idx = torch.arange(i, i + 8)
            c = cond(held, idx)
            s = discriminator_sigmas(8, gen, p_mean)
            n1, n2 = torch.randn(c.latents.shape, generator=gen), torch.randn(c.latents.shape, generator=gen)
            x = torch.cat([c.latents + s.view(-1, 1, 1, 1, 1) * n1, held["fake"][idx] + s.view(-1, 1, 1, 1, 1) * n2])
            c2 = twice(c)
            logits = disc(x, torch.cat([s, s]), c2)
            a = discriminator_accuracy(logits)
            # ranking: how often a real clip's logit beats the generated clip's at the same noise level and
            # conditioning, per head (threshold-free; the 0-threshold accuracy also measures calibration)
            a["rank"] = float(torch.stack([(o[:o.shape[0] // 2] > o[o.shape[0] // 2:]).float().mean()
                                           for o in logits]).mean())
            accs.append(a)
    return {k: round(sum(a[k] for a in accs) / len(accs), 3) for k in ("heldout_acc", "rank")}


image_dim = trunk_pipe.image_encoder.config.projection_dim
for spec in arms:
    arm, lr, p_mean = (spec.split(":") + ["2e-4", "-1"])[:3] if ":" in spec else (spec, "2e-4", "-1")
    lr, p_mean = float(lr), float(p_mean)
    torch.manual_seed(0)
    spatial = arm == "spatial"
    disc = Discriminator(trunk_pipe.unet, image_dim, spatial=spatial, temporal=not spatial,
                         temporal_head="pooled" if spatial else arm)
    opt = torch.optim.AdamW(disc.head_parameters(), lr=lr, betas=(0.0, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, train["eps"].shape[0], (4,), generator=gen)
        c = cond(train, idx)
        s_r, s_f = discriminator_sigmas(4, gen, p_mean), discriminator_sigmas(4, gen, p_mean)
        x = torch.cat([c.latents + s_r.view(-1, 1, 1, 1, 1) * torch.randn(c.latents.shape, generator=gen),
                       train["fake"][idx] + s_f.view(-1, 1, 1, 1, 1) * torch.randn(c.latents.shape, generator=gen)])
        logits = disc(x, torch.cat([s_r, s_f]), twice(c))
        loss = hinge_d([o[:4] for o in logits], [o[4:] for o in logits])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(spec, step, f"hinge {loss.item():.3f}", accuracy(disc, torch.Generator().manual_seed(5), p_mean),
                  f"{(time.time() - t0) / step:.2f} s/step", flush=True)
