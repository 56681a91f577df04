"""scripts/qnn_runner.py: dry runs of every backend, parsing of each backend's recorded outputs, the CPU backend."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from explorer import export, qnn
from explorer import latency as lat
from explorer.models import unet_config
from explorer.qnn import reference as qnn_reference
from scripts import qnn_runner as runner

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AI Hub token, no QNN SDK, whatever the machine has."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "home" / "none.ini"))
    monkeypatch.delenv("QAI_HUB_API_TOKEN", raising=False)
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)


def _dry(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> str:
    work = tmp_path / "work"
    rc = runner.main(["--stage", "mobilevd", "--dry-run", "--work-dir", str(work), *extra])
    out = capsys.readouterr().out
    assert rc == 0 and not work.exists()  # a dry run executes nothing
    return out


def test_dry_run_qai_hub(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = _dry(capsys, tmp_path, "--backend", "qai-hub", "--compare")
    assert "python -m explorer.export --stage channel-funnels --scale full" in out
    assert "sample=(1, 14, 8, 32, 64)" in out and "encoder_hidden_states=(1, 1, 1024)" in out
    assert "hub.submit_compile_job(model=" in out and "channel-funnels-full.onnx'" in out
    assert "device=hub.Device('Samsung Galaxy S24 (Family)')" in out
    assert "options='--target_runtime qnn_context_binary --quantize_full_type w8a16 --quantize_io'" in out
    assert "calibration_data={'sample': [4 x float32 (1, 14, 8, 32, 64)]" in out
    assert "get_target_model()" in out and "options='--max_profiler_iterations 20'" in out
    assert "download_profile()" in out and "submit_inference_job(model=target_model" in out
    assert "ai-hub-full.json" in out
    fp16 = _dry(capsys, tmp_path, "--backend", "qai-hub", "--precision", "fp16", "--chipset",
                "qualcomm-snapdragon-8gen3", "--runs", "7")
    assert "--quantize_full_type float16" in fp16 and "calibration_data" not in fp16
    assert "hub.Device(attributes='chipset:qualcomm-snapdragon-8gen3')" in fp16 and "iterations 7" in fp16


def test_dry_run_qnn_sdk(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = _dry(capsys, tmp_path, "--backend", "qnn-sdk", "--serial", "ABC123")
    lines = out.splitlines()
    order = ["qnn-onnx-converter", "qnn-model-lib-generator", "qnn-context-binary-generator", "adb -s ABC123 push",
             "qnn-net-run --backend libQnnHtp.so --retrieve_context unet_ctx.bin", "adb -s ABC123 pull",
             'qnn-profile-viewer" --input_log']
    positions = [next(i for i, ln in enumerate(lines) if key in ln) for key in order]
    assert positions == sorted(positions)
    assert "--act_bitwidth 16 --weights_bitwidth 8" in out and "--profiling_level basic" in out
    assert '"$QNN_SDK_ROOT/bin/x86_64-linux-clang/qnn-onnx-converter"' in out  # copy-pasteable
    assert "libQnnHtpV75Skel.so" in out and '"soc_model": 57' in out
    fp16 = _dry(capsys, tmp_path, "--backend", "qnn-sdk", "--precision", "fp16")
    assert "--float_bitwidth 16" in fp16 and "fp16_relaxed_precision" in fp16 and "act_bitwidth" not in fp16


def test_dry_run_onnxruntime(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = _dry(capsys, tmp_path, "--backend", "onnxruntime", "--scale", "tiny", "--stages", "svd-512,mobilevd")
    assert out.count("onnxruntime.InferenceSession(") == 2 and "CPUExecutionProvider" in out
    assert "sample=(1, 14, 16, 16, 32)" in out  # tiny: 128x64 px, VAE factor 4, 8 + 8 latent channels
    assert "compare the onnxruntime output with torch" in out and "cpu-tiny.json" in out


def test_bad_precision_for_backend() -> None:
    with pytest.raises(SystemExit):
        runner.parse_args(["--backend", "onnxruntime", "--precision", "w8a16"])
    with pytest.raises(SystemExit):
        runner.parse_args(["--backend", "qai-hub", "--precision", "fp32"])


def test_qai_hub_without_token_is_a_clear_message(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qai_hub", types.ModuleType("qai_hub"))  # installed, but no token
    assert runner.main(["--stage", "mobilevd", "--backend", "qai-hub", "--no-write"]) == 2
    err = capsys.readouterr().err
    assert "needs your API token" in err and "qai-hub configure --api_token" in err and "--dry-run" in err
    assert "Traceback" not in err


def test_qai_hub_without_token_subprocess(tmp_path: Path) -> None:
    """As a user runs it: exit code 2 and a message, no traceback (qai-hub may or may not be installed)."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "QAIHUB_CLIENT_INI": str(tmp_path / "x.ini")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "qnn_runner.py"), "--stage", "mobilevd",
                           "--backend", "qai-hub", "--no-write"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "API token" in proc.stderr and "Traceback" not in proc.stderr


def test_qnn_sdk_without_sdk(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--stage", "mobilevd", "--backend", "qnn-sdk", "--no-write"]) == 2
    assert "QNN_SDK_ROOT" in capsys.readouterr().err


def test_parse_ai_hub_profile_fixture() -> None:
    parsed = qnn.parse_ai_hub_profile(json.loads((FIXTURES / "ai_hub_profile.json").read_text()))
    assert parsed["median_ms"] == pytest.approx(1783.450) and parsed["runs"] == 5
    assert parsed["min_ms"] == pytest.approx(1777.002) and parsed["max_ms"] == pytest.approx(1802.001)
    assert parsed["estimated_ms"] == pytest.approx(1779.876)
    assert parsed["peak_memory"] == pytest.approx([12.0, 1311768576 / 2**20])
    assert parsed["first_load_ms"] == pytest.approx(2843.211)
    assert parsed["compute_units"] == {"NPU": 5, "CPU": 1} and parsed["compute_unit"] == "NPU+CPU"
    old = qnn.parse_ai_hub_profile({"execution_summary": {"estimated_inference_time": 2100000,
                                                          "estimated_inference_peak_memory": 2**30},
                                    "execution_detail": [{"compute_unit": "NPU"}]})
    assert old["median_ms"] == 2100.0 and old["runs"] == 1 and old["peak_memory"] == [1024.0, 1024.0]
    with pytest.raises(ValueError, match="not an AI Hub profile"):
        qnn.parse_ai_hub_profile({"foo": 1})


def test_parse_qnn_profile_viewer_fixture() -> None:
    parsed = qnn.parse_qnn_profile_viewer((FIXTURES / "qnn_profile_viewer.txt").read_text())
    assert parsed["median_ms"] == pytest.approx(1783.214) and parsed["mean_ms"] == parsed["median_ms"]
    assert parsed["min_ms"] == pytest.approx(1770.042) and parsed["max_ms"] == pytest.approx(1821.775)
    assert parsed["first_load_ms"] == pytest.approx(1412.907)
    assert parsed["accelerator_ms"]["average"] == pytest.approx(1778.230)
    assert parsed["backend_version"].startswith("2.31.0")
    with pytest.raises(ValueError, match="Execute Stats"):
        qnn.parse_qnn_profile_viewer("nothing here")


def test_parse_ort_profile_fixture() -> None:
    parsed = qnn.parse_ort_profile(json.loads((FIXTURES / "ort_profile.json").read_text()))
    assert parsed["runs"] == 3 and 0 < parsed["min_ms"] <= parsed["median_ms"] <= parsed["max_ms"]
    assert {"Conv", "Softmax", "MatMul"} <= set(parsed["ms_per_op_type"])
    assert parsed["peak_memory"] and parsed["peak_memory"][0] > 0


def test_failures_are_classified() -> None:
    assert qnn.classify_failure((FIXTURES / "qnn_net_run_oom.log").read_text()) == "oom"
    assert qnn.classify_failure("Job failed: the model ran Out Of Memory on device") == "oom"
    assert qnn.classify_failure("OOM while loading") == "oom"
    assert qnn.classify_failure("Graph finalize failed: op not supported in room 4") == "failed"


@pytest.mark.parametrize(("backend", "fixture", "median"), [
    ("qai-hub", "ai_hub_profile.json", 1783.450),
    ("qnn-sdk", "qnn_profile_viewer.txt", 1783.214),
    ("onnxruntime", "ort_profile.json", None),
])
def test_records_from_recorded_profiles(tmp_path: Path, backend: str, fixture: str, median: float | None) -> None:
    out = tmp_path / "rec.json"
    args = ["--stage", "mobilevd", "--backend", backend, "--from-profile", str(FIXTURES / fixture), "--out", str(out),
            "--weights-note", "random (test)"]
    if backend == "onnxruntime":
        args += ["--scale", "micro"]
    assert runner.main(args) == 0
    (rec,) = lat.read_records(out)
    assert rec.stage == "channel-funnels" and rec.status == "passed" and rec.source.startswith("measured here")
    assert rec.includes == lat.INCLUDES and rec.nfe == 1 and rec.batch == 1 and "parsed from" in rec.notes
    if median is not None:
        assert rec.median_ms == pytest.approx(median, abs=1e-3) and rec.compute_unit.startswith("NPU")
        assert rec.precision == "w8a16" and rec.os.startswith("Android")
    if backend == "qai-hub":
        assert rec.chipset == "Snapdragon 8 Gen 3" and rec.device == "Samsung Galaxy S24 (Family)"
        assert rec.peak_memory is not None and rec.compute_units == {"NPU": 5, "CPU": 1}
    if backend == "qnn-sdk":
        assert "average" in rec.notes and rec.runtime_version.startswith("QNN 2.31")


def test_onnxruntime_backend_measures_and_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    cfg = unet_config("micro")
    small = dict(cfg, down_block_types=cfg["down_block_types"][2:], up_block_types=cfg["up_block_types"][:2],
                 block_out_channels=(32, 32), num_attention_heads=(2, 2), layers_per_block=1)
    loaded = export.load_stage_unet("svd-512", "micro", None, unet_config=small)
    inputs = export.export_inputs(loaded.unet, "micro", 32, 32, 4)
    result = export.export_onnx(loaded.unet, tmp_path / "m.onnx", inputs)

    def reference(job, args, feeds):  # torch on the very model that was exported
        with torch.no_grad():
            return export.UNetForExport(loaded.unet)(*(torch.from_numpy(feeds[n]) for n in export.INPUT_NAMES)
                                                     ).double().numpy()

    monkeypatch.setattr(qnn_reference, "torch_reference", reference)
    out = tmp_path / "cpu.json"
    rc = runner.main(["--stage", "svd-512", "--scale", "micro", "--backend", "onnxruntime", "--onnx",
                      str(result.folder), "--size", "32x32", "--frames", "4", "--runs", "2", "--warmup", "1",
                      "--compare", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert rc == 0
    (rec,) = lat.read_records(out)
    assert rec.runtime == "onnxruntime (CPUExecutionProvider)" and rec.runs == 2 and rec.precision == "fp32"
    assert rec.extra["vs_torch"]["rel_error"] < 1e-4 and "relative error vs torch" in rec.notes
    assert rec.weights.startswith("as in the given ONNX model") and rec.speedup_vs_baseline == 1.0


def test_onnxruntime_several_stages_are_timed_in_interleaved_rounds(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = unet_config("micro")
    small = dict(cfg, down_block_types=cfg["down_block_types"][2:], up_block_types=cfg["up_block_types"][:2],
                 block_out_channels=(32, 32), num_attention_heads=(2, 2), layers_per_block=1)
    loaded = export.load_stage_unet("svd-512", "micro", None, unet_config=small)
    result = export.export_onnx(loaded.unet, tmp_path / "m.onnx",
                                export.export_inputs(loaded.unet, "micro", 32, 32, 4))
    args = runner.parse_args(["--backend", "onnxruntime", "--scale", "micro", "--runs", "3", "--warmup", "0",
                              "--no-compare", "--no-write"])
    jobs = [qnn.make_job(s, "micro", tmp_path / "work", str(result.folder), (32, 32), 4)
            for s in ("svd-512", "mobilevd")]
    jobs.append(qnn.make_job("lowres-ft", "micro", tmp_path / "work", str(tmp_path / "missing.onnx"), (32, 32), 4))
    recs = qnn.execute_ort_interleaved(jobs, args, "run-1")
    lat.add_speedups(recs)
    assert [r.status for r in recs] == ["passed", "passed", "failed"]  # a broken stage keeps the others
    assert all(r.runs == 3 and "interleaved" in r.notes for r in recs[:2])
    assert recs[0].speedup_vs_baseline == 1.0 and recs[1].speedup_vs_baseline is not None
