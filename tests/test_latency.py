"""Latency record schema: validation, files, the paper's rows and the shipped records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer import latency as lat
from explorer import stages as registry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "latency"


def _measured(**kw: object) -> lat.LatencyRecord:
    base: dict[str, object] = dict(
        stage="mobilevd", scale="tiny", resolution="128x64", frames=14, device="test CPU", runtime="pytorch eager",
        precision="fp32", compute_unit="CPU", status="passed", source="measured here: test", median_ms=10.0,
        min_ms=9.0, max_ms=12.0, runs=3, run_id="r1",
    )
    base.update(kw)
    return lat.LatencyRecord(**base)  # type: ignore[arg-type]


def test_paper_records_follow_table_2() -> None:
    rows = lat.paper_records()
    assert all(not lat.validate_record(r.to_dict()) for r in rows)
    gpu = {r.stage: r.median_ms for r in rows if r.compute_unit == "GPU"}
    phone = {r.stage: r for r in rows if r.compute_unit == "NPU"}
    assert gpu == {s.slug: float(s.paper.gpu_ms) for s in registry.STAGES}
    assert gpu["svd-512"] == 82 and gpu["channel-funnels"] == 45
    for s in registry.STAGES:
        rec = phone[s.slug]
        assert rec.chipset == "Snapdragon 8 Gen 3" and rec.device == "Xiaomi 14 Pro"
        if s.paper.phone_ms == registry.OOM:
            assert rec.status == "oom" and rec.median_ms is None
        else:
            assert rec.status == "passed" and rec.median_ms == s.paper.phone_ms
    assert phone["channel-funnels"].median_ms == 1780 and phone["svd"].status == "oom"
    assert all(r.source.startswith("paper") and r.includes == lat.INCLUDES and r.nfe == 1 for r in rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "fast"}, "status"),
        ({"nfe": 2}, "nfe"),
        ({"resolution": "512-256"}, "resolution"),
        ({"min_ms": 11.0}, "min_ms <= median_ms"),
        ({"runs": None}, "runs"),
        ({"median_ms": None}, "median_ms"),
        ({"median_ms": -1.0}, "positive"),
        ({"stage": "nope"}, "unknown stage"),
        ({"precision": "int3"}, "precision"),
        ({"source": "vibes"}, "source"),
        ({"peak_memory": [5.0, 1.0]}, "peak_memory"),
        ({"component": "vae"}, "component"),
    ],
)
def test_validation_rejects_bad_records(change: dict[str, object], message: str) -> None:
    data = _measured().to_dict()
    data.update(change)
    errors = lat.validate_record(data)
    assert any(message in e for e in errors), errors
    with pytest.raises(ValueError, match="invalid latency record"):
        lat.LatencyRecord.from_dict(data)


def test_missing_fields_and_oom_rows() -> None:
    data = _measured().to_dict()
    del data["device"]
    assert any("missing field 'device'" in e for e in lat.validate_record(data))
    oom = _measured(status="oom", median_ms=None, min_ms=None, max_ms=None, runs=None)
    assert lat.validate_record(oom.to_dict()) == []
    assert lat.validate_record([1, 2]) != []


def test_write_merge_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cpu.json"
    a, b = _measured(stage="svd-512"), _measured(stage="mobilevd", device="other CPU")
    lat.write_records(path, [a, b])
    newer = _measured(stage="svd-512", median_ms=11.0, max_ms=13.0)
    lat.write_records(path, [newer])
    back = lat.read_records(path)
    assert [(r.stage, r.median_ms) for r in back] == [("channel-funnels", 10.0), ("svd-512", 11.0)]
    assert json.loads(path.read_text())["format"] == lat.FORMAT
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="refusing"):
        lat.write_records(path, [_measured(min_ms=20.0)])


def test_load_records_adds_paper_rows_and_names_bad_files(tmp_path: Path) -> None:
    assert len(lat.load_records(tmp_path)) == len(lat.paper_records())
    lat.write_records(tmp_path / "a.json", [_measured()])
    assert len(lat.load_records(tmp_path)) == len(lat.paper_records()) + 1
    assert len(lat.load_records(tmp_path, include_paper=False)) == 1
    (tmp_path / "b.json").write_text(json.dumps({"format": lat.FORMAT, "records": [{"stage": "svd"}]}))
    with pytest.raises(ValueError, match=r"b\.json, record 0"):
        lat.load_records(tmp_path)


def test_speedups_are_within_one_run() -> None:
    recs = [_measured(stage="svd-512", median_ms=20.0, max_ms=21.0), _measured(stage="mobilevd", median_ms=10.0),
            _measured(stage="mobilevd", median_ms=5.0, min_ms=4.0, max_ms=6.0, run_id="other")]
    lat.add_speedups(recs)
    assert recs[0].speedup_vs_baseline == 1.0 and recs[1].speedup_vs_baseline == 2.0
    assert recs[2].speedup_vs_baseline is None  # no baseline in its run: no ratio across runs


def test_summarize_and_table() -> None:
    stats = lat.summarize_ms([3.0, 1.0, 2.0, 10.0])
    assert stats == {"median_ms": 2.5, "min_ms": 1.0, "max_ms": 10.0, "runs": 4}
    with pytest.raises(ValueError):
        lat.summarize_ms([])
    text = lat.format_table(lat.paper_records())
    assert "OOM" not in text and "oom" in text and "UNet only, one NFE, batch 1" in text


def test_shipped_records_are_valid_and_paper_file_is_current() -> None:
    files = sorted(SHIPPED.glob("*.json"))
    assert (SHIPPED / lat.PAPER_FILE) in files
    paper = lat.read_records(SHIPPED / lat.PAPER_FILE)
    assert [r.to_dict() for r in paper] == [r.to_dict() for r in lat.paper_records()]
    measured = [r for f in files if f.name != lat.PAPER_FILE for r in lat.read_records(f)]
    assert measured, "no measured records shipped"
    for rec in measured:
        assert rec.source.startswith("measured here") and rec.command and rec.date and rec.weights
    # every measured run carries its own svd-512 baseline, so its ratios are measured together
    for run_id in {r.run_id for r in measured if r.run_id and r.run_id.startswith("benchmark")}:
        assert any(r.stage == lat.BASELINE_STAGE and r.run_id == run_id for r in measured)


def test_cli_prints_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert lat.main(["--dir", str(tmp_path)]) == 0
    assert "svd-512" in capsys.readouterr().out
    assert lat.main(["--dir", str(tmp_path), "--write-paper"]) == 0
    assert lat.read_records(tmp_path / lat.PAPER_FILE)
