"""Stage folders (save / load / swap) and generation with a ``StableVideoDiffusionPipeline``.

A stage folder is a diffusers pipeline folder plus ``stage.json``::

    checkpoints/
      _shared/                    components stored once, referenced by several stages
        vae/  image_encoder/  feature_extractor/  scheduler/
      lowres-ft/
        stage.json                StageRecord: slug, parent, scale, transforms, size, frames, defaults,
                                  components {"vae": "../_shared/vae", ...}, extra
        model_index.json          diffusers' pipeline index (class names only)
        unet/config.json          the BASE architecture (before transforms)
        unet/diffusion_pytorch_model.safetensors
        [vae/ image_encoder/ feature_extractor/ scheduler/ when not shared]

Loading = build the UNet from ``unet/config.json``, apply the recorded transforms
(``explorer.transforms.apply_transforms``), load the weights strictly from safetensors. Nothing is ever unpickled:
``torch.load`` is not used, pickle-based files (``.bin``, ``.pt``, ...) are refused, no remote code runs, and
component classes are fixed (the model_index.json class names are checked, not imported). A folder in the hub
layout of ``stabilityai/stable-video-diffusion-img2vid`` (no ``stage.json``) loads with the same code as slug
``svd``. Any defect (missing file, truncated safetensors, wrong tensor shape, bad JSON) raises
:class:`StageLoadError` naming the file.

Generation (:func:`generate`) starts every stage from the same seeded noise: the initial latents are drawn from a
CPU ``torch.Generator`` seeded with ``seed`` and passed explicitly, and the same generator then supplies the
conditioning-image noise augmentation, so results never depend on a stage's pipeline internals or device.

One-step sampling on ``EulerDiscreteScheduler`` (SVD config: Karras sigmas, sigma_max 700, v-prediction):
``set_timesteps(1)`` gives ``sigmas = [700, 0]`` (the Karras ramp with one point is sigma_max; the final sigma is
zero), so the single UNet evaluation happens at sigma_max with c_noise = 0.25 ln 700 = 1.638 and input scaling
1/sqrt(700^2+1). The Euler step is ``x + (x - x0) / sigma * (0 - sigma) = x0``: the result is exactly the
denoised prediction x0 = c_skip x + c_out F (v-prediction, c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1)), up to
float rounding. This is the adversarial stages' inference (docs/paper.md: one evaluation at s_max). The initial latents
are unit noise times the scheduler's ``init_noise_sigma`` = sqrt(700^2+1) (diffusers' 'leading' spacing).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import resource
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from diffusers import (
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from PIL import Image, ImageOps, UnidentifiedImageError

from explorer.models import UNET_CONFIGS, build_unet
from explorer.stages import Stage, Transform, architecture_transforms, get_stage

STAGE_FILE = "stage.json"
MODEL_INDEX = "model_index.json"
STAGE_FORMAT = "mobilevd-explorer/stage/1"
COMPONENTS: tuple[str, ...] = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")
# Pickle-based weight formats: never loaded, never written.
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".msgpack", ".h5")
# The only classes a stage folder may name (nothing is imported from a folder's model_index.json). The VAE may
# also be the tiny family's PatchVAE (explorer/vae.py), named by ``_class_name`` in ``vae/config.json``.
VAE_ALTERNATIVES: dict[str, tuple[str, str]] = {"PatchVAE": ("explorer", "PatchVAE")}
EXPECTED_CLASSES: dict[str, tuple[str, str]] = {
    "unet": ("diffusers", "UNetSpatioTemporalConditionModel"),
    "vae": ("diffusers", "AutoencoderKLTemporalDecoder"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
    "scheduler": ("diffusers", "EulerDiscreteScheduler"),
}
_WEIGHTS_BASE = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}
_CONFIG_FILE = {
    "unet": "config.json",
    "vae": "config.json",
    "image_encoder": "config.json",
    "feature_extractor": "preprocessor_config.json",
    "scheduler": "scheduler_config.json",
}
# Buffers older transformers versions saved although the model recomputes them.
_IGNORED_UNEXPECTED = ("embeddings.position_ids",)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Largest accepted input image, in pixels (64 MP: every phone camera fits; above this PIL's own
# decompression-bomb guard would start warning at ~89 MP).
MAX_INPUT_PIXELS = 64_000_000


class StageLoadError(ValueError):
    """A stage folder (or hub snapshot) is missing, corrupt or does not match its architecture."""


class ImageInputError(ValueError):
    """The conditioning image cannot be used (not an image, corrupt, too large, bad size)."""


# ----------------------------------------------------------------------------------------------------------
# The stage record (stage.json)


@dataclass
class StageRecord:
    """What ``stage.json`` holds: how to rebuild the stage's UNet and how to sample it by default.

    ``transforms`` are ALL architecture transforms from the base UNet (``unet/config.json``), in order.
    ``width``/``height`` are pixels at the folder's own scale. ``components`` maps a component name to a folder
    relative to the stage folder (shared components); unlisted components live in the stage folder itself.
    """

    slug: str
    parent: str | None = None
    scale: str = "tiny"
    transforms: tuple[Transform, ...] = ()
    width: int = 256
    height: int = 144
    frames: int = 14
    steps: int = 25
    min_guidance: float = 1.0
    max_guidance: float = 3.0
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int | None = None
    components: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.transforms = tuple(t if isinstance(t, Transform) else Transform.from_dict(t) for t in self.transforms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STAGE_FORMAT,
            "slug": self.slug,
            "parent": self.parent,
            "scale": self.scale,
            "transforms": [t.to_dict() for t in self.transforms],
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "steps": self.steps,
            "min_guidance": self.min_guidance,
            "max_guidance": self.max_guidance,
            "fps": self.fps,
            "motion_bucket_id": self.motion_bucket_id,
            "noise_aug_strength": self.noise_aug_strength,
            "decode_chunk_size": self.decode_chunk_size,
            "components": dict(self.components),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageRecord:
        """Parse a stage.json object; unknown keys are kept under ``extra['unknown']`` (forward compatible)."""
        if not isinstance(data, Mapping) or "slug" not in data:
            raise ValueError("a stage record must be a JSON object with at least 'slug'")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known and k != "format"}
        kwargs["transforms"] = tuple(Transform.from_dict(t) for t in data.get("transforms", []) or [])
        kwargs["components"] = {str(k): str(v) for k, v in (data.get("components") or {}).items()}
        kwargs["extra"] = dict(data.get("extra") or {})
        if unknown:
            kwargs["extra"].setdefault("unknown", {}).update(unknown)
        rec = cls(**kwargs)
        for name in ("width", "height", "frames", "steps", "fps", "motion_bucket_id"):
            if not isinstance(getattr(rec, name), int) or isinstance(getattr(rec, name), bool):
                raise ValueError(f"stage record field {name!r} must be an integer, got {getattr(rec, name)!r}")
        for name in ("min_guidance", "max_guidance", "noise_aug_strength"):
            setattr(rec, name, float(getattr(rec, name)))
        bad = set(rec.components) - set(COMPONENTS)
        if bad:
            raise ValueError(f"unknown component names in 'components': {sorted(bad)}")
        return rec

    @classmethod
    def from_stage(cls, stage: Stage | str, scale: str = "tiny", **overrides: Any) -> StageRecord:
        """A record for registry stage ``stage`` at ``scale`` (size from ``Stage.size``, all transforms)."""
        st = get_stage(stage) if isinstance(stage, str) else stage
        width, height = st.size(scale)
        values: dict[str, Any] = {
            "slug": st.slug,
            "parent": st.parent,
            "scale": scale,
            "transforms": tuple(architecture_transforms(st.slug)),
            "width": width,
            "height": height,
            "frames": st.frames,
            "steps": st.steps,
            "min_guidance": st.min_guidance,
            "max_guidance": st.max_guidance,
        }
        values.update(overrides)
        return cls(**values)

    def generation_defaults(self) -> dict[str, Any]:
        """Keyword arguments of :func:`generate` that this stage fixes by default."""
        return {
            "width": self.width,
            "height": self.height,
            "num_frames": self.frames,
            "steps": self.steps,
            "min_guidance": self.min_guidance,
            "max_guidance": self.max_guidance,
            "fps": self.fps,
            "motion_bucket_id": self.motion_bucket_id,
            "noise_aug_strength": self.noise_aug_strength,
            "decode_chunk_size": self.decode_chunk_size,
        }


class LoadedStage(NamedTuple):
    """``load_stage``'s result; unpacks as ``pipe, record = load_stage(...)``."""

    pipe: StableVideoDiffusionPipeline
    record: StageRecord


def training_summary(training: Any) -> str:
    """One line on how a stage was trained, from its record's ``extra['training']`` (what the card and the model
    card show)."""
    if training is None:
        return "—"
    if isinstance(training, str):
        return training
    if isinstance(training, dict):
        if "objective" in training:
            cfg = training.get("config") or {}
            return f"{training['objective']}, {cfg.get('steps', '?')} steps x batch {cfg.get('batch', '?')}"
        if "steps" in training:
            size = "x".join(str(v) for v in training.get("size") or [])
            return f"denoising, {training['steps']} steps x batch {training.get('batch', '?')} at {size}"
        if "gates" in training:
            return "learned temporal gates, then adversarial finetuning"
    return "see stage.json"


def stage_record(pipe: StableVideoDiffusionPipeline) -> StageRecord | None:
    """The record of the stage currently loaded into ``pipe`` (None for pipelines not made by load_stage)."""
    return getattr(pipe, "_mobilevd_record", None)


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


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id ``OWNER/NAME`` (not a relative or absolute path)."""
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


class HubDownloadError(RuntimeError):
    """A hub repo that could not be fetched (network, auth, missing repo, offline without a cache entry)."""


def download_snapshot(repo_id: str, allow_patterns: Sequence[str], revision: str | None = None,
                      cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool | None = None) -> Path:
    """The local snapshot of hub repo ``repo_id`` (``huggingface_hub.snapshot_download``), the one place the project
    downloads: ``HF_HUB_OFFLINE`` (or ``local_files_only``) means the cache only, and ``HF_HUB_CACHE`` is read at
    call time, not when huggingface_hub was imported. Raises ``HubDownloadError`` with a one-line reason."""
    offline = bool(local_files_only) or _truthy(os.environ.get("HF_HUB_OFFLINE"))
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                      allow_patterns=list(allow_patterns)))
    except Exception as exc:  # noqa: BLE001 - every failure becomes the same kind of readable reason
        mode = "offline (local cache only)" if offline else "online"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubDownloadError(f"cannot get hub repo {repo_id!r} {mode}: {first}") from exc


def hub_allow_patterns(variant: str | None = None) -> list[str]:
    """Files fetched from a hub repo: JSON configs, text, and the component weights in safetensors only.

    Root-level files such as SVD's original ``svd.safetensors`` checkpoint are not fetched (the patterns need a
    component folder); with a variant only that variant's weights are fetched.
    """
    suffix = f".{variant}" if variant else ""
    patterns = ["*.json", "*.txt"]
    for base in ("diffusion_pytorch_model", "model"):
        patterns += [f"*/{base}{suffix}.safetensors", f"*/{base}{suffix}-*-of-*.safetensors"]
    return patterns


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


# ----------------------------------------------------------------------------------------------------------
# Saving


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


# ----------------------------------------------------------------------------------------------------------
# Conditioning image


def _open_image(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _array_to_image(image)
    try:
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise ImageInputError(f"image file not found: {path}")
            return Image.open(path)
        if isinstance(image, (bytes, bytearray, memoryview)):
            if not len(image):
                raise ImageInputError("empty image data")
            return Image.open(io.BytesIO(bytes(image)))
        if hasattr(image, "read"):
            return Image.open(image)
    except ImageInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise ImageInputError(f"not a readable image: {exc}") from exc
    raise ImageInputError(f"unsupported image input of type {type(image).__name__}")


def _array_to_image(array: np.ndarray) -> Image.Image:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageInputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.size == 0:
        raise ImageInputError("empty image array")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError("image array contains NaN or infinite values")
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        scale = 257.0 if arr.max() > 255 else 1.0
        arr = np.round(np.clip(arr / scale, 0, 255)).astype(np.uint8)
    else:
        raise ImageInputError(f"unsupported image array dtype {arr.dtype}")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited over white, 16-bit / float greys are rescaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        return Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ImageInputError("float image contains NaN or infinite values")
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


def load_image(image: Any, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Any supported input as an upright 8-bit RGB PIL image (EXIF orientation applied).

    Accepts a PIL image, a path, bytes, a binary file object or a numpy array (HxW[xC], uint8/uint16/bool, or
    float in [0, 1]). Raises :class:`ImageInputError` for non-images, corrupt files and images above
    ``max_pixels`` (checked from the header, before decoding).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open_image(image)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageInputError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageInputError(
                f"image is too large: {width}x{height} = {width * height} pixels > limit {max_pixels}"
            )
        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageInputError(f"corrupt or truncated image: {exc}") from exc
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # malformed EXIF: use the pixels as stored
            pass
        try:
            return _to_rgb(img)
        except ImageInputError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageInputError(f"cannot convert image of mode {img.mode} to RGB: {exc}") from exc


def prepare_image(
    image: Any, width: int, height: int, max_pixels: int = MAX_INPUT_PIXELS
) -> Image.Image:
    """The conditioning image as the model sees it: RGB, scaled to cover ``width`` x ``height`` keeping its
    aspect ratio, then centre-cropped (Lanczos). Show this to the user. See :func:`load_image` for inputs."""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise ImageInputError(f"target size must be positive integers, got {width}x{height}")
    img = load_image(image, max_pixels=max_pixels)
    src_w, src_h = img.size
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = width / scale, height / scale
    left, top = (src_w - crop_w) / 2.0, (src_h - crop_h) / 2.0
    box = (left, top, left + crop_w, top + crop_h)
    return img.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


# ----------------------------------------------------------------------------------------------------------
# Generation


@dataclass
class GenerationResult:
    """One generated clip and what it cost.

    ``nfe`` counts UNet evaluations per video as measured by a forward hook (a CFG call on a batch of 2 counts
    2); ``unet_seconds`` is the time inside UNet forwards; ``seconds`` the whole pipeline call (image encoding,
    VAE encode, denoising, decoding). ``peak_memory`` (MB): CUDA peak allocated memory during the call on a GPU;
    on the CPU the peak resident memory the call added above what the process held when it began
    (:class:`RssSampler`; ``settings['peak_memory']`` says which).
    """

    frames: np.ndarray  # uint8 [F, H, W, 3]
    seconds: float
    unet_seconds: float
    nfe: int
    peak_memory: float | None
    seed: int
    settings: dict[str, Any]
    unet_calls: int = 0


def initial_latents(
    seed: int, num_frames: int, height: int, width: int, channels: int = 4, vae_factor: int = 8
) -> tuple[torch.Tensor, torch.Generator]:
    """Unit-variance starting noise [1, F, C, H/f, W/f] from a CPU generator seeded with ``seed``.

    Returns the generator too: it continues to supply the conditioning-image noise augmentation, so that two
    stages of the same latent shape see identical randomness regardless of their device.
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    shape = (1, num_frames, channels, height // vae_factor, width // vae_factor)
    return torch.randn(shape, generator=generator, dtype=torch.float32), generator


class RssSampler:
    """Peak resident memory of one call on the CPU: a thread samples the process's RSS (``/proc/self/statm``)
    every ``interval`` seconds between :meth:`start` and :meth:`stop`. ``ru_maxrss`` cannot do this: it is the
    process's lifetime peak, the same number for every stage once the largest one has run."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.available = Path("/proc/self/statm").is_file()
        self.start_mb = self.peak_mb = 0.0
        self._stop = None
        self._thread = None

    @staticmethod
    def rss_mb() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def start(self) -> None:
        if not self.available:
            return
        import threading

        self.start_mb = self.peak_mb = self.rss_mb()
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(self.interval):
                self.peak_mb = max(self.peak_mb, self.rss_mb())

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            self._thread = None

    @property
    def added_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(
    pipe: StableVideoDiffusionPipeline,
    image: Any,
    *,
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
    steps: int | None = None,
    min_guidance: float | None = None,
    max_guidance: float | None = None,
    seed: int = 0,
    motion_bucket_id: int | None = None,
    fps: int | None = None,
    noise_aug_strength: float | None = None,
    decode_chunk_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> GenerationResult:
    """Generate one clip from ``image``. Arguments left ``None`` take the loaded stage's defaults (its
    ``stage.json``); ``num_frames``, ``motion_bucket_id``, ``fps`` and ``noise_aug_strength`` then fall back to
    SVD's 14, 127, 7 and 0.02.

    Classifier-free guidance (a batch of 2 per step) is active when ``max_guidance > 1``, as in diffusers; the
    guidance scale ramps linearly from ``min_guidance`` (first frame) to ``max_guidance`` (last frame), so
    ``min_guidance`` must not exceed ``max_guidance``. ``steps=1`` is one evaluation at sigma_max returning the
    x0 prediction (see the module docstring). ``fps`` is the clip's frame rate (the UNet is conditioned on
    fps - 1, as SVD was). ``progress(done, total)`` is called after each denoising step. Same inputs and seed
    give bit-identical frames on the CPU.
    """
    record = stage_record(pipe)
    defaults = record.generation_defaults() if record is not None else {}

    def pick(name: str, value: Any) -> Any:
        if value is not None:
            return value
        if defaults.get(name) is None:
            raise ValueError(f"{name} is required (the pipeline has no stage record with a default)")
        return defaults[name]

    width = _check_positive_int("width", pick("width", width))
    height = _check_positive_int("height", pick("height", height))
    if num_frames is None:
        num_frames = defaults.get("num_frames", 14)
    num_frames = _check_positive_int("num_frames", num_frames)
    steps = _check_positive_int("steps", pick("steps", steps))
    min_guidance = float(pick("min_guidance", min_guidance))
    max_guidance = float(pick("max_guidance", max_guidance))
    if decode_chunk_size is None:
        decode_chunk_size = defaults.get("decode_chunk_size")
    if decode_chunk_size is not None:
        decode_chunk_size = _check_positive_int("decode_chunk_size", decode_chunk_size)
    seed = int(seed)
    if motion_bucket_id is None:
        motion_bucket_id = defaults.get("motion_bucket_id", 127)
    motion_bucket_id = _check_positive_int("motion_bucket_id", motion_bucket_id, minimum=0)
    fps = _check_positive_int("fps", fps if fps is not None else defaults.get("fps", 7))
    if noise_aug_strength is None:
        noise_aug_strength = defaults.get("noise_aug_strength", 0.02)
    noise_aug_strength = float(noise_aug_strength)
    if noise_aug_strength < 0 or not np.isfinite(noise_aug_strength):
        raise ValueError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
    if not (np.isfinite(min_guidance) and np.isfinite(max_guidance)) or min_guidance > max_guidance:
        raise ValueError(f"need min_guidance <= max_guidance, got {min_guidance} > {max_guidance}")
    vae_factor = int(pipe.vae_scale_factor)
    multiple = max(8, vae_factor)  # diffusers' SVD pipeline checks multiples of 8
    if width % multiple or height % multiple:
        w8 = max(multiple, round(width / multiple) * multiple)
        h8 = max(multiple, round(height / multiple) * multiple)
        raise ValueError(f"width and height must be multiples of {multiple}, got {width}x{height} (try {w8}x{h8})")

    cond = prepare_image(image, width, height)
    unet = pipe.unet
    device = unet.device
    latents, generator = initial_latents(
        seed, num_frames, height, width, channels=unet.config.in_channels // 2, vae_factor=vae_factor
    )
    latents = latents.to(device=device, dtype=unet.dtype)

    counters = {"nfe": 0, "calls": 0, "seconds": 0.0, "start": 0.0}

    def pre_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        counters["nfe"] += int(sample.shape[0])
        counters["calls"] += 1
        _sync(device)
        counters["start"] = time.perf_counter()

    def post_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        _sync(device)
        counters["seconds"] += time.perf_counter() - counters["start"]

    def on_step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        if progress is not None:
            progress(i + 1, steps)
        return {}

    handles = [
        unet.register_forward_pre_hook(pre_hook, with_kwargs=True),
        unet.register_forward_hook(post_hook, with_kwargs=True),
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = RssSampler() if device.type != "cuda" else None
    try:
        _sync(device)
        if sampler is not None:
            sampler.start()
        start = time.perf_counter()
        out = pipe(
            cond,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=steps,
            min_guidance_scale=min_guidance,
            max_guidance_scale=max_guidance,
            fps=fps,
            motion_bucket_id=motion_bucket_id,
            noise_aug_strength=noise_aug_strength,
            decode_chunk_size=decode_chunk_size,
            generator=generator,
            latents=latents,
            output_type="np",
            callback_on_step_end=on_step_end,
        )
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
        if sampler is not None:
            sampler.stop()
    video = np.asarray(out.frames)[0]
    frames = np.round(np.clip(video, 0.0, 1.0) * 255.0).astype(np.uint8)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "CUDA max_memory_allocated during the call"
    elif sampler is not None and sampler.available:
        peak = sampler.added_mb
        peak_kind = (f"peak resident memory this call added above the {sampler.start_mb:.0f} MB the process held "
                     f"when it began (RSS sampled every {sampler.interval * 1e3:.0f} ms; other work in the same "
                     f"process at the same time is counted too)")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        peak_kind = "process peak resident set size (ru_maxrss), process-wide"
    settings = {
        "stage": record.slug if record is not None else None,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "steps": steps,
        "min_guidance": min_guidance,
        "max_guidance": max_guidance,
        "cfg": max_guidance > 1.0,
        "motion_bucket_id": motion_bucket_id,
        "fps": fps,
        "noise_aug_strength": noise_aug_strength,
        "decode_chunk_size": decode_chunk_size,
        "device": str(device),
        "dtype": str(unet.dtype).replace("torch.", ""),
        "peak_memory": peak_kind,
        "nfe_accounting": "UNet evaluations per video; a classifier-free-guidance batch of 2 counts 2",
    }
    return GenerationResult(
        frames=frames,
        seconds=seconds,
        unet_seconds=counters["seconds"],
        nfe=counters["nfe"],
        peak_memory=peak,
        seed=seed,
        settings=settings,
        unet_calls=counters["calls"],
    )
