"""ONNX export of one stage's UNet: one NFE, batch 1, static shapes — the artefact every on-device runtime starts from.

Why ONNX: Qualcomm AI Hub, the QNN SDK converter (``qnn-onnx-converter``) and onnxruntime all take it, so the three
backends of ``scripts/qnn_runner.py`` measure the very same graph. Shapes are static (phone NPUs compile for fixed
shapes) and the graph holds the UNet only (no VAE, no image encoder), matching the paper's accounting.

Weights: a trained stage folder ``checkpoints/<stage>`` (``stage.json``) is used when it exists at the requested
scale; stages whose weights ARE their parent's (``svd-512`` = ``svd`` sampled at 512x256; ``optimized-xattn`` = an
exact rewrite of ``lowres-ft``) use the parent's folder plus their own transforms. Otherwise the UNet has random
weights (seeded) — latency does not depend on weight values — and :attr:`StageUNet.weights` says so.

Layout written by :func:`export_onnx`: a folder ``<name>.onnx/`` holding ``model.onnx`` + ``model.data`` (external
weights). This is the ONNX-with-external-weights layout AI Hub accepts for upload, it lifts protobuf's 2 GB limit
(full SVD is 6 GB in fp32), and onnxruntime / qnn-onnx-converter read ``model.onnx`` directly.

Exporter: torch's TorchScript-based exporter (``dynamo=False``, opset 17), which needs no extra packages and writes
scaled-dot-product attention as MatMul + Softmax, so the optimized cross-attention's removal of the similarity map
is visible as fewer Softmax nodes (:func:`attention_op_counts` also counts fused attention ops, should an exporter
emit them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from explorer import stages as registry
from explorer.models import VAE_FACTOR, unet_inputs

INPUT_NAMES: tuple[str, ...] = ("sample", "timestep", "encoder_hidden_states", "added_time_ids")
OUTPUT_NAMES: tuple[str, ...] = ("noise_pred",)
DEFAULT_OPSET = 17
MODEL_FILE = "model.onnx"
DATA_FILE = "model.data"
# Attention ops an exporter may fuse scaled-dot-product attention into (counted alongside Softmax).
FUSED_ATTENTION_OPS: frozenset[str] = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})


class UNetForExport(nn.Module):
    """Positional-tensor wrapper: exporters and runtimes need plain tensor inputs and one tensor output."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)[0]


@dataclass
class StageUNet:
    """A stage's UNet ready to time or export, and where its weights came from (recorded in every record)."""

    unet: nn.Module
    stage: str
    scale: str
    weights: str  # "trained: <folder>[ + transforms]" | "random (seed N): <why>"
    trained: bool
    info: dict[str, Any] = field(default_factory=dict)


def _weights_are_parents(stage: registry.Stage) -> bool:
    """True for stages whose weights are their parent's (no training of their own: 'none: ...' in the registry)."""
    return stage.parent is not None and stage.training.strip().lower().startswith("none")


def find_weights_folder(
    slug: str, scale: str, checkpoints: str | os.PathLike[str] = "checkpoints"
) -> tuple[Path | None, list[registry.Transform], str]:
    """The stage folder holding ``slug``'s weights at ``scale``, the transforms still to apply, and why.

    Walks up the lineage only through stages without training of their own (see :func:`_weights_are_parents`).
    """
    from explorer.pipeline import STAGE_FILE, StageLoadError, read_stage_record

    root = Path(checkpoints)
    stage = registry.get_stage(slug)
    pending: list[registry.Transform] = []
    reasons: list[str] = []
    while True:
        folder = root / stage.slug
        if (folder / STAGE_FILE).is_file():
            try:
                record = read_stage_record(folder)
            except StageLoadError as exc:
                reasons.append(f"{folder} unreadable ({exc})")
            else:
                if record.scale == scale:
                    return folder, pending, "trained"
                reasons.append(f"{folder} is {record.scale} scale, {scale} requested")
        else:
            reasons.append(f"no trained stage folder {folder}")
        if not _weights_are_parents(stage):
            break
        pending = list(stage.transforms) + pending
        stage = registry.get_stage(stage.parent)  # type: ignore[arg-type]
    return None, [], "; ".join(reasons)


def load_stage_unet(
    slug: str,
    scale: str = "tiny",
    checkpoints: str | os.PathLike[str] | None = "checkpoints",
    device: str | torch.device = "cpu",
    seed: int = 0,
    unet_config: dict[str, Any] | None = None,
) -> StageUNet:
    """``slug``'s UNet at ``scale`` in eval mode: trained weights when a stage folder exists, else random.

    ``checkpoints=None`` forces random weights. ``unet_config`` (random weights only) overrides the base config,
    e.g. for fast tests.
    """
    from explorer.architecture import build_stage_unet
    from explorer.pipeline import load_unet, read_stage_record
    from explorer.transforms import apply_transforms

    canonical = registry.resolve(slug)
    folder, pending, why = (None, [], "checkpoints disabled") if checkpoints is None else find_weights_folder(
        canonical, scale, checkpoints)
    if folder is not None and unet_config is None:
        record = read_stage_record(folder)
        unet_dir = (folder / record.components.get("unet", "unet")).resolve()
        unet = load_unet(unet_dir, record.transforms)
        if pending:
            unet = apply_transforms(unet, pending)
        weights = f"trained: {folder}" + (f" + {[t.name for t in pending]}" if pending else "")
        info = {"stage": canonical, "scale": scale, "transforms": [t.to_dict() for t in record.transforms + tuple(
            pending)]}
        result = StageUNet(unet, canonical, scale, weights, True, info)
    else:
        if unet_config is not None:
            why = "custom UNet config"
        unet, info = build_stage_unet(canonical, scale, device="cpu", unet_config=unet_config, seed=seed)
        weights = f"random (seed {seed}): {why}"
        if info.get("kept_blocks_source"):
            weights += f"; kept temporal blocks: {info['kept_blocks_source']}"
        result = StageUNet(unet, canonical, scale, weights, False, info)
    result.unet.eval().requires_grad_(False)
    result.unet.to(device)
    return result


def latent_shape(scale: str, width: int, height: int) -> tuple[int, int]:
    """Latent (height, width) of a pixel size at ``scale`` (SVD's VAE is 8x, the tiny VAE 4x)."""
    factor = VAE_FACTOR[scale]
    if width % factor or height % factor:
        raise ValueError(f"{width}x{height} px is not a multiple of the {scale} VAE factor {factor}")
    return height // factor, width // factor


def input_shapes(config: Any, scale: str, width: int, height: int, frames: int) -> dict[str, tuple[int, ...]]:
    """Static input shapes of one NFE, batch 1 (no model needed: dry runs print these)."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k)
    ctx = get("cross_attention_dim")
    ctx = ctx[0] if isinstance(ctx, (list, tuple)) else ctx
    lat_h, lat_w = latent_shape(scale, width, height)
    return {
        "sample": (1, frames, int(get("in_channels")), lat_h, lat_w),
        "timestep": (1,),
        "encoder_hidden_states": (1, 1, int(ctx)),
        "added_time_ids": (1, 3),
    }


def export_inputs(unet: nn.Module, scale: str, width: int, height: int, frames: int, seed: int = 0
                  ) -> dict[str, torch.Tensor]:
    """Example inputs in :data:`INPUT_NAMES` order; the timestep has shape (1,) (rank-0 inputs upset NPU tools)."""
    lat_h, lat_w = latent_shape(scale, width, height)
    device = next(unet.parameters()).device
    inputs = unet_inputs(unet, lat_h, lat_w, frames, device=device, seed=seed)
    inputs["timestep"] = inputs["timestep"].reshape(1)
    return {name: inputs[name] for name in INPUT_NAMES}


@dataclass
class ExportResult:
    """Where the model went and what it holds."""

    folder: Path  # <name>.onnx/ (upload this to AI Hub)
    model: Path  # <name>.onnx/model.onnx (give this to onnxruntime / qnn-onnx-converter)
    opset: int
    seconds: float
    bytes: int
    input_shapes: dict[str, list[int]]
    op_counts: dict[str, int]


def _torch_export(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    args = tuple(inputs[n] for n in INPUT_NAMES)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def export_onnx(
    unet: nn.Module,
    out: str | os.PathLike[str],
    inputs: dict[str, torch.Tensor],
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export ``unet`` (one NFE, static shapes of ``inputs``) to the folder ``out`` (``<name>.onnx/``).

    The folder is replaced atomically-ish: written to a sibling temp folder first, then renamed.
    """
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    module = UNetForExport(unet).eval()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw" / MODEL_FILE
        raw.parent.mkdir()
        _torch_export(module, inputs, raw, opset)
        model = onnx.load(str(raw))  # also loads per-tensor external files of > 2 GB exports
        final = Path(tmp) / "final"
        final.mkdir()
        onnx.save_model(model, str(final / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
        counts = op_counts(model)
        del model
        for f in final.iterdir():
            f.chmod(0o644)  # onnx writes external data 0600; keep the folder shareable like the rest
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    shapes = {n: list(t.shape) for n, t in inputs.items()}
    return ExportResult(out, out / MODEL_FILE, opset, time.perf_counter() - start, size, shapes, dict(counts))


def _graphs(model: Any) -> list[Any]:
    """The main graph, every subgraph (If/Loop/Scan bodies) and every local function body."""
    import onnx

    todo = [model.graph]
    bodies: list[Any] = [f for f in getattr(model, "functions", [])]
    seen: list[Any] = []
    while todo:
        graph = todo.pop()
        seen.append(graph)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    todo.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    todo.extend(attr.graphs)
    return seen + bodies


def op_counts(model_or_path: Any) -> collections.Counter[str]:
    """Node count per op type, over the main graph, subgraphs and local functions."""
    import onnx

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        path = path / MODEL_FILE if path.is_dir() else path
        model = onnx.load(str(path), load_external_data=False)
    counts: collections.Counter[str] = collections.Counter()
    for graph in _graphs(model):
        counts.update(node.op_type for node in graph.node)
    return counts


def attention_op_counts(model_or_path: Any) -> dict[str, int]:
    """Softmax nodes and fused attention nodes (either form of an exported similarity map + softmax)."""
    counts = op_counts(model_or_path)
    return {"Softmax": counts.get("Softmax", 0), "fused_attention": sum(counts.get(o, 0) for o in FUSED_ATTENTION_OPS)}


def ort_session(model_path: str | os.PathLike[str], threads: int = 1, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (1 keeps a shared 2-core machine usable)."""
    import onnxruntime as ort

    path = Path(model_path)
    path = path / MODEL_FILE if path.is_dir() else path
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_vs_torch(unet: nn.Module, model_path: str | os.PathLike[str], inputs: dict[str, torch.Tensor],
                  threads: int = 1) -> dict[str, float]:
    """Run the ONNX model with onnxruntime (CPU) and torch on the same inputs; relative error = max|d| / max|ref|."""
    session = ort_session(model_path, threads)
    feeds = {n: inputs[n].detach().cpu().numpy() for n in INPUT_NAMES}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        ref = UNetForExport(unet).eval()(*(inputs[n] for n in INPUT_NAMES)).float().cpu().numpy()
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.abs(ref).max()) or 1.0
    return {"rel_error": float(diff.max() / scale), "max_abs_error": float(diff.max()),
            "mean_abs_error": float(diff.mean()), "ref_max_abs": scale}


def export_stage(
    slug: str,
    scale: str = "tiny",
    out_dir: str | os.PathLike[str] = "outputs/onnx",
    checkpoints: str | os.PathLike[str] | None = "checkpoints",
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool | None = None,
    threads: int = 1,
    unet_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``slug`` at ``scale`` to ``<out_dir>/<slug>-<scale>.onnx/``; check it against torch when asked.

    ``check`` defaults to True except at full scale (a full-size CPU forward pass is slow; run it on a big host).
    """
    stage = registry.get_stage(slug)
    default_w, default_h = stage.size("full" if scale == "full" else "tiny")
    width, height, frames = width or default_w, height or default_h, frames or stage.frames
    loaded = load_stage_unet(stage.slug, scale, checkpoints, seed=seed, unet_config=unet_config)
    inputs = export_inputs(loaded.unet, scale, width, height, frames, seed=seed)
    result = export_onnx(loaded.unet, Path(out_dir) / f"{stage.slug}-{scale}.onnx", inputs, opset)
    summary: dict[str, Any] = {
        "stage": stage.slug, "scale": scale, "resolution": f"{width}x{height}", "frames": frames,
        "folder": str(result.folder), "model": str(result.model), "opset": opset,
        "seconds": round(result.seconds, 2), "megabytes": round(result.bytes / 2**20, 2),
        "input_shapes": result.input_shapes, "weights": loaded.weights,
        "softmax_nodes": result.op_counts.get("Softmax", 0), "nodes": sum(result.op_counts.values()),
        "includes": "UNet only, one NFE, batch 1, static shapes",
    }
    if check if check is not None else scale != "full":
        summary["check"] = onnx_vs_torch(loaded.unet, result.model, inputs, threads)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a stage's UNet (one NFE, batch 1, static shapes) to ONNX.")
    parser.add_argument("--stage", required=True, help="stage slug or alias, e.g. mobilevd")
    parser.add_argument("--scale", default="tiny", choices=["full", "tiny", "micro"])
    parser.add_argument("--out", default="outputs/onnx", help="output folder (gets <stage>-<scale>.onnx/)")
    parser.add_argument("--checkpoints", default="checkpoints", help="stage folders ('' = random weights)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                        help="compare with torch via onnxruntime (default: on except at full scale)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    summary = export_stage(args.stage, args.scale, args.out, args.checkpoints or None, opset=args.opset,
                           check=args.check, threads=args.threads)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
