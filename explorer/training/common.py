"""Pieces every training loop shares: EMA, resumable safetensors checkpoints, JSON-lines logs, LR schedule.

Checkpoints hold only tensors in safetensors files plus a JSON file (never pickles), so a run can be resumed
from its last checkpoint after an interruption, on any machine, and an untrusted checkpoint cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters (kept in float32 on the CPU side of the model)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 100) -> None:
        self.decay = decay
        self.warmup = warmup
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the last update used: the ramp (1 + n) / (warmup + n), capped at ``decay``."""
        return min(self.decay, (1 + self.updates) / (self.warmup + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # ramp the decay so early, random weights are forgotten quickly
        decay = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.mul_(decay).add_(v.detach().float(), alpha=1 - decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.shadow = {k: v.clone().float() for k, v in state.items()}
        self.updates = updates

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(dtype=model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def start_run(out: str | Path, threads: int, cpu_models: Iterable[nn.Module]) -> tuple[Any, Path]:
    """(Accelerator, run folder) for a training run; on the CPU, the exact fast temporal convolutions are
    switched on for ``cpu_models`` (explorer.cpu_speed)."""
    from accelerate import Accelerator

    from explorer.cpu_speed import use_fast_temporal_convs

    if threads:
        torch.set_num_threads(threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if accelerator.device.type == "cpu":
        for model in cpu_models:
            use_fast_temporal_convs(model)
    return accelerator, folder


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``min_ratio * base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            key = f"{pid}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class Checkpointer:
    """Writes/reads ``folder/{models...}.safetensors`` + ``trainer.json`` atomically (write then rename)."""

    folder: Path
    keep_history: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    @property
    def meta_path(self) -> Path:
        return self.folder / "trainer.json"

    def exists(self) -> bool:
        return self.meta_path.exists()

    def save(
        self,
        step: int,
        models: dict[str, nn.Module | dict[str, torch.Tensor]],
        optimizers: dict[str, torch.optim.Optimizer],
        meta: dict[str, Any] | None = None,
    ) -> None:
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, model in models.items():
            sd = model.state_dict() if isinstance(model, nn.Module) else model
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
        opt_meta = {}
        for name, opt in optimizers.items():
            tensors, om = _flatten_optimizer(opt)
            save_file(tensors, str(tmp / f"optim_{name}.safetensors"))
            opt_meta[name] = om
        record = {"step": step, "time": time.time(), "optimizers": opt_meta, **(meta or {}), **self.extra}
        (tmp / "trainer.json").write_text(json.dumps(record, indent=1))
        if self.folder.exists():
            old = self.folder.with_name(self.folder.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.folder, old)
            os.replace(tmp, self.folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, self.folder)

    def load(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
    ) -> dict[str, Any]:
        """Load what was saved into ``models``/``optimizers``; returns the trainer.json record."""
        record = json.loads(self.meta_path.read_text())
        for name, model in models.items():
            own = model.state_dict()
            state = load_file(str(self.folder / f"{name}.safetensors"))
            model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()})
        for name, opt in (optimizers or {}).items():
            path = self.folder / f"optim_{name}.safetensors"
            if not path.exists():  # a weights-only snapshot (e.g. committed to git): Adam restarts its moments
                continue
            _unflatten_optimizer(opt, load_file(str(path)), record["optimizers"][name])
        return record

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / f"{name}.safetensors"))


class JsonlLog:
    """Append-only JSON-lines training log (one object per logged step), readable by the app."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **row: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def count_params(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


# Files of a run's state cast to float16 in a committed snapshot (the UNet's EMA: each file under 10 MB). The
# online UNet is not stored: a restore starts it from the EMA (Adam restarts anyway). A frozen image encoder is not
# stored either: the run loads it from its own folder (the shipped one), not from the state.
SNAPSHOT_CAST: tuple[str, ...] = ("unet", "ema")
_FROZEN_ENCODER_FILES = ("image_encoder.safetensors", "ema_image_encoder.safetensors")
SNAPSHOT_FILES: tuple[str, ...] = ("log.jsonl", "curve.jsonl", "config.json")


def snapshot_run(run: str | Path, dest: str | Path, cast: tuple[str, ...] = SNAPSHOT_CAST,
                 dtype: torch.dtype = torch.float16) -> Path:
    """A weights-only copy of ``run`` for git: ``state/`` without the optimizer moments (``cast`` files in
    ``dtype``), the run's logs and learning curve, and its ``final/`` folder when it has one."""
    run, dest = Path(run), Path(dest)
    state = run / "state"
    if not (state / "trainer.json").is_file():
        raise FileNotFoundError(f"{run} has no state/trainer.json to snapshot")
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "state").mkdir(parents=True)
    record = json.loads((state / "trainer.json").read_text())
    frozen_encoder = (record.get("config") or {}).get("train_image_encoder") is False
    for f in sorted(state.glob("*.safetensors")):
        if f.name.startswith("optim_") or (f.stem == "unet" and (state / "ema.safetensors").is_file()):
            continue
        if frozen_encoder and f.name in _FROZEN_ENCODER_FILES:
            continue
        tensors = load_file(str(f))
        if f.stem in cast:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / "state" / f.name))
    record["snapshot"] = {"from": str(run), "optimizer_moments": False, "cast": {n: str(dtype) for n in cast},
                          "online_unet": "restored from the EMA", "frozen_image_encoder_stored": not frozen_encoder}
    (tmp / "state" / "trainer.json").write_text(json.dumps(record, indent=1))
    for name in SNAPSHOT_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, tmp / name)
    if (run / "final").is_dir():
        shutil.copytree(run / "final", tmp / "final")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def restore_run(snapshot: str | Path, run: str | Path) -> Path:
    """Put a committed snapshot back as ``run`` so that the same training command resumes from it (float16
    weights are loaded into the float32 model; Adam restarts its moments). Refuses to overwrite a newer run."""
    snapshot, run = Path(snapshot), Path(run)
    saved = json.loads((snapshot / "state" / "trainer.json").read_text())["step"]
    if (run / "state" / "trainer.json").is_file():
        have = json.loads((run / "state" / "trainer.json").read_text())["step"]
        if have >= saved:
            raise FileExistsError(f"{run} is already at step {have} >= the snapshot's {saved}")
    run.mkdir(parents=True, exist_ok=True)
    if (run / "state").exists():
        shutil.rmtree(run / "state")
    shutil.copytree(snapshot / "state", run / "state")
    if not (run / "state" / "unet.safetensors").is_file() and (run / "state" / "ema.safetensors").is_file():
        shutil.copy2(run / "state" / "ema.safetensors", run / "state" / "unet.safetensors")  # online from the EMA
    for name in SNAPSHOT_FILES:
        if (snapshot / name).is_file():
            shutil.copy2(snapshot / name, run / name)
    if (snapshot / "final").is_dir() and not (run / "final").exists():
        shutil.copytree(snapshot / "final", run / "final")
    return run
