"""The whole path end to end on the micro model (``build_path --quick``): every stage trains, exports, loads and
generates; a second run skips finished stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import stages as registry
from explorer.pipeline import generate, load_stage
from explorer.training.path import Plan, build_path


@pytest.fixture(scope="module")
def quick_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("path")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_path(Plan.quick(), root / "ckpt", root / "runs", progress=False)
    finally:
        torch.set_num_threads(before)
    return root


@pytest.mark.slow
def test_every_stage_exported_loads_and_generates(quick_path: Path) -> None:
    image = np.full((16, 32, 3), 128, dtype=np.uint8)
    for slug in registry.SLUGS:
        pipe, record = load_stage(quick_path / "ckpt" / slug)
        assert record.slug == slug
        names = [t.name for t in record.transforms]
        assert names == [t.name for t in registry.architecture_transforms(slug)], slug
        res = generate(pipe, image, width=record.width, height=record.height, steps=1, max_guidance=1.0, seed=0)
        assert res.frames.shape[0] == 14 and res.nfe == 1
    gates = (quick_path / "ckpt" / "temporal-pruning" / "gates.json").read_text()
    assert '"history"' in gates and '"kept"' in gates


@pytest.mark.slow
def test_rerun_skips_finished_stages(quick_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = build_path(Plan.quick(), quick_path / "ckpt", quick_path / "runs", progress=False)
    assert report == {}
    assert capsys.readouterr().out.count("done already") == 12
