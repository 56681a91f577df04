"""The repository itself: what a Hugging Face Space (a git remote) accepts and what a clone downloads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE_FILE_LIMIT = 10 * 2**20  # a Space's git remote refuses larger files unless they are stored with Git LFS
CHECKPOINTS_BUDGET = 100 * 2**20  # the shipped tiny path, every stage and the shared components


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_every_tracked_file_fits_a_space_push() -> None:
    too_big = {str(p.relative_to(ROOT)): p.stat().st_size for p in _tracked_files() if p.stat().st_size
               >= SPACE_FILE_LIMIT}
    assert not too_big, f"files over 10 MB (store weights as float16: scripts/store_weights.py): {too_big}"


def test_shipped_checkpoints_stay_within_budget() -> None:
    total = sum(p.stat().st_size for p in _tracked_files() if p.relative_to(ROOT).parts[0] == "checkpoints")
    assert 0 < total <= CHECKPOINTS_BUDGET, f"checkpoints/ holds {total / 2**20:.1f} MB"


def test_readme_quality_table_matches_the_shipped_metrics() -> None:
    """The README's per-stage table repeats each stage folder's metrics.json (one value per quantity everywhere):
    FVD-proxy, first-frame PSNR, consecutive-frame PSNR and motion Spearman, to the table's two decimals."""
    import json
    import re

    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if re.match(r"\| `[a-z0-9-]+`", line)]
    checked = 0
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 10:  # the quality table: stage, NFE, size, tiny, full, FVD-proxy, f0, consecutive, rho, base
            continue
        slug = re.match(r"`([a-z0-9-]+)`", cells[0]).group(1)
        metrics = json.loads((ROOT / "checkpoints" / slug / "metrics.json").read_text())
        for cell, key in zip(cells[5:9], ("fvd_proxy", "first_frame_psnr", "consecutive_psnr", "motion_spearman"),
                             strict=True):
            assert abs(float(cell) - metrics[key]) <= 0.0051, (slug, key, cell, metrics[key])
        checked += 1
    assert checked == 9
