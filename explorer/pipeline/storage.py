"""Writing stage folders (``save_stage``, ``save_shared_component``) and rewriting stored weights in another
dtype (``store_weights_as``, ``store_shared_as``, ``store_file_as``). Weights are written as safetensors only."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline

from explorer.pipeline.folder import _read_json_object, _read_state_dict, _weight_files, read_stage_record
from explorer.pipeline.record import (
    _CONFIG_FILE,
    _WEIGHTS_BASE,
    COMPONENTS,
    EXPECTED_CLASSES,
    MODEL_INDEX,
    PICKLE_SUFFIXES,
    STAGE_FILE,
    VAE_ALTERNATIVES,
    StageLoadError,
    StageRecord,
)


def _model_index(vae_class_name: str | None = None) -> dict[str, Any]:
    import diffusers

    index: dict[str, Any] = {"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": diffusers.__version__}
    index.update({name: list(lib_cls) for name, lib_cls in EXPECTED_CLASSES.items()})
    if vae_class_name in VAE_ALTERNATIVES:
        index["vae"] = list(VAE_ALTERNATIVES[vae_class_name])
    return index


def _save_component(name: str, component: Any, directory: Path) -> None:
    """Write one component (weights in safetensors only)."""
    directory.mkdir(parents=True, exist_ok=True)
    if name in ("unet", "vae"):
        component.save_pretrained(directory, safe_serialization=True)
    elif name == "image_encoder":
        from safetensors.torch import save_file

        component.config.save_pretrained(directory)
        state = {k: v.detach().to("cpu").contiguous() for k, v in component.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    elif name in ("feature_extractor", "scheduler"):
        component.save_pretrained(directory)
    else:
        raise ValueError(f"unknown component {name!r}")


def _pickles_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def _components_of(pipe_or_components: StableVideoDiffusionPipeline | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(pipe_or_components, Mapping):
        comps = dict(pipe_or_components)
    else:
        comps = {name: getattr(pipe_or_components, name, None) for name in COMPONENTS}
    unknown = set(comps) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; expected a subset of {COMPONENTS}")
    return comps


def _same_as_saved(name: str, component: Any, directory: Path) -> bool:
    """Whether the shared component already on disk equals ``component`` (config and every tensor)."""
    if name in _WEIGHTS_BASE:
        try:
            state = _read_state_dict(_weight_files(directory, _WEIGHTS_BASE[name], None))
        except StageLoadError:
            return False
        mine = component.state_dict()
        if set(mine) != set(state):
            return False
        return all(torch.equal(mine[k].detach().cpu().to(state[k].dtype), state[k]) for k in mine)
    on_disk = _read_json_object(directory / _CONFIG_FILE[name])
    with_dir = directory.parent / f".{directory.name}.cmp-{uuid.uuid4().hex}"
    try:
        _save_component(name, component, with_dir)
        mine_cfg = _read_json_object(with_dir / _CONFIG_FILE[name])
    finally:
        shutil.rmtree(with_dir, ignore_errors=True)
    strip = ("_diffusers_version", "transformers_version", "image_processor_type", "_use_default_values")
    return {k: v for k, v in mine_cfg.items() if k not in strip} == {
        k: v for k, v in on_disk.items() if k not in strip
    }


def save_shared_component(name: str, component: Any, directory: str | Path, overwrite: bool = False) -> Path:
    """Store one component once (e.g. ``checkpoints/_shared/vae``) for several stage folders to reference.

    An existing folder is kept when it holds the same component, replaced when ``overwrite``, and an error
    otherwise (two stages must never silently share different weights).
    """
    directory = Path(directory)
    if (directory / _CONFIG_FILE[name]).is_file():
        if _same_as_saved(name, component, directory):
            return directory
        if not overwrite:
            raise ValueError(f"{directory} already holds a different {name}; pass overwrite=True to replace it")
        shutil.rmtree(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex}"
    try:
        _save_component(name, component, tmp)
        if _pickles_in(tmp):
            raise RuntimeError(f"pickle files were written for {name}: {_pickles_in(tmp)}")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def save_stage(
    pipe_or_components: StableVideoDiffusionPipeline | Mapping[str, Any],
    folder: str | Path,
    stage_record: StageRecord | Mapping[str, Any],
    *,
    shared: Mapping[str, str | Path] | None = None,
    root: str | Path | None = None,
    overwrite_shared: bool = False,
) -> Path:
    """Write a stage folder: components (safetensors only), ``model_index.json`` and ``stage.json``.

    ``shared`` maps component names to folders (e.g. ``{"vae": "checkpoints/_shared/vae"}``) where the component
    is stored once (written there if absent, checked for equality if present) and referenced from stage.json by a
    relative path; they must lie inside ``root`` (default: the stage folder's parent). The folder is written to a
    temporary sibling and swapped in, so a crash never leaves a half-written stage. Returns the folder.
    """
    folder = Path(folder)
    record = stage_record if isinstance(stage_record, StageRecord) else StageRecord.from_dict(stage_record)
    record = StageRecord.from_dict(record.to_dict())  # a copy, validated
    comps = _components_of(pipe_or_components)
    root_path = Path(root) if root is not None else folder.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    record.components = {}
    for name, target in (shared or {}).items():
        if name not in COMPONENTS:
            raise ValueError(f"unknown shared component {name!r}")
        target = Path(target)
        if target.resolve() == folder.resolve() or folder.resolve() in target.resolve().parents:
            raise ValueError(f"shared {name} folder {target} must lie outside the stage folder {folder}")
        try:
            target.resolve().relative_to(root_path.resolve())
        except ValueError as exc:
            raise ValueError(f"shared {name} folder {target} is outside the checkpoints root {root_path}") from exc
        if comps.get(name) is not None:
            save_shared_component(name, comps[name], target, overwrite=overwrite_shared)
        elif not (target / _CONFIG_FILE[name]).is_file():
            raise ValueError(f"shared {name} folder {target} does not exist and no {name} was given to write")
        record.components[name] = Path(os.path.relpath(target.resolve(), folder.resolve())).as_posix()
    missing = [n for n in COMPONENTS if n not in record.components and comps.get(n) is None]
    if missing:
        raise ValueError(f"components {missing} are neither given nor shared")
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex}"
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        for name in COMPONENTS:
            if name not in record.components:
                _save_component(name, comps[name], tmp / name)
        if comps.get("vae") is not None:
            vae_name = type(comps["vae"]).__name__
        else:  # a shared VAE saved earlier: its config names the class
            vae_name = _read_json_object(Path((shared or {})["vae"]) / "config.json").get("_class_name")
        (tmp / MODEL_INDEX).write_text(json.dumps(_model_index(vae_name), indent=2) + "\n", encoding="utf-8")
        (tmp / STAGE_FILE).write_text(json.dumps(record.to_dict(), indent=2, default=_json_default) + "\n")
        pickles = _pickles_in(tmp)
        if pickles:
            raise RuntimeError(f"refusing to write pickle files: {pickles}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def store_weights_as(
    folder: str | Path, dtype: str = "float16", components: Sequence[str] = ("unet",)
) -> dict[str, Any]:
    """Rewrite the floating-point tensors of a stage folder's OWN components in ``dtype`` (in place, atomically).

    Why: the shipped tiny path must stay well under 100 MB; the one-step stages lose nothing measurable in fp16
    (measure with scripts/evaluate.py after converting: the metrics then describe the shipped weights). Loading is
    unchanged: ``load_stage(..., torch_dtype=...)`` casts on load (float32 by default). Components referenced from
    other folders (stage.json ``components``) are left alone. Returns {component: (bytes before, bytes after)}.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    folder = Path(folder)
    record = read_stage_record(folder)
    sizes: dict[str, Any] = {}
    for name in components:
        if name not in _WEIGHTS_BASE:
            raise ValueError(f"component {name!r} has no weights (one of {sorted(_WEIGHTS_BASE)})")
        if name in record.components:
            continue  # referenced from another folder: not this stage's to rewrite
        sizes[name] = _store_files(_weight_files(folder / name, _WEIGHTS_BASE[name], None), dtype)
    return sizes


def _store_files(paths: Sequence[Path], dtype: str) -> tuple[int, int]:
    """``store_file_as`` over one component's files (one, or the shards of an index); bytes summed."""
    sizes = [store_file_as(path, dtype) for path in paths]
    return sum(b for b, _ in sizes), sum(a for _, a in sizes)


def store_shared_as(checkpoints: str | Path, component: str, dtype: str = "float16") -> tuple[int, int]:
    """``store_weights_as`` for a component in ``<checkpoints>/_shared`` (used by several stages, so no stage
    record owns it); (bytes before, after) summed over its files."""
    if component not in _WEIGHTS_BASE:
        raise ValueError(f"component {component!r} has no weights (one of {sorted(_WEIGHTS_BASE)})")
    return _store_files(_weight_files(Path(checkpoints) / "_shared" / component, _WEIGHTS_BASE[component], None),
                        dtype)


def store_file_as(path: str | Path, dtype: str = "float16") -> tuple[int, int]:
    """Rewrite one safetensors file's floating-point tensors in ``dtype`` (atomically); (bytes before, after).
    Shared components (``checkpoints/_shared/vae``) have no stage record, so they are rewritten file by file."""
    from safetensors.torch import load_file, save_file

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    path = Path(path)
    target = STORAGE_DTYPES[dtype]
    before = path.stat().st_size
    state = load_file(str(path))
    state = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return before, path.stat().st_size


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
