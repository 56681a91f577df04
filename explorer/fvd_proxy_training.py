"""Training the FVD-proxy feature network (``explorer.fvd_proxy``) and measuring its sanity numbers.

The library behind ``scripts/train_fvd_proxy.py``. Why multi-task: a Fréchet distance is only meaningful if the
features move when quality drops. The network learns (1) the camera-motion kind, (2) the motion bucket
(regression), (3) which corruption a clip carries (clean, noise, blur, shuffled / frozen / jittered frames, flicker,
blockiness) at random severities. Training clips come only from the train split (validation: the val split); test
photographs are used only for the sanity numbers afterwards. A pool of clips is rendered once into memory (uint8)
and corrupted / flipped / time-reversed on the fly. Kept apart from ``explorer.fvd_proxy`` so that scoring needs
none of the training code.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from explorer import data
from explorer.fvd_proxy import (
    CONFIG_FILE,
    CORRUPTIONS,
    KINDS,
    MOTION_BREAKING,
    ProxyConfig,
    ProxyNet,
    apply_all,
    corrupt,
    load_proxy,
    resize_cover,
    save_proxy,
)
from explorer.metrics import frechet_distance_features

CLEAN_PROB = 0.3  # the rest is spread evenly over the corruptions



def render_pool(split: str, n: int, size: tuple[int, int], cfg: ProxyConfig, seed: int, offset: int = 0
                ) -> dict[str, torch.Tensor]:
    """Render n clips of a split at ``size`` and store them at the network's input size as uint8."""
    frames, kinds, buckets = [], [], []
    for i in tqdm(range(n), desc=f"render {split} {size[0]}x{size[1]}", leave=False):
        clip = data.make_clip(split, offset + i, size, seed)
        x = resize_cover(clip.frames[None], cfg.width, cfg.height)[0]
        frames.append(x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8))
        kinds.append(KINDS.index(clip.params["type"]))
        buckets.append(clip.motion_bucket_id)
    return {"frames": torch.stack(frames), "kind": torch.tensor(kinds), "bucket": torch.tensor(buckets).float()}


def make_batch(pool: dict[str, torch.Tensor], idx: np.ndarray, rng: np.random.Generator, train: bool
               ) -> dict[str, torch.Tensor]:
    """Corrupt (and for training flip / time-reverse) the clips ``idx`` of a pool; labels per clip."""
    xs, corr = [], []
    probs = np.full(len(CORRUPTIONS), (1 - CLEAN_PROB) / (len(CORRUPTIONS) - 1))
    probs[0] = CLEAN_PROB
    for i in idx:
        x = pool["frames"][i].float().div(127.5).sub(1.0)  # (F, 3, H, W)
        if train and rng.random() < 0.5:
            x = x.flip(0)
        if train and rng.random() < 0.5:
            x = x.flip(-1)
        c = int(rng.choice(len(CORRUPTIONS), p=probs))
        xs.append(corrupt(x, CORRUPTIONS[c], rng))
        corr.append(c)
    corr_t = torch.tensor(corr)
    motion_ok = torch.tensor([CORRUPTIONS[c] not in MOTION_BREAKING for c in corr])
    return {
        "x": torch.stack(xs).permute(0, 2, 1, 3, 4).contiguous(),
        "kind": pool["kind"][idx],
        "bucket": pool["bucket"][idx] / 127.5 - 1.0,
        "corruption": corr_t,
        "motion_ok": motion_ok,
    }


def losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    m = batch["motion_ok"]
    l_corr = F.cross_entropy(out["corruption"], batch["corruption"])
    if m.any():
        l_kind = F.cross_entropy(out["kind"][m], batch["kind"][m])
        l_bucket = F.mse_loss(out["bucket"][m], batch["bucket"][m])
    else:
        l_kind = l_bucket = out["bucket"].sum() * 0
    return {"corruption": l_corr, "kind": l_kind, "bucket": l_bucket, "total": l_corr + l_kind + 2.0 * l_bucket}


@torch.no_grad()
def evaluate(net: ProxyNet, pool: dict[str, torch.Tensor], seed: int = 123, batch_size: int = 32) -> dict[str, Any]:
    """Accuracy of each head on a (val) pool with seeded corruptions."""
    net.eval()
    rng = np.random.default_rng(seed)
    n = pool["frames"].shape[0]
    kc = kn = cc = 0
    err = []
    per = np.zeros((len(CORRUPTIONS), 2))
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(n, s + batch_size))
        b = make_batch(pool, idx, rng, train=False)
        out = net(b["x"])
        pred_c = out["corruption"].argmax(1)
        cc += int((pred_c == b["corruption"]).sum())
        for c, p in zip(b["corruption"].tolist(), pred_c.tolist(), strict=True):
            per[c] += (int(c == p), 1)
        m = b["motion_ok"]
        kc += int((out["kind"].argmax(1)[m] == b["kind"][m]).sum())
        kn += int(m.sum())
        err += ((out["bucket"][m] - b["bucket"][m]).abs() * 127.5).tolist()
    net.train()
    return {
        "corruption_acc": cc / n,
        "kind_acc": kc / max(kn, 1),
        "bucket_mae": float(np.mean(err)) if err else float("nan"),
        "corruption_acc_by_kind": {CORRUPTIONS[i]: round(per[i, 0] / max(per[i, 1], 1), 3) for i in range(len(per))},
    }


def train(out: str | Path, *, steps: int = 1500, batch: int = 16, lr: float = 2e-3, n_pool: int = 4000,
          val: int = 320, channels: tuple[int, ...] = ProxyConfig().channels, eval_every: int = 250,
          seed: int = 0) -> dict[str, Any]:
    """Render the train / val pools, train the multi-task network, save it (safetensors + config.json) to ``out``;
    returns the training info written into config.json."""
    torch.manual_seed(seed)
    cfg = ProxyConfig(channels=tuple(channels))
    net = ProxyNet(cfg)
    n_params = sum(p.numel() for p in net.parameters())
    t0 = time.time()
    n_low = int(n_pool * 0.8)
    parts = [render_pool("train", n_low, data.LOWRES, cfg, seed),
             render_pool("train", n_pool - n_low, data.BASE, cfg, seed, offset=500_000)]
    pool = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    vparts = [render_pool("val", val // 2, data.LOWRES, cfg, seed),
              render_pool("val", val - val // 2, data.BASE, cfg, seed, offset=500_000)]
    vpool = {k: torch.cat([p[k] for p in vparts]) for k in vparts[0]}
    render_s = time.time() - t0
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    n = pool["frames"].shape[0]
    history = []
    t1 = time.time()
    bar = tqdm(range(steps), desc="train fvd-proxy")
    ema: dict[str, float] = {}
    for step in bar:
        step_lr = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = step_lr
        clips = make_batch(pool, rng.choice(n, batch, replace=False), rng, train=True)
        ls = losses(net(clips["x"]), clips)
        opt.zero_grad(set_to_none=True)
        ls["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        for k, v in ls.items():
            ema[k] = 0.98 * ema.get(k, float(v)) + 0.02 * float(v)
        bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()})
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ev = evaluate(net, vpool)
            ev.update(step=step + 1, seconds=round(time.time() - t1, 1), train_loss={k: round(v, 4)
                                                                                      for k, v in ema.items()})
            history.append(ev)
            tqdm.write(json.dumps(ev))
    train_s = time.time() - t1
    info = {
        "what": "FVD-proxy feature network (not I3D; scores are not comparable with published FVD)",
        "params": n_params,
        "train_split": "train", "val_split": "val",
        "pool": {"train_clips": n, "val_clips": int(vpool["frames"].shape[0]),
                 "sizes": "80% rendered at 128x64, 20% at 256x144 then resized to cover 128x64 and centre-cropped"},
        "steps": steps, "batch": batch, "lr": lr, "seed": seed,
        "clip_presentations": steps * batch,
        "render_seconds": round(render_s, 1), "train_seconds": round(train_s, 1), "threads": torch.get_num_threads(),
        "tasks": {"kinds": list(KINDS), "corruptions": list(CORRUPTIONS), "clean_prob": CLEAN_PROB,
                  "bucket": "regression of motion_bucket_id / 127.5 - 1 (masked for shuffle/freeze/jitter)"},
        "final_val": history[-1] if history else {},
        "history": history,
    }
    save_proxy(net.eval(), out, info)
    return info


def sanity(directory: Path, n: int = 64) -> dict[str, Any]:
    """FVD-proxy between the test eval set and reference sets whose distance is known to be small or large."""
    proxy = load_proxy(directory)
    results: dict[str, Any] = {"clips": n, "real": "eval_clips('test', n, size, seed=0)"}
    for size in (data.LOWRES, data.BASE):
        real = torch.stack([c.frames for c in data.eval_clips("test", n, size, seed=0)])
        other = torch.stack([c.frames for c in data.eval_clips("test", n, size, seed=1)])
        val = torch.stack([c.frames for c in data.eval_clips("val", n, size, seed=0)])
        fr = proxy.features(real)
        g = torch.Generator().manual_seed(0)
        sets: dict[str, torch.Tensor] = {
            "real, other seed (eval_clips seed=1)": other,
            "real, first 32 vs last 32 clips": real[n // 2 :],
            "val photographs (other content)": val,
            "static: first frame repeated": real[:, :1].expand_as(real),
            "frames shuffled": apply_all(list(real), "shuffle", seed=1, severity=1.0),
            "frozen after frame 4 (severity 0.4)": apply_all(list(real), "freeze", seed=1, severity=0.4),
            "blur sigma 1.2 px (severity 0.25)": apply_all(list(real), "blur", seed=1, severity=0.25),
            "blur sigma 2.4 px (severity 0.75)": apply_all(list(real), "blur", seed=1, severity=0.75),
            "noise sigma 0.045 (severity 0.25)": apply_all(list(real), "noise", seed=1, severity=0.25),
            "noise sigma 0.19 (severity 0.75)": apply_all(list(real), "noise", seed=1, severity=0.75),
            "flicker (severity 0.5)": apply_all(list(real), "flicker", seed=1, severity=0.5),
            "blocky 4 px": apply_all(list(real), "blocky", seed=1, severity=0.5),
            "jitter (severity 0.5)": apply_all(list(real), "jitter", seed=1, severity=0.5),
            "pure Gaussian noise N(0, 0.5)": (torch.randn(real.shape, generator=g) * 0.5).clamp(-1, 1),
        }
        row = {}
        for name, videos in sets.items():
            fa = fr[: n // 2] if name.startswith("real, first 32") else fr
            row[name] = round(frechet_distance_features(fa, proxy.features(videos)), 3)
        results[f"{size[0]}x{size[1]}"] = row
    return results


def record_sanity(directory: str | Path, sanity_numbers: dict[str, Any]) -> None:
    """Store the sanity numbers in the proxy's config.json (under ``training.sanity``), next to its weights."""
    path = Path(directory) / CONFIG_FILE
    cfg = json.loads(path.read_text())
    cfg.setdefault("training", {})["sanity"] = sanity_numbers
    path.write_text(json.dumps(cfg, indent=2) + "\n")
