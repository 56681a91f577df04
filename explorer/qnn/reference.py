"""--compare's torch side: the same UNet run by torch on the same inputs, and the relative error against it.

Why its own module: every backend compares against this one function (tests replace it with the exported model's
own torch forward), so callers look it up here at call time.
"""

from __future__ import annotations

import argparse
from typing import Any

from explorer.qnn.jobs import Job


def torch_reference(job: Job, args: argparse.Namespace, inputs: dict[str, Any]) -> Any:
    """The torch output of the same UNet on the same inputs (for --compare)."""
    import torch

    from explorer.export import INPUT_NAMES, UNetForExport, load_stage_unet

    loaded = load_stage_unet(job.stage, job.scale, args.checkpoints or None)
    with torch.no_grad():
        out = UNetForExport(loaded.unet)(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))
    return out.double().numpy()


def relative_error(got: Any, ref: Any) -> dict[str, float]:
    import numpy as np

    diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    scale = float(np.abs(ref).max()) or 1.0
    return {"rel_error": float(diff.max() / scale), "mean_abs_error": float(diff.mean())}
