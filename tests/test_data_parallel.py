"""Data-parallel training, proven: the denoising and adversarial loops under ``accelerate launch --multi_gpu
--num_processes 2`` on the CPU (gloo, one clip per process) make the same update as one process running the
combined batch of two, and the run writes its checkpoint and log once. Per-row random draws (explorer/randomness.py)
and per-process shares of each global batch (ClipStream, LatentCache.batches) make this exact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer import data
from explorer.components import build_image_encoder, patch_vae_config
from explorer.latent_cache import build_latent_cache
from explorer.models import build_unet, unet_config
from explorer.randomness import RowRandom, randn
from explorer.vae import build_patch_vae, load_vae

WORKER = Path(__file__).with_name("data_parallel_worker.py")
SIZE = (128, 64)  # latents 32x16: at 8x4 the deepest level holds 2 pixels and its GroupNorm turns rounding into
# O(1) differences between a batch of 2 and two batches of 1 (a random UNet is ill-conditioned there)
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("dp")
    vae = build_patch_vae(patch_vae_config("micro"), [data.make_image("train", i, size=(64, 32)) for i in range(8)])
    vae.save_pretrained(root / "vae", safe_serialization=True)
    build_image_encoder("micro").save_pretrained(root / "encoder", safe_serialization=True)
    vae = load_vae(str(root / "vae")).eval()
    enc = CLIPVisionModelWithProjection.from_pretrained(root / "encoder", use_safetensors=True).eval()
    config = unet_config("micro")
    config.update(in_channels=2 * vae.config.latent_channels, out_channels=vae.config.latent_channels)
    (root / "unet.json").write_text(json.dumps(config))
    save_file(build_unet(config).state_dict(), str(root / "unet.safetensors"))
    build_latent_cache(root / "cache", vae, enc, SIZE, clips=8, shard_clips=4, chunk=4, progress=False)
    return root


def _train(root: Path, mode: str, out: Path, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [str(WORKER), "--root", str(root), "--mode", mode, "--out", str(out), "--batch", str(2 // processes),
            "--steps", str(STEPS)]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        launcher = Path(sys.executable).with_name("accelerate")
        # `--multi_gpu` is accelerate's torchrun launcher; `--cpu` would start one plain process. On a machine
        # without CUDA the loops' Accelerator(cpu=True) joins the processes into a gloo group (MULTI_CPU).
        cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _relative_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    """|a - b| over |b - start|: how far apart two updates are, against the size of the update."""
    gap = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in b) ** 0.5
    update = sum(float((b[k].double() - start[k].double()).pow(2).sum()) for k in b) ** 0.5
    assert update > 0, "the reference run did not change the weights"
    return gap / update


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["denoise", "adversarial"])
def test_two_processes_equal_one_process_with_the_combined_batch(parts: Path, tmp_path: Path, mode: str) -> None:
    _train(parts, mode, tmp_path / "two", processes=2)
    _train(parts, mode, tmp_path / "one", processes=1)
    start = load_file(str(parts / "unet.safetensors"))
    two, one = (load_file(str(tmp_path / run / "state" / "unet.safetensors")) for run in ("two", "one"))
    # float rounding only (gloo's all-reduce sums in another order; Adam's first steps amplify tiny differences)
    assert _relative_gap(two, one, start) < 5e-3  # the bugs this catches gave 0.25-1.4
    if mode == "adversarial":
        heads = [load_file(str(tmp_path / run / "state" / "disc_heads.safetensors")) for run in ("two", "one")]
        # Adam's first steps move each weight by about +-lr: a rounding-level gradient near 0 can flip a few signs
        differing = sum(int(((heads[0][k] - heads[1][k]).abs() > 1e-5).sum()) for k in heads[1])
        assert differing < 1e-3 * sum(v.numel() for v in heads[1].values())
    for run in ("two", "one"):  # written once, by the main process: one trainer.json, one log row per step
        assert json.loads((tmp_path / run / "state" / "trainer.json").read_text())["step"] == STEPS
        rows = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines() if x.strip()]
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    two_log = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if x.strip()]
    assert all(r.get("clips", 2 * r["step"]) == 2 * r["step"] for r in two_log)  # clips count both processes


def test_row_draws_do_not_depend_on_how_the_batch_is_split() -> None:
    whole = randn(RowRandom.for_step(3, 7, batch=4), (4, 2, 5))
    halves = [randn(RowRandom.for_step(3, 7, batch=2, process_index=p), (2, 2, 5)) for p in (0, 1)]
    assert torch.equal(whole, torch.cat(halves))
    assert not torch.equal(halves[0], halves[1])  # each process draws its own rows' noise
    assert not torch.equal(whole, randn(RowRandom.for_step(3, 8, batch=4), (4, 2, 5)))  # and every step anew
    with pytest.raises(ValueError, match="rows"):
        randn(RowRandom.for_step(3, 7, batch=4), (3, 2))
