"""FVD-proxy: a small video network trained here, whose pooled features stand in for I3D's in a Fréchet distance.

Why a proxy: real FVD needs the Kinetics-trained I3D network, which cannot be downloaded on these machines (the
user may still pass it to ``scripts/evaluate.py --i3d``). A Fréchet distance is only as meaningful as the feature
space it is measured in, so the proxy network is trained on the project's own train/val clips (never a test
photograph) with tasks that force its features to see what an image-to-video model can get wrong:

* appearance: which *corruption* a clip carries -- clean, Gaussian noise, blur, blockiness, flicker -- at random
  severities, so blur and noise move features in proportion to their strength;
* motion: the camera-motion *kind* (static, pan, zoom, rotate, combo, objects) and the motion *magnitude* (the
  motion bucket, regressed), plus temporal corruptions (frames shuffled, frozen, or jittered), so motion that is
  missing, wrong or incoherent moves the features too.

The network is (2+1)D: per-frame 3x3 convolutions (fast 2-D convolutions on the CPU) followed by temporal
convolutions over 3 frames, BatchNorm; input 14 frames of 128x64 in [-1, 1]; every block's output is averaged
over space and time and the concatenation is projected to 128-d features (the penultimate layer: the task heads
are linear on top of it). Weights ship in
``checkpoints/fvd_proxy/`` as safetensors + config.json. Scores from this network are called **FVD-proxy**
everywhere: they are not FVD and are not comparable with published FVD numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.metrics import frechet_distance_features, to_unit_tensor

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "checkpoints" / "fvd_proxy"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "mobilevd-explorer/fvd-proxy/1"

KINDS: tuple[str, ...] = ("static", "pan", "zoom", "rotate", "combo", "objects")
CORRUPTIONS: tuple[str, ...] = ("clean", "noise", "blur", "shuffle", "freeze", "flicker", "blocky", "jitter")
# Corruptions after which the clip's recorded motion kind / bucket no longer describe it (motion loss masked).
MOTION_BREAKING: frozenset[str] = frozenset({"shuffle", "freeze", "jitter"})


@dataclass
class ProxyConfig:
    """Architecture of the proxy network (stored as config.json next to the weights)."""

    width: int = 128  # input frame size (pixels); clips are resized to cover it and centre-cropped
    height: int = 64
    frames: int = 14
    channels: tuple[int, ...] = (16, 32, 64, 128)
    temporal_strides: tuple[int, ...] = (1, 1, 2, 2)
    feature_dim: int = 128
    num_kinds: int = len(KINDS)
    num_corruptions: int = len(CORRUPTIONS)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["temporal_strides"] = list(self.temporal_strides)
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyConfig:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in known}
        for k in ("channels", "temporal_strides"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        return cls(**kw)


class _Block(nn.Module):
    """Spatial 3x3 (stride 2) per frame, then a temporal 3-tap convolution, each with BatchNorm + SiLU.

    BatchNorm, not GroupNorm: a per-clip normalisation divides out exactly the energy that noise, blur and
    blockiness change (a first attempt with GroupNorm could not tell them from clean clips); BatchNorm's running
    statistics keep a clip's feature independent of the batch it is scored in.
    """

    def __init__(self, cin: int, cout: int, t_stride: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm3d(cout)
        self.temporal = nn.Conv2d(cout, cout, (3, 1), stride=(t_stride, 1), padding=(1, 0), bias=False)
        self.norm2 = nn.BatchNorm3d(cout)
        self.t_stride = t_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        b, c, t, h, w = x.shape
        y = self.spatial(x.transpose(1, 2).reshape(b * t, c, h, w))
        _, c2, h2, w2 = y.shape
        y = F.silu(self.norm1(y.reshape(b, t, c2, h2, w2).transpose(1, 2)))  # (B, C2, T, H2, W2)
        z = self.temporal(y.reshape(b, c2, t, h2 * w2))
        z = F.silu(self.norm2(z.reshape(b, c2, -1, h2, w2)))
        if self.t_stride == 1:
            z = z + y  # residual where the temporal length is unchanged
        return z


class ProxyNet(nn.Module):
    """The FVD-proxy network: (B, 3, T, H, W) in [-1, 1] -> pooled features + task heads.

    Every block's output is averaged over time and space; the concatenation (fine detail from the early blocks,
    content and motion from the late ones) is projected to ``feature_dim`` -- the penultimate layer, on which the
    linear task heads sit and on which the Fréchet distance is computed.
    """

    def __init__(self, config: ProxyConfig | None = None) -> None:
        super().__init__()
        self.config = config or ProxyConfig()
        cfg = self.config
        chans = (3, *cfg.channels)
        self.blocks = nn.ModuleList(
            _Block(chans[i], chans[i + 1], cfg.temporal_strides[i]) for i in range(len(cfg.channels))
        )
        d = cfg.feature_dim
        self.embed = nn.Linear(sum(cfg.channels), d)
        self.kind_head = nn.Linear(d, cfg.num_kinds)
        self.bucket_head = nn.Linear(d, 1)
        self.corruption_head = nn.Linear(d, cfg.num_corruptions)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, feature_dim): what the Fréchet distance is computed on."""
        pooled = []
        for block in self.blocks:
            x = block(x)
            pooled.append(x.mean(dim=(2, 3, 4)))
        return F.silu(self.embed(torch.cat(pooled, dim=1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {
            "features": f,
            "kind": self.kind_head(f),
            "bucket": self.bucket_head(f).squeeze(-1),
            "corruption": self.corruption_head(f),
        }


# ------------------------------------------------------------------------------------------------------------
# Input preparation


def resize_cover(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(N, F, 3, H, W) scaled (antialiased) to cover width x height keeping the aspect, then centre-cropped."""
    n, f, c, h, w = frames.shape
    if (w, h) == (width, height):
        return frames
    scale = max(width / w, height / h)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(frames.reshape(n * f, c, h, w), size=(nh, nw), mode="bilinear", antialias=True,
                      align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top : top + height, left : left + width]
    return x.reshape(n, f, c, height, width)


def fit_frames(frames: torch.Tensor, num: int) -> torch.Tensor:
    """Resample the time axis to ``num`` frames (nearest index), so clips of other lengths can be scored."""
    f = frames.shape[1]
    if f == num:
        return frames
    idx = torch.linspace(0, f - 1, num).round().long()
    return frames[:, idx]


def prepare(videos: Any, config: ProxyConfig) -> torch.Tensor:
    """Any supported videos -> the network's input (N, 3, T, H, W) in [-1, 1]."""
    x = to_unit_tensor(videos)
    x = fit_frames(resize_cover(x, config.width, config.height), config.frames)
    return x.clamp(-1.0, 1.0).permute(0, 2, 1, 3, 4).contiguous()


# ------------------------------------------------------------------------------------------------------------
# Corruptions (training targets and sanity checks)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (F, 3, H, W) frames (reflect padding)."""
    k = _gaussian_kernel(sigma)
    r = (k.numel() - 1) // 2
    f, c, h, w = frames.shape
    x = frames.reshape(f * c, 1, h, w)
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(f, c, h, w)


def _shift(frames: torch.Tensor, dx: np.ndarray, dy: np.ndarray) -> torch.Tensor:
    """Translate each frame by (dx, dy) pixels (bilinear, border padding)."""
    f, c, h, w = frames.shape
    theta = torch.zeros(f, 2, 3)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = torch.as_tensor(-2.0 * dx / w, dtype=torch.float32)
    theta[:, 1, 2] = torch.as_tensor(-2.0 * dy / h, dtype=torch.float32)
    grid = F.affine_grid(theta, (f, c, h, w), align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def corrupt(frames: torch.Tensor, kind: str, rng: np.random.Generator, severity: float | None = None) -> torch.Tensor:
    """Apply corruption ``kind`` to one clip (F, 3, H, W) in [-1, 1]; ``severity`` in [0, 1] (random if None).

    The severities span mild to strong so that the features order clips by how damaged they are, not only by
    whether they are damaged.
    """
    s = float(rng.uniform(0.0, 1.0)) if severity is None else float(severity)
    f, c, h, w = frames.shape
    x = frames
    if kind == "clean":
        pass
    elif kind == "noise":
        sigma = 0.02 * (0.4 / 0.02) ** s  # 0.02 .. 0.4 in [-1, 1] units
        noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
        x = x + sigma * noise
    elif kind == "blur":
        x = gaussian_blur(x, 0.6 + 2.4 * s)
    elif kind == "shuffle":
        perm = rng.permutation(f)
        while f > 1 and (perm == np.arange(f)).all():
            perm = rng.permutation(f)
        if s < 0.5 and f > 3:  # mild: only a few swapped pairs
            perm = np.arange(f)
            for _ in range(1 + int(s * 6)):
                i = int(rng.integers(0, f - 1))
                perm[[i, i + 1]] = perm[[i + 1, i]]
        x = x[torch.from_numpy(perm)]
    elif kind == "freeze":
        k = 1 if s > 0.5 else int(rng.integers(1, max(2, f // 2)))  # frames >= k repeat frame k-1
        x = torch.cat([x[:k], x[k - 1 : k].expand(f - k, c, h, w)], dim=0)
    elif kind == "flicker":
        amp = 0.03 + 0.25 * s
        gain = 1.0 + amp * torch.from_numpy(rng.standard_normal(f).astype(np.float32))
        bias = amp * torch.from_numpy(rng.standard_normal(f).astype(np.float32))
        x = (x + 1.0) * gain.view(f, 1, 1, 1) - 1.0 + bias.view(f, 1, 1, 1)
    elif kind == "blocky":
        block = int(2 ** (1 + round(2 * s)))  # 2, 4 or 8 px blocks
        small = F.avg_pool2d(x, block, ceil_mode=True)
        x = F.interpolate(small, scale_factor=block, mode="nearest")[:, :, :h, :w]
    elif kind == "jitter":
        amp = 0.5 + 2.5 * s  # pixels
        dx, dy = amp * rng.standard_normal(f), amp * rng.standard_normal(f)
        x = _shift(x, dx, dy)
    else:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    return x.clamp(-1.0, 1.0)


# ------------------------------------------------------------------------------------------------------------
# Loading, saving, scoring


class FVDProxy:
    """The trained proxy network with its config; ``features(videos)`` gives (N, D) numpy features."""

    def __init__(self, net: ProxyNet, info: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.config = net.config
        self.info = info or {}

    @torch.no_grad()
    def features(self, videos: Any, batch_size: int = 16) -> np.ndarray:
        """Pooled features of ``videos`` (see :func:`to_unit_tensor` for the accepted forms)."""
        x = to_unit_tensor(videos)
        out = []
        for i in range(0, x.shape[0], batch_size):
            out.append(self.net.features(prepare(x[i : i + batch_size], self.config)).double().numpy())
        if not out:
            return np.zeros((0, self.config.feature_dim))
        return np.concatenate(out, axis=0)


def save_proxy(net: ProxyNet, directory: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (config plus training record ``info``); no pickles."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    cfg = net.config.to_dict()
    cfg["training"] = info or {}
    (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return directory


def load_proxy(directory: str | Path = DEFAULT_DIR) -> FVDProxy:
    """Load the shipped (or another) proxy network strictly from safetensors."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"FVD-proxy weights not found in {directory} (need {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "train them with scripts/train_fvd_proxy.py"
        )
    data = json.loads(cfg_path.read_text(encoding="utf-8"))
    net = ProxyNet(ProxyConfig.from_dict(data))
    net.load_state_dict(load_file(str(w_path), device="cpu"), strict=True)
    return FVDProxy(net, data.get("training", {}))


def fvd_proxy(real: Any, generated: Any, proxy: FVDProxy | None = None, eps: float = 1e-6) -> float:
    """FVD-proxy between two sets of videos: Fréchet distance of Gaussians fit to their proxy features."""
    proxy = proxy or load_proxy()
    return frechet_distance_features(proxy.features(real), proxy.features(generated), eps=eps)


def apply_all(clips: Sequence[torch.Tensor], kind: str, seed: int = 0, severity: float | None = None) -> torch.Tensor:
    """``corrupt`` every clip (F, 3, H, W) of a list with one seeded generator; returns (N, F, 3, H, W)."""
    rng = np.random.default_rng(seed)
    return torch.stack([corrupt(c, kind, rng, severity) for c in clips])
