"""UI-free serving layer of the app (app/): the stage catalog, FLOP counts behind a cache, checked inputs, one
comparison engine (generation with a result cache) and the work lock.

Why a package of its own: the UI must hold no model logic, and everything here is testable without gradio.
Records other tools write are read by ``explorer.records``; technique rules live with their technique
(``explorer.transforms.pruning_rules``, ``explorer.transforms.funnels``). Import order inside the package:
work, inputs -> catalog -> flops_cache -> generation.
"""

from explorer.serving.catalog import (
    BASE_VARIANTS,
    NOT_FINETUNED,
    PLACEHOLDER_NOTE,
    CatalogEntry,
    StageCatalog,
    reason_of,
)
from explorer.serving.flops_cache import FlopsService, code_fingerprint, default_cache_dir, entry_flops
from explorer.serving.generation import (
    MAX_OUTPUT_FILES,
    MAX_QUEUE,
    MAX_STAGES,
    MAX_STEPS,
    Common,
    ResultCache,
    StageOutcome,
    StageRequest,
    cached_outcome,
    compose,
    identity_of,
    outcome_stats,
    prune_outputs,
    run_stage,
    stage_settings,
    validate_common,
)
from explorer.serving.inputs import (
    MIN_INPUT_SIDE,
    CheckedImage,
    check_image,
    confine_path,
    image_path_of,
    safe_name,
    shorten,
    upscale_note,
)
from explorer.serving.work import RequestCancelled, WorkLock

__all__ = [
    "BASE_VARIANTS", "MAX_OUTPUT_FILES", "MAX_QUEUE", "MAX_STAGES", "MAX_STEPS", "MIN_INPUT_SIDE", "NOT_FINETUNED",
    "PLACEHOLDER_NOTE", "CheckedImage", "Common", "CatalogEntry", "FlopsService", "RequestCancelled", "ResultCache",
    "StageCatalog", "StageOutcome", "StageRequest", "WorkLock", "cached_outcome", "check_image", "code_fingerprint",
    "compose", "confine_path", "default_cache_dir", "entry_flops", "identity_of", "image_path_of", "outcome_stats",
    "prune_outputs", "reason_of", "run_stage", "safe_name", "shorten", "stage_settings", "upscale_note",
    "validate_common",
]
