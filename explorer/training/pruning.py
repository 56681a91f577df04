"""Temporal block pruning by learned gates (docs/paper.md §3) and the L1-on-blend-weights baseline (Table 6).

Both pick ``n`` temporal blocks to keep, prune the rest, and are followed by a finetune of the pruned UNet.
Shared by the path's `temporal-pruning` stage (explorer.training.path) and the ablations
(explorer.training.ablations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from explorer.transforms.temporal_gates import TemporalGates, prune_temporal_blocks, temporal_blocks

GATE_SCHEME = ("p = projection of sigmoid(q) onto {0<=p<=1, sum p = n}; exactly n gates by systematic sampling; "
               "straight-through gradients (docs/temporal_gates.md)")

# a callable that trains ``unet`` (adversarially) with extra trainable parameters / loss / logging / state
Train = Callable[..., dict[str, Any]]


def learn_gates(unet: nn.Module, n_kept: int, train: Train, seed: int = 0) -> dict[str, Any]:
    """Learn gate importances with exactly ``n_kept`` blocks open per step, then prune to the top ``n_kept``.

    Returns the gates record (kept, importances, probabilities, their history, block descriptions) that the
    app plots (docs/app.md, gates file)."""
    gates = TemporalGates.attach(unet, n_kept, mode="sampled", seed=seed)
    history: list[dict[str, Any]] = []

    def on_log(step: int) -> dict[str, Any]:
        probs = gates.probabilities().detach()
        history.append({"step": step, "importance": gates.importance.detach().tolist(),
                        "probability": probs.tolist()})
        return {"p_min": probs.min().item(), "p_max": probs.max().item()}

    result = train(extra_params=[gates.importance], on_log=on_log, extra_state={"gates": gates})
    kept = gates.top_n()
    record = {
        "kept": kept, "n": n_kept, "total": gates.num_blocks,
        "importance": gates.importance.detach().tolist(),
        "probability": gates.probabilities().detach().tolist(),
        "blocks": [b.to_dict() for b in gates.blocks], "history": history, "scheme": GATE_SCHEME,
        "train": result,
    }
    gates.detach_from(unet)
    prune_temporal_blocks(unet, kept)
    return record


def blend_mix_factors(unet: nn.Module) -> list[nn.Parameter]:
    """The learned blend logits m of every temporal block (its temporal branch weighs 1 - sigmoid(m))."""
    seen: dict[str, nn.Parameter] = {}
    for block in temporal_blocks(unet):
        mixer = unet.get_submodule(block.mixer_path)
        seen.setdefault(block.mixer_path, mixer.mix_factor)
    return list(seen.values())


def temporal_weights(unet: nn.Module) -> list[float]:
    """Per temporal block (``temporal_blocks`` order): the weight of its temporal branch, 1 - sigmoid(m)."""
    return [1.0 - torch.sigmoid(unet.get_submodule(b.mixer_path).mix_factor.detach()).item()
            for b in temporal_blocks(unet)]


def l1_prune(unet: nn.Module, n_kept: int, train: Train, weight: float = 0.1) -> dict[str, Any]:
    """The Table 6 baseline: L1 on the temporal branches' blend weights during training, then keep the
    ``n_kept`` blocks with the largest temporal weight."""
    params = blend_mix_factors(unet)

    def extra_loss(_unet: nn.Module) -> torch.Tensor:
        return weight * sum((1 - torch.sigmoid(m)).abs().sum() for m in params)

    history: list[dict[str, Any]] = []

    def on_log(step: int) -> dict[str, Any]:
        w = temporal_weights(unet)
        history.append({"step": step, "temporal_weight": w})
        return {"w_min": min(w), "w_max": max(w)}

    result = train(extra_params=params, extra_loss=extra_loss, on_log=on_log)
    weights = temporal_weights(unet)
    kept = sorted(sorted(range(len(weights)), key=lambda i: -weights[i])[:n_kept])
    prune_temporal_blocks(unet, kept)
    return {"kept": kept, "n": n_kept, "total": len(weights), "temporal_weight": weights, "history": history,
            "l1_weight": weight, "train": result}
