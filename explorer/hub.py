"""The trained path on the Hugging Face hub: fetch a checkpoints repo, write its model card, publish it.

A *checkpoints repo* has the layout of this project's ``checkpoints/`` folder (stage folders plus ``_shared/``),
so ``python app.py --checkpoints OWNER/NAME`` and ``scripts/compare.py --checkpoints OWNER/NAME`` use exactly the
loading code of a local folder: :func:`resolve_checkpoints` turns the id into a local snapshot through
``huggingface_hub.snapshot_download`` (JSON, text and safetensors only; ``HF_HUB_OFFLINE`` and the cache are
honoured). A stage whose files did not all arrive is a broken stage folder, which the app reports as that stage
unavailable. :func:`publish` uploads the stage folders and ``_shared`` with ``upload_folder`` and a model card
written by :func:`model_card` (``--dry-run`` writes the card and the file list without a token).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from explorer import stages as registry
from explorer.pipeline import HubDownloadError, download_snapshot, is_hub_id, training_summary

CARD_TAGS: tuple[str, ...] = ("mobilevd", "stable-video-diffusion", "image-to-video", "video-diffusion",
                              "model-compression", "tiny")
# Files a checkpoints repo holds (and the patterns fetched): configs, records, safetensors weights, the card.
UPLOAD_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "README.md")


class CheckpointsError(ValueError):
    """A ``--checkpoints`` value that is neither a local folder nor a reachable hub repo."""


def resolve_checkpoints(spec: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                        revision: str | None = None, local_files_only: bool | None = None) -> Path:
    """A local checkpoints folder for ``spec``: the folder itself, or the snapshot of hub repo ``OWNER/NAME``.

    A path that does not exist (yet) stays a path -- an empty checkpoints folder, no stages -- unless it reads as
    ``OWNER/NAME`` and its ``OWNER`` is not a local folder."""
    path = Path(spec).expanduser()
    text = str(spec)
    if path.is_dir() or not is_hub_id(text) or path.parent.is_dir():
        return path
    try:
        return download_snapshot(text, UPLOAD_PATTERNS, revision, cache_dir, local_files_only)
    except HubDownloadError as exc:
        raise CheckpointsError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------- model card
def _stage_rows(checkpoints: Path) -> list[dict[str, Any]]:
    from explorer.flops import stage_flops  # meta-device counts: no weights touched

    rows = []
    for slug in registry.SLUGS:
        folder = checkpoints / slug
        if not (folder / "stage.json").is_file():
            continue
        record = json.loads((folder / "stage.json").read_text())
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        try:
            full = stage_flops(slug, scale="full").tflops
        except Exception:  # noqa: BLE001 - a card is still written without the number
            full = None
        training = (record.get("extra") or {}).get("training")
        rows.append({"slug": slug, "size": f"{record.get('width')}x{record.get('height')}",
                     "steps": record.get("steps"), "cfg": float(record.get("max_guidance", 1.0)) > 1.0,
                     "full_tflops": full, "metrics": metrics, "training": training})
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def model_card(checkpoints: str | Path, repo_id: str) -> str:
    """The repo's README.md: hub metadata (YAML) and what the tiny path is, measures and cannot do."""
    from huggingface_hub import ModelCard, ModelCardData

    checkpoints = Path(checkpoints)
    rows = _stage_rows(checkpoints)
    data = ModelCardData(library_name="diffusers", pipeline_tag="image-to-video", tags=list(CARD_TAGS),
                         model_name=repo_id.split("/")[-1])
    lines = [
        f"# {repo_id}: the tiny MobileVD compression path",
        "",
        "Every stage of [Mobile Video Diffusion](https://arxiv.org/abs/2412.07583)'s compression of Stable Video "
        "Diffusion, trained from scratch by the MobileVD Explorer project on a 2-core CPU at a tiny "
        "scale (the paper's pixel sizes / 4, a 4x VAE), so that each technique can be run, compared and inspected "
        "offline. These are **not** SVD's weights and not a usable video model: they are small models trained on "
        "synthetic camera motion over 11 photographs.",
        "",
        "Load a stage with the explorer (`pip install -r requirements.txt` in its repository):",
        "",
        "```python",
        "from explorer.pipeline import load_stage, generate",
        f"pipe, record = load_stage('{repo_id}', subfolder='channel-funnels')  # = mobilevd; any stage folder below",
        "clip = generate(pipe, 'photo.jpg', seed=0).frames          # (14, H, W, 3) uint8",
        "```",
        "",
        f"or the whole explorer: `python app.py --checkpoints {repo_id}`.",
        "",
        "## Stages",
        "",
        "FLOPs = 2 x multiply-accumulates for one UNet evaluation (NFE), batch 1, 14 frames, UNet only, counted on "
        "the full-size SVD architecture with each stage's transforms (meta device, no weights). Metrics: measured "
        "by `scripts/evaluate.py` on the fixed test set of held-out photographs (FVD-proxy: a small video "
        "network trained by the project, not I3D FVD; first-frame PSNR against the VAE round trip).",
        "",
        "| stage | size (tiny) | steps | CFG | TFLOPs/NFE at full scale | FVD-proxy | first-frame PSNR dB | "
        "motion Spearman | clips | how it was trained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| `{r['slug']}` | {r['size']} | {r['steps']} | {'yes' if r['cfg'] else 'no'} | "
                     f"{_fmt(r['full_tflops'])} | {_fmt(m.get('fvd_proxy'))} | {_fmt(m.get('first_frame_psnr'))} | "
                     f"{_fmt(m.get('motion_spearman'))} | {_fmt(m.get('clips'))} | {training_summary(r['training'])} |")
    if not rows:
        lines.append("| (no stage folders) | | | | | | | | | |")
    lines += [
        "",
        "## Limits",
        "",
        "- Tiny: UNet widths 32-64 (SVD: 320-1280), 128x64 and 256x144 pixels, 14 frames; trained on rendered "
        "camera motion (pans, zooms, rotations, moving cut-outs) over 11 bundled photographs, not on real video.",
        "- Quality numbers are for comparing the stages with each other, not with the paper's FVDs.",
        "- The one-step stages are adversarially finetuned at a tiny budget; see the explorer's docs/training.md for "
        "what limits them.",
        "- Weights are safetensors only; nothing in this repository runs code when loaded.",
        "",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def publish_files(checkpoints: str | Path) -> list[str]:
    """The files a publish uploads: every stage folder and ``_shared`` (configs, records, safetensors)."""
    checkpoints = Path(checkpoints)
    roots = [checkpoints / "_shared"] + [checkpoints / s for s in registry.SLUGS]
    files = []
    for root in roots:
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*")):
            if f.is_file() and (f.suffix in (".json", ".safetensors")):
                files.append(f.relative_to(checkpoints).as_posix())
    return files


def publish(checkpoints: str | Path, repo_id: str, dry_run: bool = False, out: str | Path | None = None,
            token: str | None = None, private: bool = False) -> dict[str, Any]:
    """Upload the path to ``repo_id`` (created if absent). ``dry_run``: write ``README.md`` and ``files.txt`` to
    ``out`` instead, with no network and no token."""
    if not is_hub_id(repo_id):
        raise CheckpointsError(f"{repo_id!r} is not a hub repo id (OWNER/NAME)")
    checkpoints = Path(checkpoints)
    files = publish_files(checkpoints)
    if not files:
        raise CheckpointsError(f"no stage folders under {checkpoints}")
    card = model_card(checkpoints, repo_id)
    if dry_run:
        folder = Path(out or "runs/publish")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.md").write_text(card)
        (folder / "files.txt").write_text("\n".join(files) + "\n")
        return {"dry_run": True, "card": str(folder / "README.md"), "files": len(files),
                "bytes": sum((checkpoints / f).stat().st_size for f in files)}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    allow = [f"{Path(f).parts[0]}/**" for f in files]
    info = api.upload_folder(folder_path=str(checkpoints), repo_id=repo_id, allow_patterns=sorted(set(allow)),
                             ignore_patterns=["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "_partial/**"],
                             commit_message="MobileVD Explorer: tiny compression path")
    return {"dry_run": False, "repo": repo_id, "files": len(files), "commit": str(info)}


__all__ = ["CheckpointsError", "is_hub_id", "model_card", "publish", "publish_files", "resolve_checkpoints"]
