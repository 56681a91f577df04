"""The stage record (``stage.json``) and the constants of the stage-folder format.

A stage folder is a diffusers pipeline folder plus ``stage.json`` (:class:`StageRecord`); see the layout in
:mod:`explorer.pipeline`. Reading and loading folders is :mod:`explorer.pipeline.folder`, writing them
:mod:`explorer.pipeline.storage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from explorer.stages import Stage, Transform, architecture_transforms, get_stage

if TYPE_CHECKING:
    from diffusers import StableVideoDiffusionPipeline

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


class StageLoadError(ValueError):
    """A stage folder (or hub snapshot) is missing, corrupt or does not match its architecture."""


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
