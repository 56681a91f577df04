"""Reading and loading stage folders: ``load_unet``, ``load_stage``, ``swap_unet``, ``read_stage_record``.

Loading = build the UNet from ``unet/config.json``, apply the recorded transforms
(``explorer.transforms.apply_transforms``), load the weights strictly from safetensors. Nothing is ever unpickled:
``torch.load`` is not used, pickle-based files (``.bin``, ``.pt``, ...) are refused, no remote code runs, and
component classes are fixed (the model_index.json class names are checked, not imported). A folder in the hub
layout of ``stabilityai/stable-video-diffusion-img2vid`` (no ``stage.json``) loads with the same code as slug
``svd``. Any defect (missing file, truncated safetensors, wrong tensor shape, bad JSON) raises
:class:`StageLoadError` naming the file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import (
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)

from explorer.models import UNET_CONFIGS, build_unet
from explorer.pipeline.download import HubDownloadError, download_snapshot, hub_allow_patterns, is_hub_id
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
from explorer.stages import Transform, get_stage

# Buffers older transformers versions saved although the model recomputes them.
_IGNORED_UNEXPECTED = ("embeddings.position_ids",)


class LoadedStage(NamedTuple):
    """``load_stage``'s result; unpacks as ``pipe, record = load_stage(...)``."""

    pipe: StableVideoDiffusionPipeline
    record: StageRecord


# ----------------------------------------------------------------------------------------------------------
# Reading files (every failure names the file)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise StageLoadError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageLoadError(f"bad JSON in {path}: {exc}") from exc


def _read_json_object(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise StageLoadError(f"bad JSON in {path}: expected an object, got {type(data).__name__}")
    return data


def _weight_files(directory: Path, base: str, variant: str | None) -> list[Path]:
    """The safetensors file(s) of one component; refuses pickles and explains variants."""
    if not directory.is_dir():
        raise StageLoadError(f"missing component folder: {directory}")
    name = f"{base}.{variant}.safetensors" if variant else f"{base}.safetensors"
    single = directory / name
    if single.is_file():
        return [single]
    index = directory / f"{name}.index.json"
    if index.is_file():
        data = _read_json_object(index)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise StageLoadError(f"bad shard index {index}: no 'weight_map'")
        shards = []
        for shard in sorted(set(weight_map.values())):
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or not shard.endswith(".safetensors"):
                raise StageLoadError(f"bad shard index {index}: illegal shard name {shard!r}")
            if not (directory / shard).is_file():
                raise StageLoadError(f"missing weights shard {directory / shard} (listed in {index})")
            shards.append(directory / shard)
        return shards
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise StageLoadError(
            f"missing weights file {single}; found only pickle-based weights {pickles}, which are never loaded "
            "(convert them to safetensors)"
        )
    others = sorted(p.name for p in directory.glob("*.safetensors"))
    hint = f"; found {others} (pass variant=...)" if others else ""
    raise StageLoadError(f"missing weights file {single}{hint}")


def _read_state_dict(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            part = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type for truncated/corrupt headers
            raise StageLoadError(f"cannot read safetensors file {path}: {exc}") from exc
        state.update(part)
    return state


def _strict_load(
    module: torch.nn.Module, state: dict[str, torch.Tensor], where: str, assign: bool = False
) -> None:
    """Load ``state`` into ``module`` requiring identical keys and shapes; a readable error otherwise."""
    expected = module.state_dict()
    state = {k: v for k, v in state.items() if not (k not in expected and k.endswith(_IGNORED_UNEXPECTED))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} tensors of the wrong shape ({'; '.join(shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        raise StageLoadError(f"weights in {where} do not match the architecture: " + ", ".join(parts))
    if assign:
        # safetensors hands out tensors at arbitrary offsets of the file's buffer; assigned as parameters they stay
        # misaligned and oneDNN picks other kernels for them: a loaded stage then differed from the same weights in
        # memory by one level in 0.1% of pixels. A copy is aligned, and loading stays bit-identical.
        state = {k: v.clone() for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise StageLoadError(f"weights in {where} do not match the architecture: {exc}") from exc


def _init_kwargs(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in params and not k.startswith("_")}


def _as_dtype(module: Any, dtype: torch.dtype = torch.float32) -> Any:
    """``dtype`` in eval mode; ``.to`` is skipped when nothing changes (diffusers warns on every dtype cast)."""
    if any(p.dtype != dtype for p in chain(module.parameters(), module.buffers()) if p.is_floating_point()):
        module = module.to(dtype)
    return module.eval()


def _move(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``module.to(device, dtype)`` only when something changes (diffusers warns on every dtype cast)."""
    tensors = [t for t in chain(module.parameters(), module.buffers()) if t.is_floating_point()]
    if any(t.device != device or t.dtype != dtype for t in tensors):
        module = module.to(device=device, dtype=dtype)
    return module


def _has_meta(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in chain(module.parameters(), module.buffers()))


# ----------------------------------------------------------------------------------------------------------
# Component loaders


def _unet_architecture(config: Mapping[str, Any], transforms: Sequence[Transform]) -> str:
    cfg = _init_kwargs(UNetSpatioTemporalConditionModel, config)
    return json.dumps({"config": cfg, "transforms": [t.to_dict() for t in transforms]}, sort_keys=True, default=list)


def _apply_transforms(unet: UNetSpatioTemporalConditionModel, transforms: Sequence[Transform]) -> Any:
    if not transforms:
        return unet
    import explorer.transforms as transforms_pkg

    apply = getattr(transforms_pkg, "apply_transforms", None)
    if apply is None:
        names = [t.name for t in transforms]
        raise StageLoadError(f"the stage records transforms {names} but explorer.transforms has no apply_transforms")
    return apply(unet, list(transforms))


def _build_transformed_unet(config: Mapping[str, Any], transforms: Sequence[Transform], device: str) -> Any:
    cfg = _init_kwargs(UNetSpatioTemporalConditionModel, config)
    try:
        unet = build_unet(cfg, device=device, seed=None)
    except Exception as exc:
        raise StageLoadError(f"cannot build a UNet from its config: {exc}") from exc
    return _apply_transforms(unet, transforms)


def load_unet(
    directory: str | Path,
    transforms: Sequence[Transform] = (),
    variant: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> UNetSpatioTemporalConditionModel:
    """Build the base UNet from ``directory/config.json``, apply ``transforms``, load weights strictly.

    The architecture is first built on the meta device (no random initialisation: full SVD takes ~17 s to
    initialise on 2 cores) and the weights are assigned; if a transform cannot run on meta tensors, or leaves a
    tensor there, it is rebuilt on the CPU. The result is on the CPU in ``dtype`` (move it afterwards).
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    config = _read_json_object(config_path)
    files = _weight_files(directory, _WEIGHTS_BASE["unet"], variant)
    state = _read_state_dict(files)
    # weights may be stored in another dtype (the one-step stages ship float16): cast the tensors, not the module
    # (a module-level .to() after loading makes diffusers warn about modules to keep in float32)
    state = {k: v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v for k, v in state.items()}
    where = ", ".join(str(f) for f in files)
    where = f"{where} (architecture: {config_path} + transforms {[t.name for t in transforms]})"
    if any(t.name == "optimized_cross_attention" for t in transforms):
        # a stage may reference its parent's (pre-rewrite) weights: to_q/to_k can never reach the output
        from explorer.transforms.cross_attention import strip_dropped_keys

        state = strip_dropped_keys(state)
    try:
        unet = _build_transformed_unet(config, transforms, "meta")
    except StageLoadError:
        raise
    except Exception:  # a transform that needs real tensors: build on the CPU below
        unet = None
    if unet is not None:
        _strict_load(unet, state, where, assign=True)
        if _has_meta(unet):  # e.g. a transform registered a non-persistent buffer: not in the state dict
            unet = None
    if unet is None:
        unet = _build_transformed_unet(config, transforms, "cpu")
        _strict_load(unet, state, where)
    unet = _as_dtype(unet, dtype)
    unet._mobilevd_arch = _unet_architecture(config, transforms)  # type: ignore[attr-defined]
    return unet


def _load_vae(directory: Path, variant: str | None, dtype: torch.dtype = torch.float32) -> Any:
    """diffusers' ``AutoencoderKLTemporalDecoder`` or, when ``config.json`` names it, the PatchVAE."""
    from explorer.vae import vae_class

    config = _read_json_object(directory / "config.json")
    files = _weight_files(directory, _WEIGHTS_BASE["vae"], variant)
    state = _read_state_dict(files)
    try:
        cls = vae_class(config)
        vae = cls(**_init_kwargs(cls, config))
    except Exception as exc:
        raise StageLoadError(f"cannot build the VAE from {directory / 'config.json'}: {exc}") from exc
    _strict_load(vae, state, ", ".join(map(str, files)))
    return _as_dtype(vae, dtype)


def _load_image_encoder(directory: Path, variant: str | None, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config_path = directory / "config.json"
    data = _read_json_object(config_path)
    files = _weight_files(directory, _WEIGHTS_BASE["image_encoder"], variant)
    state = _read_state_dict(files)
    try:
        config = CLIPVisionConfig.from_dict({k: v for k, v in data.items() if k not in ("dtype", "torch_dtype")})
        encoder = CLIPVisionModelWithProjection(config)
    except Exception as exc:
        raise StageLoadError(f"cannot build the image encoder from {config_path}: {exc}") from exc
    _strict_load(encoder, state, ", ".join(map(str, files)))
    return _as_dtype(encoder, dtype)


def _load_feature_extractor(directory: Path) -> Any:
    from transformers import CLIPImageProcessor
    from transformers.utils import logging as hf_logging

    path = directory / _CONFIG_FILE["feature_extractor"]
    data = _read_json_object(path)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the expected "no torchvision, using the PIL backend" notice
    try:
        return CLIPImageProcessor.from_dict(data)
    except Exception as exc:
        raise StageLoadError(f"cannot build the image processor from {path}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(level)


def _load_scheduler(directory: Path) -> EulerDiscreteScheduler:
    path = directory / _CONFIG_FILE["scheduler"]
    data = _read_json_object(path)
    name = data.get("_class_name", "EulerDiscreteScheduler")
    if name != "EulerDiscreteScheduler":
        raise StageLoadError(f"{path}: scheduler {name!r} is not supported (expected EulerDiscreteScheduler)")
    try:
        return EulerDiscreteScheduler.from_config(data)
    except Exception as exc:
        raise StageLoadError(f"cannot build the scheduler from {path}: {exc}") from exc


def _fingerprint(directory: Path, name: str, variant: str | None) -> str:
    """Cheap identity of a component on disk: its config and the size/ends of its weight files."""
    h = hashlib.sha256()
    h.update((directory / _CONFIG_FILE[name]).read_bytes())
    if name in _WEIGHTS_BASE:
        for path in _weight_files(directory, _WEIGHTS_BASE[name], variant):
            size = path.stat().st_size
            h.update(str(size).encode())
            with path.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 1 << 20:
                    fh.seek(max(size - (1 << 20), 0))
                    h.update(fh.read(1 << 20))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Resolving a source (local folder or hub id) and a stage's component folders


def _resolve_source(
    source: str | os.PathLike[str],
    subfolder: str | None,
    root: str | os.PathLike[str] | None,
    variant: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    revision: str | None,
) -> tuple[Path, Path]:
    """(stage folder, root inside which shared-component references must stay)."""
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        default_root = path if subfolder else path.parent
    else:
        text = str(source)
        local_parent = path.parent != Path(".") and path.parent.is_dir()  # e.g. checkpoints/typo
        if local_parent or not is_hub_id(text):
            raise StageLoadError(f"stage folder not found: {path} (and {text!r} is not a hub repo id)")
        try:
            base = download_snapshot(text, hub_allow_patterns(variant), revision, cache_dir, local_files_only)
        except HubDownloadError as exc:
            raise StageLoadError(str(exc)) from exc
        folder = base / subfolder if subfolder else base
        default_root = base
    if not folder.is_dir():
        raise StageLoadError(f"stage folder not found: {folder}")
    return folder, Path(root) if root is not None else default_root


def _component_dir(folder: Path, record: StageRecord, name: str, root: Path) -> Path:
    ref = record.components.get(name)
    if ref is None:
        return folder / name
    if os.path.isabs(ref) or ref.startswith("~"):
        raise StageLoadError(f"{folder / STAGE_FILE}: component {name!r} path {ref!r} must be relative")
    target = (folder / ref).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError as exc:
        raise StageLoadError(
            f"{folder / STAGE_FILE}: component {name!r} path {ref!r} leaves the checkpoints root {root}"
        ) from exc
    return target


def _match_scale(config: Mapping[str, Any]) -> str:
    cfg = _init_kwargs(UNetSpatioTemporalConditionModel, config)
    for scale, ref in UNET_CONFIGS.items():
        ref_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ref.items()}
        mine = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in ref_cfg}
        if all(mine.get(k) == v for k, v in ref_cfg.items() if k not in ("sample_size", "num_frames")):
            return scale
    return "custom"


def _legacy_record(folder: Path, source: str) -> StageRecord:
    """Record of a plain diffusers SVD folder (hub layout, no stage.json): the ``svd`` stage."""
    unet_cfg = _read_json_object(folder / "unet" / "config.json")
    vae_cfg = _read_json_object(folder / "vae" / "config.json")
    scale = _match_scale(unet_cfg)
    svd = get_stage("svd")
    if scale in ("full", "tiny"):
        width, height = svd.size(scale)
    else:
        factor = 2 ** (len(vae_cfg.get("block_out_channels", (0,) * 4)) - 1)
        side = max(8, int(unet_cfg.get("sample_size", 8)) * factor // 8 * 8)
        width = height = side
    return StageRecord(
        slug="svd",
        parent=None,
        scale=scale,
        transforms=(),
        width=width,
        height=height,
        frames=svd.frames,
        steps=svd.steps,
        min_guidance=svd.min_guidance,
        max_guidance=svd.max_guidance,
        extra={"layout": "diffusers pipeline folder without stage.json", "source": source},
    )


def read_stage_record(folder: str | Path) -> StageRecord:
    """The record of a local stage folder (stage.json, or the hub-layout ``svd`` record)."""
    folder = Path(folder)
    if (folder / STAGE_FILE).is_file():
        try:
            return StageRecord.from_dict(_read_json_object(folder / STAGE_FILE))
        except (ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, StageLoadError):
                raise
            raise StageLoadError(f"bad stage record {folder / STAGE_FILE}: {exc}") from exc
    if (folder / MODEL_INDEX).is_file():
        return _legacy_record(folder, str(folder))
    raise StageLoadError(f"not a stage folder: {folder} has neither {STAGE_FILE} nor {MODEL_INDEX}")


def _check_model_index(folder: Path) -> None:
    path = folder / MODEL_INDEX
    if not path.is_file():
        return
    index = _read_json_object(path)
    if index.get("_class_name", "StableVideoDiffusionPipeline") != "StableVideoDiffusionPipeline":
        raise StageLoadError(f"{path}: pipeline {index.get('_class_name')!r} is not a StableVideoDiffusionPipeline")
    for name, (_, cls_name) in EXPECTED_CLASSES.items():
        entry = index.get(name)
        if entry is None:
            continue
        if not isinstance(entry, list) or len(entry) != 2:
            raise StageLoadError(f"{path}: bad entry for {name!r}: {entry!r}")
        allowed = {cls_name}
        if name == "vae":
            allowed |= set(VAE_ALTERNATIVES)
        if name == "feature_extractor":  # transformers 5 names its PIL backend class; older hub folders the alias
            allowed |= {"CLIPImageProcessorPil", "CLIPFeatureExtractor"}
        if entry[1] not in allowed:
            raise StageLoadError(f"{path}: component {name!r} has class {entry[1]!r}; expected {cls_name}")


def _loaded_state(pipe: StableVideoDiffusionPipeline) -> dict[str, Any]:
    return getattr(pipe, "_mobilevd_state", None) or {}


def load_stage(
    source: str | os.PathLike[str],
    *,
    subfolder: str | None = None,
    root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    torch_dtype: torch.dtype | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> LoadedStage:
    """Load a stage folder or hub id into a ``StableVideoDiffusionPipeline``; returns ``(pipe, record)``.

    ``source``: a local folder (stage folder, or a diffusers SVD folder in the hub layout) or a hub repo id,
    fetched with ``huggingface_hub.snapshot_download`` (json/txt/safetensors only; ``local_files_only`` and
    ``HF_HUB_OFFLINE`` are honoured). ``root``: shared-component references must resolve inside it (default: the
    folder's parent for a local folder, the snapshot for a hub repo). ``variant``: e.g. ``"fp16"`` to read
    ``*.fp16.safetensors`` files. Raises :class:`StageLoadError` naming the offending file.
    """
    folder, root_path = _resolve_source(source, subfolder, root, variant, local_files_only, cache_dir, revision)
    record = read_stage_record(folder)
    if not (folder / STAGE_FILE).is_file():
        record.extra["source"] = str(source)
    _check_model_index(folder)
    dirs = {name: _component_dir(folder, record, name, root_path) for name in COMPONENTS}
    dtype = torch_dtype or torch.float32
    pipe = StableVideoDiffusionPipeline(
        unet=load_unet(dirs["unet"], record.transforms, variant, dtype),
        vae=_load_vae(dirs["vae"], variant, dtype),
        image_encoder=_load_image_encoder(dirs["image_encoder"], variant, dtype),
        feature_extractor=_load_feature_extractor(dirs["feature_extractor"]),
        scheduler=_load_scheduler(dirs["scheduler"]),
    )
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device=device)
    pipe._mobilevd_record = record
    pipe._mobilevd_state = {
        "folder": str(folder),
        "variant": variant,
        "fingerprints": {n: _fingerprint(dirs[n], n, variant) for n in ("vae", "image_encoder")},
    }
    return LoadedStage(pipe, record)


def swap_unet(
    pipe: StableVideoDiffusionPipeline,
    stage: str | os.PathLike[str],
    *,
    subfolder: str | None = None,
    root: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> StageRecord:
    """Put another stage's UNet into an already loaded pipeline (strict), instead of building a new pipeline.

    When the stage's UNet architecture (base config + transforms) equals the loaded one, the weights are copied
    into the existing module in place (same device and dtype, no allocation); otherwise the new UNet is built and
    registered in place of the old one. The scheduler config is always taken from the stage. The VAE and image
    encoder are kept when their files are identical to the loaded ones (the usual shared ``_shared/`` case) and
    reloaded otherwise, so the result always equals ``load_stage(stage)``. Returns the new stage's record.
    """
    folder, root_path = _resolve_source(stage, subfolder, root, variant, local_files_only, cache_dir, revision)
    record = read_stage_record(folder)
    _check_model_index(folder)
    dirs = {name: _component_dir(folder, record, name, root_path) for name in COMPONENTS}
    old = pipe.unet
    device, dtype = old.device, old.dtype
    config = _read_json_object(dirs["unet"] / "config.json")
    if getattr(old, "_mobilevd_arch", None) == _unet_architecture(config, record.transforms):
        files = _weight_files(dirs["unet"], _WEIGHTS_BASE["unet"], variant)
        _strict_load(old, _read_state_dict(files), ", ".join(map(str, files)))
    else:
        new = _move(load_unet(dirs["unet"], record.transforms, variant, dtype), device, dtype)
        pipe.register_modules(unet=new)
    state = _loaded_state(pipe)
    fingerprints = dict(state.get("fingerprints", {}))
    for name, loader in (("vae", _load_vae), ("image_encoder", _load_image_encoder)):
        fp = _fingerprint(dirs[name], name, variant)
        if fingerprints.get(name) != fp:
            current = getattr(pipe, name)
            module = _move(loader(dirs[name], variant, current.dtype), current.device, current.dtype)
            pipe.register_modules(**{name: module})
            fingerprints[name] = fp
    pipe.register_modules(scheduler=_load_scheduler(dirs["scheduler"]))
    pipe._mobilevd_record = record
    pipe._mobilevd_state = {"folder": str(folder), "variant": variant, "fingerprints": fingerprints}
    return record
