"""scripts/benchmark.py: records with the svd-512 baseline measured in the same run, synchronised timing."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from explorer import benchmarking
from explorer import latency as lat
from explorer import stages as registry
from scripts import benchmark as bench

ROOT = Path(__file__).resolve().parents[1]



def test_micro_stages_write_valid_records_with_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu-micro.json"
    rc = bench.main(["--stages", "mobilevd,optimized-xattn", "--scale", "micro", "--size", "32x32", "--frames", "4",
                     "--runs", "2", "--warmup", "1", "--threads", "1", "--out", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "x svd-512" in table and "channel-funnels" in table
    recs = lat.read_records(out)  # validates every record
    assert [r.stage for r in recs] == ["svd-512", "channel-funnels", "optimized-xattn"]
    assert len({r.run_id for r in recs}) == 1 and recs[0].speedup_vs_baseline == 1.0
    for r in recs:
        assert r.status == "passed" and r.runs == 2 and r.resolution == "32x32" and r.frames == 4
        assert r.min_ms <= r.median_ms <= r.max_ms and r.speedup_vs_baseline == pytest.approx(
            recs[0].median_ms / r.median_ms, rel=1e-2)
        assert r.compute_unit == "CPU" and r.precision == "fp32" and r.runtime == "pytorch eager"
        assert "use_fast_temporal_convs" in r.notes and r.weights.startswith("random (seed 0)")
        assert r.command.startswith("python scripts/benchmark.py --stages mobilevd")


def test_stage_list_always_starts_with_the_baseline() -> None:
    assert benchmarking.parse_stages("mobilevd") == ["svd-512", "channel-funnels"]
    assert benchmarking.parse_stages("channel-funnels,svd-512,mobilevd") == ["svd-512", "channel-funnels"]
    everything = benchmarking.parse_stages("all")
    assert everything[0] == "svd-512" and sorted(everything) == sorted(registry.SLUGS)
    with pytest.raises(ValueError):
        benchmarking.parse_stages("nope")


def test_one_failing_stage_keeps_the_others(tmp_path: Path) -> None:
    cands = [benchmarking.Candidate("svd-512", "eager", 8, 8, 1), benchmarking.Candidate("mobilevd", "eager", 8, 8, 1)]

    def prepare(c: benchmarking.Candidate) -> None:
        if c.stage == "mobilevd":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        c.fn, c.inputs = (lambda x: x + 1), (torch.zeros(4),)

    benchmarking.measure(cands, torch.device("cpu"), warmup=1, runs=3, order="interleaved", prepare=prepare)
    assert cands[0].status == "passed" and len(cands[0].times_ms) == 3
    assert cands[1].status == "oom" and cands[1].times_ms == [] and "out of memory" in cands[1].error


def test_paired_rounds_alternate_each_modes_baseline_with_one_stage_at_a_time() -> None:
    """Full-scale models do not all fit in memory: the baseline of each mode stays loaded, every other stage is
    loaded, alternated with it and released before the next; each ratio uses its own rounds' baseline times."""
    calls: list[str] = []
    cands = [benchmarking.Candidate(s, m, 8, 8, 1) for m in ("eager", "ort") for s in ("svd-512", "a", "b")]

    def prepare(c: benchmarking.Candidate) -> None:
        live = [f"{x.stage}/{x.mode}" for x in cands if x.fn is not None]
        assert len(live) <= 1, f"loading {c.stage}/{c.mode} beside {live}"
        c.fn = lambda name=f"{c.stage}/{c.mode}": calls.append(name)

    benchmarking.measure(cands, torch.device("cpu"), warmup=0, runs=2, order="paired", prepare=prepare)
    assert calls == ["svd-512/eager", "a/eager"] * 2 + ["svd-512/eager", "b/eager"] * 2 \
        + ["svd-512/ort", "a/ort"] * 2 + ["svd-512/ort", "b/ort"] * 2
    assert all(len(c.baseline_ms) == 2 for c in cands if c.stage != "svd-512")
    assert all(len(c.times_ms) == (4 if c.stage == "svd-512" else 2) for c in cands)


def test_onnxruntime_and_paired_rounds_write_throughput_and_memory(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu-micro.json"
    rc = bench.main(["--stages", "mobilevd", "--scale", "micro", "--size", "32x32", "--frames", "4", "--runs", "2",
                     "--warmup", "1", "--threads", "1", "--mode", "eager,ort", "--order", "paired",
                     "--out", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    head = lines[0].split("  ")
    assert [h.strip() for h in head if h.strip()][-4:] == ["peak MB", "TFLOP/s", "of peak", "status"]
    for line in lines[2:6]:  # every number in its own column (they once ran together: 74077.43069422.057...)
        assert len(line.split()) == 12, line
    assert "matmul peak of this CPU in this run" in table
    recs = {(r.stage, r.runtime): r for r in lat.read_records(out)}
    assert set(recs) == {("svd-512", "pytorch eager"), ("svd-512", "onnxruntime"),
                         ("channel-funnels", "pytorch eager"), ("channel-funnels", "onnxruntime")}
    for (stage, _runtime), r in recs.items():
        assert r.status == "passed" and r.peak_memory is not None and r.peak_memory[0] >= 0
        assert r.extra["achieved_tflops_per_s"] == pytest.approx(
            r.extra["tflops_per_nfe"] / (r.median_ms / 1e3), rel=1e-3)
        assert 0 < r.extra["of_matmul_peak"] and r.extra["matmul_peak_tflops_per_s"] > 0
        if stage != "svd-512":
            paired = r.extra["paired_baseline_ms"]
            assert len(paired) == 2 and "paired rounds" in r.notes
            assert r.speedup_vs_baseline == pytest.approx(statistics.median(paired) / r.median_ms, rel=1e-3)
    assert recs[("channel-funnels", "onnxruntime")].runtime_version.startswith("onnxruntime ")
    # FLOPs per NFE are the one cost model's, the same for both runtimes
    assert recs[("channel-funnels", "onnxruntime")].extra["tflops_per_nfe"] == \
        recs[("channel-funnels", "pytorch eager")].extra["tflops_per_nfe"]


def test_cpu_timer_and_oom_detection() -> None:
    timer = benchmarking.Timer(torch.device("cpu"))
    assert timer(lambda x: x * 2, (torch.ones(3),)) > 0
    assert benchmarking.is_oom(MemoryError()) and not benchmarking.is_oom(ValueError("shape mismatch"))


def test_cuda_request_without_cuda_is_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert bench.main(["--device", "cuda", "--no-write"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _gpu_run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_prepared_gpu_run_handles_arguments_and_writes_records(tmp_path: Path) -> None:
    """scripts/gpu_run.sh (issue 16) on the CPU at the micro scale: one phase per mode, records written where asked
    and copied to --out, bad arguments refused with status 2, a phase the budget cannot hold skipped."""
    records, out = tmp_path / "r.json", tmp_path / "out"
    done = _gpu_run("--skip-install", "--device", "cpu", "--scale", "micro", "--dtype", "fp32", "--modes", "eager",
                    "--records", str(records), "--out", str(out), "--warmup", "0", "--runs", "1", "--phase-s", "1",
                    "--", "--size", "32x32", "--frames", "4", "--stages", "mobilevd", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    recs = lat.read_records(records)
    assert [r.stage for r in recs] == ["svd-512", "channel-funnels"] and all(r.status == "passed" for r in recs)
    assert all("scripts/gpu_run.sh phase eager" in r.notes for r in recs)
    assert (out / "r.json").read_text() == records.read_text()
    for bad in (["--runs", "x"], ["--modes", "eager,turbo"], ["--scale", "huge"], ["--frobnicate"]):
        res = _gpu_run("--skip-install", *bad, tmp_path=tmp_path)
        assert res.returncode == 2 and "gpu_run.sh:" in res.stderr, (bad, res.stderr)
    skipped = _gpu_run("--skip-install", "--device", "cpu", "--scale", "micro", "--modes", "eager", "--records",
                       str(tmp_path / "none.json"), "--budget-s", "10", "--phase-s", "100", tmp_path=tmp_path)
    assert skipped.returncode == 0 and "skipping phase 'eager'" in skipped.stdout
    assert not (tmp_path / "none.json").exists()
