"""The paper's ablations (Tables 3-6) at tiny scale: short, equal-budget runs from the one-step model.

Every run starts from the trained `adversarial-1step` stage (the paper ablates on its one-step 512x256 model),
applies one variant (a multiscaling setting, a funnel setting, a width-reduction method, a pruning method),
finetunes it with the same one-step objective as the shipped stages (adversarial + distillation onto the stored
teacher pairs; ``AblationBudget.distill_weight = 0`` is SF-V's pure recipe) for the same number of steps, and is
scored at one NFE on the same test clips and seeds (explorer.evaluation), with 95% bootstrap intervals. Each
result is a JSON record under ``<checkpoints>/ablations/`` that the app shows beside the paper's rows (format in
docs/app.md). Two rows of Table 5 are the same runs as rows of Tables 3 and 4 (the paper's baseline and its funnels
row) and are recorded as such, not trained twice. ``onestep`` rows are sampling-only: what one step gives without
the adversarial stage.

Budgets are small (default 40 steps of batch 4 per run): differences inside the rows' intervals are not findings;
docs/ablations.md gives the measured table and which of the paper's findings it reproduces.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from explorer import stages as registry
from explorer.evaluation import Reference, build_reference, generate_set, score
from explorer.flops import unet_flops
from explorer.fvd_proxy import DEFAULT_DIR as PROXY_DIR
from explorer.fvd_proxy import load_proxy
from explorer.pipeline import load_stage
from explorer.training.adversarial import AdversarialConfig, finetune_one_step
from explorer.training.pruning import l1_prune, learn_gates
from explorer.transforms import apply_transforms
from explorer.transforms.funnels import add_funnels, merge_funnels
from explorer.transforms.temporal_gates import num_temporal_blocks

RECORD_FORMAT = "mobilevd-explorer/ablation/1"
PARENT = "adversarial-1step"
TEACHER = "optimized-xattn"


@dataclass(frozen=True)
class Ablation:
    """One row: ``method`` says what is done to the parent before the finetune
    (see :meth:`AblationRunner._prepare_and_train`)."""

    table: str
    label: str
    method: str  # finetune | funnels | funnels_merged_early | gates | l1 | sample
    config: dict[str, Any] = field(default_factory=dict)  # the axis values, as the paper rows' config
    transforms: tuple[registry.Transform, ...] = ()  # applied to the parent before finetuning
    same_as: str | None = None  # another row's key: the same run, recorded under this table too
    stage: str | None = None  # sample rows: the stage sampled
    steps: int | None = None  # sample rows: the sampling steps

    @property
    def key(self) -> str:
        number = re.sub(r"[^0-9a-z]+", "", self.table.lower().replace("table", "t"))
        return f"{number}-" + re.sub(r"[^0-9a-z]+", "-", self.label.lower()).strip("-")


def _ms(t: int, s: int) -> tuple[registry.Transform, ...]:
    if t == 1 and s == 1:
        return ()
    return (registry.Transform("temporal_multiscale", {"temporal_factor": t, "spatial_factor": s}),)


ABLATIONS: tuple[Ablation, ...] = (
    Ablation("Table 3", "no multiscaling", "finetune", {"temporal_factor": 1, "spatial_factor": 1}),
    Ablation("Table 3", "temporal only", "finetune", {"temporal_factor": 2, "spatial_factor": 1}, _ms(2, 1)),
    Ablation("Table 3", "spatial only", "finetune", {"temporal_factor": 1, "spatial_factor": 2}, _ms(1, 2)),
    Ablation("Table 3", "temporal + spatial", "finetune", {"temporal_factor": 2, "spatial_factor": 2}, _ms(2, 2)),
    *(Ablation("Table 4", f"CSI r={r}", "funnels", {"init": "csi", "fun_factor": r}) for r in (0.25, 0.5, 0.75, 1.0)),
    Ablation("Table 4", "He init r=0.5", "funnels", {"init": "he", "fun_factor": 0.5}),
    Ablation("Table 5", "baseline", "finetune", {"method": "none"}, same_as="t3-no-multiscaling"),
    Ablation("Table 5", "funnels", "funnels", {"method": "funnels", "fun_factor": 0.5}, same_as="t4-csi-r-0-5"),
    Ablation("Table 5", "funnels merged before finetuning", "funnels_merged_early",
             {"method": "funnels_merged_early", "fun_factor": 0.5, "init": "csi"}),
    Ablation("Table 5", "funnels on convolutions", "funnels", {"method": "conv_funnels", "fun_factor": 0.5}),
    *(Ablation("Table 5", f"truncated SVD r={r}", "finetune", {"method": "truncated_svd", "fun_factor": r},
               (registry.Transform("truncated_svd", {"rank_factor": r}),)) for r in (0.5, 0.25)),
    *(Ablation("Table 6", f"learned gates, {int(f * 100)}% pruned", "gates",
               {"method": "gates", "pruned_fraction": f}) for f in (0.5, 0.7, 0.9)),
    Ablation("Table 6", "L1 on blend weights, 70% pruned", "l1", {"method": "l1", "pruned_fraction": 0.7}),
    Ablation("One-step", "lowres-ft, 1 step (no adversarial finetuning)", "sample",
             {"stage": "lowres-ft", "steps": 1}, stage="lowres-ft", steps=1),
    Ablation("One-step", "adversarial-1step, 1 step", "sample", {"stage": PARENT, "steps": 1}, stage=PARENT, steps=1),
)
BY_KEY: dict[str, Ablation] = {a.key: a for a in ABLATIONS}
TABLES: dict[str, str] = {"3": "Table 3", "4": "Table 4", "5": "Table 5", "6": "Table 6", "onestep": "One-step"}


@dataclass
class AblationBudget:
    """Equal for every trained row (the point of an ablation)."""

    steps: int = 40
    batch: int = 4
    gate_steps: int = 40  # gates/L1 rows: this many steps learning which blocks to keep, then ``steps`` finetune
    lr_g: float = 5e-5
    lr_extra: float = 5e-2  # gate importances / blend logits
    clips: int = 64  # the bootstrap spread of every row narrows with it; one-step scoring costs ~0.5 s a clip
    seed: int = 0
    data_seed: int = 0
    threads: int = 0
    ckpt_every: int = 20
    num_workers: int = 1
    # the shipped one-step recipe (docs/training.md, session 16): + this x distillation onto the teacher's stored
    # 8-step samples (build_path's `teacher-pairs` step); 0 = SF-V's pure adversarial finetune
    distill_weight: float = 1.0
    pairs: str = ""  # the teacher-pair store ("" = <runs>/teacher-pairs-<W>x<H>, where build_path writes it)


def select(tables: Sequence[str] | None = None, keys: Sequence[str] | None = None) -> list[Ablation]:
    """Rows by table ('3', '4', '5', '6', 'onestep' or 'Table 4') and/or by key; unknown names raise."""
    chosen = list(ABLATIONS)
    if tables:
        names = []
        for t in tables:
            name = TABLES.get(str(t).lower().replace("table", "").strip(), t)
            if name not in TABLES.values():
                raise ValueError(f"unknown table {t!r}; known: {', '.join(TABLES)}")
            names.append(name)
        chosen = [a for a in chosen if a.table in names]
    if keys:
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            raise ValueError(f"unknown ablation {unknown}; known: {', '.join(BY_KEY)}")
        chosen = [a for a in chosen if a.key in keys]
    return chosen


class AblationRunner:
    """Runs rows in order against ``checkpoints`` (reads the stages, writes ``ablations/``), runs in ``runs``."""

    def __init__(self, checkpoints: str | Path = "checkpoints", runs: str | Path = "runs",
                 budget: AblationBudget | None = None, proxy_dir: str | Path | None = None,
                 progress: bool = True, command: str = "") -> None:
        self.ckpt = Path(checkpoints)
        self.runs = Path(runs) / "ablations"
        self.out = self.ckpt / "ablations"
        self.budget = budget or AblationBudget()
        self.proxy = load_proxy(proxy_dir or PROXY_DIR)
        self.progress = progress
        self.command = command
        self._reference: Reference | None = None
        self._teacher: torch.nn.Module | None = None
        self._size: tuple[int, int] = (0, 0)  # the parent stage's resolution, set per run

    # ------------------------------------------------------------------------------------------------ parts
    def record_path(self, ablation: Ablation) -> Path:
        return self.out / f"{ablation.key}.json"

    def reference(self, width: int, height: int) -> Reference:
        ref = self._reference
        if ref is None or (ref.width, ref.height) != (width, height):
            b = self.budget
            ref = self._reference = build_reference(width, height, b.clips, b.data_seed, self.proxy, None)
        return ref

    def teacher(self) -> torch.nn.Module:
        if self._teacher is None:
            self._teacher = load_stage(self.ckpt / TEACHER)[0].unet
        return self._teacher

    def pairs_dir(self) -> Path:
        w, h = self._size
        return Path(self.budget.pairs) if self.budget.pairs else self.runs.parent / f"teacher-pairs-{w}x{h}"

    def _cfg(self, key: str, steps: int, **kw: Any) -> AdversarialConfig:
        b = self.budget
        pairs = ""
        if b.distill_weight > 0:
            pairs = str(self.pairs_dir())
            if not (Path(pairs) / "manifest.json").is_file():
                raise FileNotFoundError(
                    f"the ablations distil onto stored teacher pairs and {pairs} holds none: build them with "
                    "`python scripts/build_path.py --only teacher-pairs` (same --runs), or pass --distill-weight 0 "
                    "for SF-V's pure adversarial recipe")
        return AdversarialConfig(out=str(self.runs / key), size=self._size, steps=steps, batch=b.batch, lr_g=b.lr_g,
                                 lr_extra=b.lr_extra, warmup=min(20, max(1, steps // 10)), ckpt_every=b.ckpt_every,
                                 num_workers=b.num_workers, threads=b.threads, seed=b.seed,
                                 log_every=1 if steps < 20 else 10, distill_weight=b.distill_weight, pairs=pairs,
                                 **kw)

    def _train(self, key: str, unet: torch.nn.Module, pipe: Any, steps: int, **kw: Any) -> dict[str, Any]:
        cfg = self._cfg(key, steps)
        res = finetune_one_step(cfg, unet, self.teacher(), pipe.vae, pipe.image_encoder, progress=self.progress, **kw)
        return {"log": res["log"], "config": asdict(cfg)}

    def _prepare_and_train(self, ablation: Ablation, pipe: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The variant of the parent's UNet, finetuned; and what was done (for the record)."""
        b, key, unet = self.budget, ablation.key, pipe.unet
        info: dict[str, Any] = {}
        if ablation.transforms:
            unet = apply_transforms(unet, list(ablation.transforms))
        if ablation.method in ("funnels", "funnels_merged_early"):
            convs = ablation.config.get("method") == "conv_funnels"  # funnels inside the spatial resnets instead
            unet = add_funnels(unet, float(ablation.config["fun_factor"]), init=str(ablation.config.get("init", "csi")),
                               convs=convs, attention=not convs)
            if ablation.method == "funnels_merged_early":
                merge_funnels(unet)
            info["train"] = self._train(key, unet, pipe, b.steps)
            merge_funnels(unet)
        elif ablation.method in ("gates", "l1"):
            n = registry.kept_count(num_temporal_blocks(unet), float(ablation.config["pruned_fraction"]))

            def train(**kw: Any) -> dict[str, Any]:
                return self._train(f"{key}-select", unet, pipe, b.gate_steps, **kw)

            gated = ablation.method == "gates"
            choice = learn_gates(unet, n, train, seed=b.seed) if gated else l1_prune(unet, n, train)
            info["selection"] = {k: v for k, v in choice.items() if k != "history"}
            info["train"] = self._train(key, unet, pipe, b.steps)
        elif ablation.method == "finetune":
            info["train"] = self._train(key, unet, pipe, b.steps)
        else:
            raise ValueError(f"unknown ablation method {ablation.method!r}")
        return unet, info

    @staticmethod
    def _full_tflops(transforms: Sequence[registry.Transform], pruned_fraction: float | None) -> float:
        """Per-NFE TFLOPs of the same architecture change on full SVD at 512x256x14 (meta device, 2 x MAC)."""
        from explorer.architecture import build_stage_unet

        chain = list(registry.architecture_transforms(PARENT)) + list(transforms)
        if pruned_fraction is not None:  # the tiny run's learned blocks do not index full SVD: documented default
            chain.append(registry.Transform("temporal_pruning", {"pruned_fraction": pruned_fraction}))
        model, _ = build_stage_unet(PARENT, "full", device="meta", transforms=chain)
        w, h = registry.get_stage(PARENT).size("full")
        return unet_flops(model, w, h, registry.get_stage(PARENT).frames, "full").tflops

    def _arch_transforms(self, ablation: Ablation) -> list[registry.Transform]:
        extra = list(ablation.transforms)
        if ablation.method in ("funnels", "funnels_merged_early"):
            convs = ablation.config.get("method") == "conv_funnels"
            extra.append(registry.Transform("channel_funnels", {"fun_factor": ablation.config["fun_factor"],
                                                                "merged": True, "convs": convs,
                                                                "attention": not convs}))
        return extra

    # ------------------------------------------------------------------------------------------------- run
    def run_one(self, ablation: Ablation, force: bool = False) -> dict[str, Any]:
        path = self.record_path(ablation)
        if path.is_file() and not force:
            return json.loads(path.read_text())
        if ablation.same_as is not None:
            other = BY_KEY[ablation.same_as]
            base = self.run_one(other, force=False)
            record = {**base, "key": ablation.key, "table": ablation.table, "label": ablation.label,
                      "config": ablation.config, "same_run_as": f"{other.table}: {other.label} ({other.key})"}
            return self._write(path, record)
        t0 = time.time()
        slug = ablation.stage or PARENT
        pipe, stage_record = load_stage(self.ckpt / slug)
        pipe.set_progress_bar_config(disable=True)
        self._size = (stage_record.width, stage_record.height)
        info: dict[str, Any] = {}
        steps = ablation.steps or 1
        if ablation.method != "sample":
            unet, info = self._prepare_and_train(ablation, pipe)
            pipe.unet = unet.eval()
        train_s = time.time() - t0
        ref = self.reference(stage_record.width, stage_record.height)
        b = self.budget
        with torch.no_grad():
            videos, seconds, nfe = generate_set(pipe, ref, steps=steps, seed=b.seed, frames=stage_record.frames,
                                                min_guidance=1.0, max_guidance=1.0, noise_aug=0.02,
                                                decode_chunk_size=None, desc=ablation.key)
        row = score(videos, ref, pipe.vae, self.proxy, None)
        w, h = stage_record.width, stage_record.height
        pruned = ablation.config.get("pruned_fraction") if ablation.method in ("gates", "l1") else None
        arch = self._arch_transforms(ablation)
        record = {
            "format": RECORD_FORMAT, "key": ablation.key, "table": ablation.table, "label": ablation.label,
            "config": ablation.config, "method": ablation.method, "parent": slug,
            "transforms": [t.to_dict() for t in arch], **row, "nfe": nfe,
            # a sampled stage other than the parent is another architecture; its cost is on the FLOPs tab
            "tflops": round(self._full_tflops(arch, pruned), 4) if ablation.method != "sample" or slug == PARENT
            else None,
            "tflops_scale": "full (512x256x14, per NFE, 2 x MAC, UNet only)",
            "tflops_tiny": round(unet_flops(pipe.unet, w, h, stage_record.frames, stage_record.scale).tflops, 6),
            "resolution": f"{w}x{h}", "clips": len(videos), "seed": b.seed, "data_seed": b.data_seed,
            "seconds_per_clip": round(sum(seconds) / max(1, len(seconds)), 3),
            "train_steps": 0 if ablation.method == "sample" else b.steps,
            "select_steps": b.gate_steps if ablation.method in ("gates", "l1") else 0, "batch": b.batch,
            "train_seconds": round(train_s, 1), "budget": asdict(b), **info,
            "source": f"measured here (tiny scale, {len(videos)} test clips, 1 NFE; {ablation.key}.json)",
            "command": self.command, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return self._write(path, record)

    def _write(self, path: Path, record: dict[str, Any]) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
        tmp.replace(path)
        return record

    def run(self, ablations: Sequence[Ablation], force: bool = False) -> list[dict[str, Any]]:
        rows = []
        for i, ablation in enumerate(ablations):
            done = self.record_path(ablation).is_file() and not force
            print(f"[ablations] {ablation.key}: {'done already' if done else 'running'} ({i + 1}/{len(ablations)})",
                  flush=True)
            rows.append(self.run_one(ablation, force=force))
        return rows


def quick_budget() -> AblationBudget:
    """Micro-model budget for tests: one step per phase, two clips."""
    return replace(AblationBudget(), steps=1, gate_steps=1, batch=1, clips=2, ckpt_every=1, num_workers=0)
