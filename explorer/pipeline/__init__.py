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

The package, by concern (every name below is importable from ``explorer.pipeline`` itself):

* :mod:`~explorer.pipeline.record` -- the format: ``stage.json`` (:class:`StageRecord`), its constants,
  :class:`StageLoadError`;
* :mod:`~explorer.pipeline.folder` -- reading and loading folders: ``load_unet``, ``load_stage``, ``swap_unet``,
  ``read_stage_record`` (nothing is ever unpickled; every defect raises :class:`StageLoadError` naming the file);
* :mod:`~explorer.pipeline.storage` -- writing folders (``save_stage``) and weight storage dtypes
  (``store_weights_as``);
* :mod:`~explorer.pipeline.download` -- hub repo ids and ``download_snapshot``;
* :mod:`~explorer.pipeline.images` -- decoding and validating the conditioning image (``load_image``,
  ``prepare_image``);
* :mod:`~explorer.pipeline.generation` -- :func:`generate` (seeded initial latents, one-step sampling at
  sigma_max, NFE / time / memory accounting).
"""

from __future__ import annotations

from explorer.pipeline.download import HubDownloadError, download_snapshot, hub_allow_patterns, is_hub_id
from explorer.pipeline.folder import LoadedStage, load_stage, load_unet, read_stage_record, swap_unet
from explorer.pipeline.generation import GenerationResult, RssSampler, generate, initial_latents
from explorer.pipeline.images import MAX_INPUT_PIXELS, ImageInputError, load_image, prepare_image
from explorer.pipeline.record import (
    COMPONENTS,
    EXPECTED_CLASSES,
    MODEL_INDEX,
    PICKLE_SUFFIXES,
    STAGE_FILE,
    STAGE_FORMAT,
    VAE_ALTERNATIVES,
    StageLoadError,
    StageRecord,
    stage_record,
    training_summary,
)
from explorer.pipeline.storage import (
    STORAGE_DTYPES,
    save_shared_component,
    save_stage,
    store_file_as,
    store_shared_as,
    store_weights_as,
)

__all__ = [
    "COMPONENTS",
    "EXPECTED_CLASSES",
    "MAX_INPUT_PIXELS",
    "MODEL_INDEX",
    "PICKLE_SUFFIXES",
    "STAGE_FILE",
    "STAGE_FORMAT",
    "STORAGE_DTYPES",
    "VAE_ALTERNATIVES",
    "GenerationResult",
    "HubDownloadError",
    "ImageInputError",
    "LoadedStage",
    "RssSampler",
    "StageLoadError",
    "StageRecord",
    "download_snapshot",
    "generate",
    "hub_allow_patterns",
    "initial_latents",
    "is_hub_id",
    "load_image",
    "load_stage",
    "load_unet",
    "prepare_image",
    "read_stage_record",
    "save_shared_component",
    "save_stage",
    "stage_record",
    "store_file_as",
    "store_shared_as",
    "store_weights_as",
    "swap_unet",
    "training_summary",
]
