"""ONNX export of stage UNets: matches torch under onnxruntime, and the optimized cross-attention leaves no softmax."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention

from explorer import export
from explorer.components import build_pipeline
from explorer.models import unet_config
from explorer.pipeline import StageRecord, save_stage
from explorer.transforms.cross_attention import SingleTokenCrossAttention

W, H, F = 32, 32, 4  # micro VAE factor 4 -> latent 8x8; 4 frames (2 after temporal multiscaling)



def small_config() -> dict:
    """The micro config cut to two levels, one layer each: same block kinds, a quarter of the export time."""
    cfg = unet_config("micro")
    return dict(cfg, down_block_types=cfg["down_block_types"][2:], up_block_types=cfg["up_block_types"][:2],
                block_out_channels=(32, 32), num_attention_heads=(2, 2), layers_per_block=1)


def _attention_modules(unet: torch.nn.Module) -> tuple[int, int]:
    """(attentions that still compute a similarity map, rewritten single-token cross-attentions)."""
    mods = list(unet.modules())
    return sum(isinstance(m, Attention) for m in mods), sum(isinstance(m, SingleTokenCrossAttention) for m in mods)


def test_optimized_cross_attention_removes_the_cross_attention_softmaxes(tmp_path: Path) -> None:
    counts, modules = {}, {}
    for slug in ("lowres-ft", "optimized-xattn"):
        loaded = export.load_stage_unet(slug, "micro", None, unet_config=small_config())
        modules[slug] = _attention_modules(loaded.unet)
        inputs = export.export_inputs(loaded.unet, "micro", W, H, F)
        result = export.export_onnx(loaded.unet, tmp_path / f"{slug}.onnx", inputs)
        counts[slug] = export.attention_op_counts(result.folder)
        assert result.model.is_file() and (result.folder / export.DATA_FILE).is_file()
        err = export.onnx_vs_torch(loaded.unet, result.model, inputs)
        assert err["rel_error"] < 1e-4, (slug, err)
    (attn_before, rewritten_before), (attn_after, rewritten_after) = modules["lowres-ft"], modules["optimized-xattn"]
    n_cross = rewritten_after
    assert rewritten_before == 0 and n_cross > 0 and attn_after == attn_before - n_cross
    before = counts["lowres-ft"]["Softmax"] + counts["lowres-ft"]["fused_attention"]
    after = counts["optimized-xattn"]["Softmax"] + counts["optimized-xattn"]["fused_attention"]
    # one similarity map + softmax per attention: the cross ones disappear, the self-attention ones stay
    assert before == attn_before and after == attn_after == before - n_cross > 0


def test_micro_mobilevd_export_matches_torch(tmp_path: Path) -> None:
    """The whole path (multiscale, pruning, merged funnels) exports with static shapes and runs the same in ORT."""
    summary = export.export_stage("mobilevd", "micro", tmp_path, None, width=W, height=H, frames=F)
    assert summary["stage"] == "channel-funnels" and summary["check"]["rel_error"] < 1e-4
    assert summary["input_shapes"] == {"sample": [1, F, 8, 8, 8], "timestep": [1],
                                       "encoder_hidden_states": [1, 1, 32], "added_time_ids": [1, 3]}
    assert summary["weights"].startswith("random (seed 0)")
    import onnx

    model = onnx.load(summary["model"], load_external_data=False)
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert all(all(v > 0 for v in shape) for shape in dims)  # static shapes only
    assert [i.name for i in model.graph.input] == list(export.INPUT_NAMES)


def test_input_shapes_without_a_model() -> None:
    shapes = export.input_shapes(unet_config("full"), "full", 512, 256, 14)
    assert shapes == {"sample": (1, 14, 8, 32, 64), "timestep": (1,), "encoder_hidden_states": (1, 1, 1024),
                      "added_time_ids": (1, 3)}
    with pytest.raises(ValueError):
        export.latent_shape("full", 500, 256)


def _stage_json(folder: Path, slug: str, scale: str) -> None:
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"slug": slug, "scale": scale}))


def test_weights_folder_lookup(tmp_path: Path) -> None:
    _stage_json(tmp_path / "svd", "svd", "micro")
    _stage_json(tmp_path / "lowres-ft", "lowres-ft", "tiny")
    folder, pending, _ = export.find_weights_folder("svd-512", "micro", tmp_path)
    assert folder == tmp_path / "svd" and pending == []  # svd-512 = svd's weights at low resolution
    folder, pending, why = export.find_weights_folder("optimized-xattn", "micro", tmp_path)
    assert folder is None and "tiny scale" in why  # lowres-ft exists, but at another scale
    folder, pending, _ = export.find_weights_folder("optimized-xattn", "tiny", tmp_path)
    assert folder == tmp_path / "lowres-ft" and [t.name for t in pending] == ["optimized_cross_attention"]
    folder, _, why = export.find_weights_folder("temporal-pruning", "micro", tmp_path)
    assert folder is None and "temporal-pruning" in why  # trained stages never borrow their parent's weights


def test_trained_stage_folder_is_used(tmp_path: Path) -> None:
    pipe = build_pipeline("micro", seed=3)
    record = StageRecord(slug="svd", scale="micro", width=W, height=H, frames=F, steps=2)
    save_stage(pipe, tmp_path / "svd", record)
    loaded = export.load_stage_unet("svd-512", "micro", tmp_path)
    assert loaded.trained and loaded.weights == f"trained: {tmp_path / 'svd'}"
    ref = pipe.unet.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.unet.state_dict().items())
    random = export.load_stage_unet("svd-512", "micro", tmp_path / "missing")
    assert not random.trained and random.weights.startswith("random (seed 0): no trained stage folder")
