"""The path on the hub: a checkpoints repo loads offline from a hub cache (as huggingface_hub lays it out), a
partial download is one stage unavailable, the model card's metadata parses, publish --dry-run needs no token."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.components import build_pipeline
from explorer.hub import CheckpointsError, model_card, publish, publish_files, resolve_checkpoints
from explorer.pipeline import StageRecord, save_stage

ROOT = Path(__file__).resolve().parents[1]
REPO = "someone/mobilevd-micro"
SHA = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    shared = {n: root / "_shared" / n for n in ("vae", "image_encoder", "feature_extractor", "scheduler")}
    for i, slug in enumerate(("svd", "lowres-ft")):
        rec = StageRecord(slug=slug, parent=None if slug == "svd" else "svd", scale="micro", width=32, height=16,
                          steps=2, extra={"training": {"steps": 3, "size": [32, 16], "batch": 1}})
        save_stage(build_pipeline("micro", seed=0) if i == 0 else {"unet": build_pipeline("micro", seed=i).unet},
                   root / slug, rec, shared=shared)
    (root / "svd" / "metrics.json").write_text('{"stage": "svd", "fvd_proxy": 12.5, "first_frame_psnr": 20.1, '
                                              '"motion_spearman": 0.3, "clips": 64}')
    return root


def _hub_cache(cache: Path, src: Path) -> None:
    entry = cache / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / SHA)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(SHA)


def test_checkpoints_repo_loads_offline_from_the_cache(checkpoints: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer.serving import StageCatalog

    cache = tmp_path / "hub"
    _hub_cache(cache, checkpoints)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snapshot = resolve_checkpoints(REPO)
    assert snapshot.name == SHA and (snapshot / "svd" / "stage.json").is_file()
    catalog = StageCatalog(REPO, placeholders="off")
    kinds = {slug: e.kind for slug, e in catalog.entries.items() if slug in ("svd", "lowres-ft")}
    assert kinds == {"svd": "trained", "lowres-ft": "trained"}
    pipe, record = catalog.pipeline("lowres-ft")
    assert record.slug == "lowres-ft" and pipe.unet is not None
    assert catalog.entries["lowres-ft"].status == "ready"


def test_a_partial_download_is_that_stage_unavailable(checkpoints: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer.serving import StageCatalog

    cache = tmp_path / "hub"
    _hub_cache(cache, checkpoints)
    snap = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / SHA
    (snap / "lowres-ft" / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # the download stopped here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    catalog = StageCatalog(REPO, placeholders="off")
    catalog.pipeline("svd")
    assert catalog.entries["svd"].status == "ready"
    with pytest.raises(RuntimeError, match="unavailable"):
        catalog.pipeline("lowres-ft")
    broken = catalog.entries["lowres-ft"]
    assert broken.status == "unavailable" and "safetensors" in broken.reason


def test_unknown_repo_or_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointsError, match="offline"):
        resolve_checkpoints("someone/absent")
    assert resolve_checkpoints(str(tmp_path / "no" / "such")) == tmp_path / "no" / "such"  # a folder, empty
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--checkpoints", "someone/absent"],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1",
                               "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert proc.returncode != 0 and "cannot use --checkpoints" in proc.stderr and "Traceback" not in proc.stderr


def test_model_card_metadata_and_table(checkpoints: Path) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard(model_card(checkpoints, REPO))
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers" and data["pipeline_tag"] == "image-to-video"
    assert "mobilevd" in data["tags"] and "image-to-video" in data["tags"]
    assert "base_model" not in data  # trained from scratch: no hub model it derives from
    text = card.text
    assert "| `svd` | 32x16 |" in text and "12.50" in text and "| `lowres-ft` |" in text
    assert "Limits" in text and "FLOPs = 2 x" in text


def test_publish_dry_run_writes_card_and_file_list(checkpoints: Path, tmp_path: Path) -> None:
    out = publish(checkpoints, REPO, dry_run=True, out=tmp_path / "pub")
    assert out["dry_run"] and out["files"] == len(publish_files(checkpoints))
    files = (tmp_path / "pub" / "files.txt").read_text().split()
    assert "svd/stage.json" in files and "_shared/vae/config.json" in files
    assert all(f.endswith((".json", ".safetensors")) for f in files)
    assert (tmp_path / "pub" / "README.md").read_text().startswith("---\n")
    with pytest.raises(CheckpointsError):
        publish(checkpoints, "not a repo", dry_run=True, out=tmp_path / "x")
