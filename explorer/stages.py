"""The MobileVD compression path as data: the single place that knows the stages.

Every stage records its parent, the architecture transforms it adds (name + parameters), its resolution,
frame count, sampling defaults and the paper's reference numbers (arXiv 2412.07583, Table 2). The UI, the
scripts and the FLOPs tool read this module; nothing else hard-codes the path.

Accounting of every FLOPs / latency number here: ONE UNet evaluation (NFE), batch 1, 14 frames, UNet only,
FLOPs = 2 x multiply-accumulates. FVD is on UCF-101, two columns (25 fps / 7 fps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ACCOUNTING = "per UNet evaluation (NFE), batch 1, UNet only; FLOPs = 2 x MAC"
PAPER = "MobileVD paper (arXiv 2412.07583)"
OOM = "OOM"  # the phone ran out of memory: a value, not a blank

PhoneMs = float | Literal["OOM"] | None


@dataclass(frozen=True)
class Transform:
    """One architecture transform: a module in ``explorer.transforms`` and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        return cls(name=str(data["name"]), params=dict(data.get("params", {})))


@dataclass(frozen=True)
class PaperNumbers:
    """Reference numbers as printed in the paper (None where the paper gives none)."""

    fvd_25fps: float | None
    fvd_7fps: float | None
    tflops: float | None
    gpu_ms: float | None
    phone_ms: PhoneMs
    source: str = PAPER + ", Table 2"


@dataclass(frozen=True)
class Stage:
    """One model on the compression path."""

    slug: str
    title: str
    parent: str | None
    transforms: tuple[Transform, ...]  # added at this stage, applied on top of the parent's
    width: int  # full-scale pixels
    height: int
    frames: int
    steps: int  # default denoising steps (= NFE without CFG)
    min_guidance: float
    max_guidance: float
    training: str  # how the stage's weights are obtained
    paper: PaperNumbers
    aliases: tuple[str, ...] = ()

    def size(self, scale: str = "full") -> tuple[int, int]:
        """(width, height) in pixels at ``scale``: the tiny family divides the paper's sizes by 4."""
        if scale == "full":
            return self.width, self.height
        return self.width // 4, self.height // 4

    @property
    def one_step(self) -> bool:
        return self.steps == 1


def _paper(fvd25: float, fvd7: float, tflops: float, gpu: float, phone: PhoneMs) -> PaperNumbers:
    return PaperNumbers(fvd25, fvd7, tflops, gpu, phone)


STAGES: tuple[Stage, ...] = (
    Stage(
        "svd", "SVD (1024x576)", None, (), 1024, 576, 14, 50, 1.0, 3.0,
        "base model (pretrained SVD, or the project's tiny base trained from scratch)",
        _paper(140, 149, 45.43, 376, OOM),
    ),
    Stage(
        "svd-512", "SVD at 512x256, no finetuning", "svd", (), 512, 256, 14, 50, 1.0, 3.0,
        "none: the svd weights sampled at low resolution",
        _paper(366, 476, 8.60, 82, OOM),
    ),
    Stage(
        "lowres-ft", "+ low-resolution finetuning", "svd", (), 512, 256, 14, 50, 1.0, 3.0,
        "denoising finetune of svd at 512x256",
        _paper(194, 196, 8.60, 82, OOM),
    ),
    Stage(
        "optimized-xattn", "+ optimized cross-attention", "lowres-ft",
        (Transform("optimized_cross_attention"),), 512, 256, 14, 50, 1.0, 3.0,
        "none: exact rewrite of lowres-ft",
        _paper(194, 196, 8.24, 76, 3630),
    ),
    Stage(
        "adversarial-1step", "+ adversarial finetuning (1 step)", "optimized-xattn", (), 512, 256, 14, 1, 1.0, 1.0,
        "SF-V-style adversarial finetune to one step",
        _paper(133, 168, 8.24, 76, 3630),
    ),
    Stage(
        "temporal-multiscale", "+ temporal multiscaling", "adversarial-1step",
        (Transform("temporal_multiscale", {"temporal_factor": 2, "spatial_factor": 1}),),
        512, 256, 14, 1, 1.0, 1.0,
        "one-step adversarial finetune after the transform",
        _paper(139, 156, 5.42, 59, 2590),
    ),
    Stage(
        "temporal-pruning", "+ temporal block pruning", "temporal-multiscale",
        (Transform("temporal_pruning", {"pruned_fraction": 0.7}),), 512, 256, 14, 1, 1.0, 1.0,
        "learn gate importances with 70% of the temporal blocks pruned (11 of 38 in SVD), prune, finetune",
        _paper(127, 150, 4.64, 47, 2100),
    ),
    Stage(
        "channel-funnels", "+ channel funnels (MobileVD)", "temporal-pruning",
        (Transform("channel_funnels", {"fun_factor": 0.5, "init": "csi", "merged": True}),),
        512, 256, 14, 1, 1.0, 1.0,
        "funnels with CSI at r=0.5, finetuned separately, then merged",
        _paper(149, 171, 4.34, 45, 1780), aliases=("mobilevd",),
    ),
    Stage(
        "mobilevd-hd", "MobileVD-HD (1024x576)", "channel-funnels", (), 1024, 576, 14, 1, 1.0, 1.0,
        "the MobileVD recipe finetuned at high resolution",
        _paper(126, 184, 23.63, 227, OOM),
    ),
)

_BY_SLUG: dict[str, Stage] = {s.slug: s for s in STAGES}
ALIASES: dict[str, str] = {a: s.slug for s in STAGES for a in s.aliases}
SLUGS: tuple[str, ...] = tuple(s.slug for s in STAGES)


def resolve(slug: str) -> str:
    """Canonical slug for ``slug`` or an alias; a clear error listing the valid names otherwise."""
    if not isinstance(slug, str):
        raise ValueError(f"stage slug must be a string, got {type(slug).__name__}")
    key = slug.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _BY_SLUG:
        valid = ", ".join(list(SLUGS) + sorted(ALIASES))
        raise ValueError(f"unknown stage {slug!r}; valid stages: {valid}")
    return key


def get_stage(slug: str) -> Stage:
    return _BY_SLUG[resolve(slug)]


def lineage(slug: str) -> list[Stage]:
    """Stages from the root to ``slug`` inclusive."""
    chain: list[Stage] = []
    stage: Stage | None = get_stage(slug)
    while stage is not None:
        chain.append(stage)
        stage = get_stage(stage.parent) if stage.parent else None
    return chain[::-1]


def architecture_transforms(slug: str) -> list[Transform]:
    """All transforms that build ``slug``'s architecture from the base UNet, in application order."""
    return [t for stage in lineage(slug) for t in stage.transforms]


# ----------------------------------------------------------------------------------------------------------
# Reference data beyond the path (paper tables).


@dataclass(frozen=True)
class ReferenceRow:
    """One row of a paper table. ``None`` = not given by the paper."""

    table: str
    label: str
    fvd_7fps: float | None = None
    fvd_25fps: float | None = None
    tflops: float | None = None
    gpu_ms: float | None = None
    phone_ms: PhoneMs = None
    nfe: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    source: str = PAPER


def _row(table: str, label: str, **kw: Any) -> ReferenceRow:
    return ReferenceRow(table=table, label=label, source=f"{PAPER}, {table}", **kw)


# Table 1: peers at 1024x576; they share SVD's UNet, so 45.43 TFLOPs and 376 ms per NFE.
PEERS: tuple[ReferenceRow, ...] = (
    _row("Table 1", "SVD", fvd_7fps=149, nfe=50, tflops=45.43, gpu_ms=376),
    _row("Table 1", "AnimateLCM", fvd_7fps=281, nfe=8, tflops=45.43, gpu_ms=376),
    _row("Table 1", "UFOGen", fvd_7fps=1917, nfe=1, tflops=45.43, gpu_ms=376),
    _row("Table 1", "LADD", fvd_7fps=1894, nfe=1, tflops=45.43, gpu_ms=376),
    _row("Table 1", "SF-V", fvd_7fps=181, nfe=1, tflops=45.43, gpu_ms=376),
    _row("Table 1", "MobileVD-HD", fvd_7fps=184, nfe=1, tflops=23.63, gpu_ms=227),
    _row("Table 1", "MobileVD", fvd_7fps=171, nfe=1, tflops=4.34, gpu_ms=45),
)

# Tables 3-6: ablations on the one-step 512x256 model. FVD column as printed (25 fps).
ABLATIONS: tuple[ReferenceRow, ...] = (
    _row("Table 3", "no multiscaling", fvd_25fps=133, tflops=8.24, gpu_ms=76, phone_ms=3630,
         config={"temporal_factor": 1, "spatial_factor": 1}),
    _row("Table 3", "temporal only", fvd_25fps=138, tflops=5.42, gpu_ms=59, phone_ms=2590,
         config={"temporal_factor": 2, "spatial_factor": 1}),
    _row("Table 3", "spatial only", fvd_25fps=145, tflops=4.35, gpu_ms=51, phone_ms=2280,
         config={"temporal_factor": 1, "spatial_factor": 2}),
    _row("Table 3", "temporal + spatial", fvd_25fps=163, tflops=3.39, gpu_ms=48, phone_ms=None,
         config={"temporal_factor": 2, "spatial_factor": 2}),
    _row("Table 4", "CSI r=0.25", fvd_25fps=155, config={"init": "csi", "fun_factor": 0.25}),
    _row("Table 4", "CSI r=0.5", fvd_25fps=132, config={"init": "csi", "fun_factor": 0.5}),
    _row("Table 4", "CSI r=0.75", fvd_25fps=145, config={"init": "csi", "fun_factor": 0.75}),
    _row("Table 4", "CSI r=1.0", fvd_25fps=133, config={"init": "csi", "fun_factor": 1.0}),
    _row("Table 4", "He init r=0.5", fvd_25fps=332, config={"init": "he", "fun_factor": 0.5}),
    _row("Table 5", "baseline", fvd_25fps=133, tflops=8.6, phone_ms=3630, config={"method": "none"}),
    _row("Table 5", "funnels", fvd_25fps=132, tflops=8.0, phone_ms=2870,
         config={"method": "funnels", "fun_factor": 0.5}),
    _row("Table 5", "funnels merged before finetuning", fvd_25fps=138, tflops=8.0, phone_ms=2870,
         config={"method": "funnels_merged_early", "fun_factor": 0.5}),
    _row("Table 5", "funnels on convolutions", fvd_25fps=139, tflops=7.2, phone_ms=3400,
         config={"method": "conv_funnels", "fun_factor": 0.5}),
    _row("Table 5", "truncated SVD r=0.5", fvd_25fps=142, tflops=8.6, phone_ms=3482,
         config={"method": "truncated_svd", "fun_factor": 0.5}),
    _row("Table 5", "truncated SVD r=0.25", fvd_25fps=130, tflops=8.0, phone_ms=3345,
         config={"method": "truncated_svd", "fun_factor": 0.25}),
    _row("Table 6", "learned gates, 90% pruned", fvd_25fps=201, tflops=4.06, gpu_ms=42,
         config={"method": "gates", "pruned_fraction": 0.9}),
    _row("Table 6", "learned gates, 80% pruned", fvd_25fps=245, tflops=4.35, gpu_ms=44,
         config={"method": "gates", "pruned_fraction": 0.8}),
    _row("Table 6", "learned gates, 70% pruned", fvd_25fps=127, tflops=4.64, gpu_ms=47,
         config={"method": "gates", "pruned_fraction": 0.7}),
    _row("Table 6", "L1 on blend weights, 70% pruned", fvd_25fps=207, tflops=4.67, gpu_ms=48,
         config={"method": "l1", "pruned_fraction": 0.7}),
    _row("Table 6", "L1 on blend weights, 53% pruned", fvd_25fps=165, tflops=5.17, gpu_ms=52,
         config={"method": "l1", "pruned_fraction": 0.53}),
)


def kept_count(total: int, pruned_fraction: float) -> int:
    """Temporal blocks kept when ``pruned_fraction`` of ``total`` are pruned, rounded to nearest (38 -> 11 at 70%,
    the tiny UNet's 33 -> 10)."""
    if not 0 <= pruned_fraction < 1:
        raise ValueError(f"pruned_fraction must be in [0, 1), got {pruned_fraction}")
    return max(1, int(round((1 - pruned_fraction) * total)))


def ablation_rows(table: str) -> list[ReferenceRow]:
    """Reference rows of one paper table, e.g. ``ablation_rows('Table 4')``."""
    return [r for r in ABLATIONS if r.table == table]
