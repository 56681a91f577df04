"""scripts/evaluate.py end to end on micro random stage folders (2 clips, 1-2 steps): JSON contract, baselines,
step overrides, metrics.json, skipped stages, and the --i3d path with a stand-in TorchScript detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from explorer import evaluation
from explorer.components import build_pipeline
from explorer.fvd_proxy import ProxyConfig, ProxyNet, save_proxy
from explorer.pipeline import StageRecord, save_stage
from scripts import evaluate as evaluate_script

SHARED = ("vae", "image_encoder", "feature_extractor", "scheduler")
REQUIRED = {"stage", "nfe", "clips", "fvd_proxy", "first_frame_psnr", "motion_spearman", "seconds_per_clip",
            "resolution", "source", "command"}


class StandInI3D(torch.nn.Module):
    """Same call signature as the StyleGAN-V TorchScript I3D (videos, rescale, resize, return_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features or x.shape[3] != 224:
            raise RuntimeError("unexpected I3D call convention")
        return self.proj(x.mean(dim=(2, 3, 4)))


@pytest.fixture(scope="module")
def ev():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield evaluate_script
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two micro stage folders sharing components (svd at 48x24, lowres-ft at 32x16) and a random proxy net."""
    root = tmp_path_factory.mktemp("eval")
    ckpt = root / "checkpoints"
    pipe = build_pipeline("micro", seed=0)
    shared = {n: ckpt / "_shared" / n for n in SHARED}
    for slug, (w, h) in (("svd", (48, 24)), ("lowres-ft", (32, 16))):
        rec = StageRecord(slug=slug, scale="micro", width=w, height=h, frames=14, steps=2, min_guidance=1.0,
                          max_guidance=1.0)
        save_stage(pipe, ckpt / slug, rec, shared=shared)
    torch.manual_seed(0)
    save_proxy(ProxyNet(ProxyConfig(channels=(8, 8, 16, 16))), root / "proxy")
    return {"ckpt": ckpt, "proxy": root / "proxy", "root": root}


def test_evaluate_end_to_end(ev, setup, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = setup["ckpt"]
    argv = ["--checkpoints", str(ckpt), "--clips", "2", "--json", "--proxy", str(setup["proxy"]),
            "--steps-override", "baseline-untrained=1"]
    assert ev.main(argv) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert "skipping temporal-pruning" in out.err  # missing stage folders are named, not fatal
    names = [(r["stage"], r["resolution"]) for r in rows]
    assert ("svd", "48x24") in names and ("lowres-ft", "32x16") in names
    for res in ("48x24", "32x16"):
        assert ("baseline-static", res) in names and ("baseline-untrained", res) in names
    for r in rows:
        assert REQUIRED <= set(r), r["stage"]
        assert r["clips"] == 2 and r["source"] == "measured here"
        assert r["fvd_proxy"] >= 0 and -1 <= r["motion_spearman"] <= 1
        assert "fvd" not in r  # only with --i3d
    by = {(r["stage"], r["resolution"]): r for r in rows}
    assert by[("svd", "48x24")]["nfe"] == 2 and by[("baseline-untrained", "32x16")]["nfe"] == 1
    static = by[("baseline-static", "32x16")]
    assert static["nfe"] == 0 and static["first_frame_psnr"] > 55  # only 8-bit rounding of the round trip
    assert static["motion_spearman"] == 0.0 and static["motion_measured_mean_ref_px"] == 0.0
    saved = json.loads((ckpt / "lowres-ft" / "metrics.json").read_text())
    assert saved["stage"] == "lowres-ft" and saved["fvd_proxy"] == by[("lowres-ft", "32x16")]["fvd_proxy"]
    assert {b["stage"] for b in saved["baselines"]} == {"baseline-static", "baseline-untrained"}
    assert all(b["resolution"] == "32x16" for b in saved["baselines"])
    assert (ckpt / "svd" / "metrics.json").is_file()
    own = json.loads((ckpt / "baselines" / "metrics.json").read_text())["rows"]  # rows of their own
    assert set(own) == {f"{b}@{r}" for b in ("baseline-static", "baseline-untrained") for r in ("48x24", "32x16")}
    assert own["baseline-static@32x16"]["fvd_proxy"] == static["fvd_proxy"]
    assert "consecutive_psnr" in by[("lowres-ft", "32x16")] and "bucket_sweep" in by[("lowres-ft", "32x16")]
    bands = by[("lowres-ft", "32x16")]["by_motion"]
    assert [b["buckets"] for b in bands] == ["0-63", "64-127", "128-191", "192-255"]
    assert sum(b["clips"] for b in bands) == 2

    # same seeds -> same numbers; a step override is recorded under its own name and merged into metrics.json
    argv2 = ["--checkpoints", str(ckpt), "--stages", "lowres-ft", "--clips", "2", "--json", "--proxy",
             str(setup["proxy"]), "--steps-override", "lowres-ft=1", "--no-baselines"]
    assert ev.main(argv2) == 0
    rows2 = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in rows2] == ["lowres-ft@1step"] and rows2[0]["nfe"] == 1
    saved = json.loads((ckpt / "lowres-ft" / "metrics.json").read_text())
    assert saved["fvd_proxy"] == by[("lowres-ft", "32x16")]["fvd_proxy"]  # default row kept
    assert saved["variants"]["lowres-ft@1step"]["steps"] == 1
    assert len(saved["baselines"]) == 2


def test_evaluate_is_deterministic_and_i3d_path(ev, setup, tmp_path: Path, capsys) -> None:
    det = tmp_path / "i3d.pt"
    torch.manual_seed(0)
    torch.jit.script(StandInI3D()).save(str(det))
    argv = ["--checkpoints", str(setup["ckpt"]), "--stages", "mobilevd,lowres-ft", "--clips", "2", "--json",
            "--proxy", str(setup["proxy"]), "--no-baselines", "--no-write", "--i3d", str(det)]
    assert ev.main(argv) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert "skipping channel-funnels" in out.err  # the alias resolves; its folder is absent
    assert [r["stage"] for r in rows] == ["lowres-ft"]
    assert rows[0]["fvd"] >= 0
    again = ev.run(ev.build_parser().parse_args(argv), argv)
    assert again[0]["fvd_proxy"] == rows[0]["fvd_proxy"] and again[0]["fvd"] == rows[0]["fvd"]


def test_argument_errors(ev) -> None:
    with pytest.raises(SystemExit):
        ev.parse_overrides(["lowres-ft"])
    with pytest.raises(SystemExit):
        ev.parse_overrides(["lowres-ft=0"])
    with pytest.raises(ValueError):
        evaluation.select_stages("not-a-stage")
    assert evaluation.select_stages("lowres-ft,svd,baseline-static") == ["svd", "lowres-ft"]
    assert ev.parse_overrides(["mobilevd=1"]) == {"channel-funnels": 1}
    assert evaluation.steps_suffix(1) == "@1step" and evaluation.steps_suffix(4) == "@4steps"
    assert evaluation.json_safe({"a": float("inf"), "b": [float("nan"), 1.0]}) == {"a": None, "b": [None, 1.0]}


def test_untrained_baseline_of_a_stage_that_references_another_unet(ev, setup, capsys) -> None:
    """svd-512 and optimized-xattn store no UNet of their own (stage.json points at svd's / lowres-ft's): the
    untrained baseline is then built from the loaded UNet's config and the stage's recorded transforms."""
    from explorer import stages as registry
    from explorer.pipeline import load_stage

    ckpt = setup["ckpt"]
    pipe, _ = load_stage(ckpt / "lowres-ft")
    rec = StageRecord(slug="optimized-xattn", parent="lowres-ft", scale="micro", width=32, height=16, frames=14,
                      steps=2, min_guidance=1.0, max_guidance=1.0,
                      transforms=(registry.Transform("optimized_cross_attention"),))
    shared = {n: ckpt / "_shared" / n for n in SHARED} | {"unet": ckpt / "lowres-ft" / "unet"}
    comps = {"vae": pipe.vae, "image_encoder": pipe.image_encoder, "feature_extractor": pipe.feature_extractor,
             "scheduler": pipe.scheduler}
    save_stage(comps, ckpt / "optimized-xattn", rec, shared=shared)
    assert not (ckpt / "optimized-xattn" / "unet").exists()
    argv = ["--checkpoints", str(ckpt), "--stages", "optimized-xattn,lowres-ft", "--clips", "2", "--json",
            "--proxy", str(setup["proxy"]), "--no-write", "--steps-override", "baseline-untrained=1"]
    assert ev.main(argv) == 0
    rows = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["baseline-untrained"]["nfe"] == 1
    # the rewrite is exact: the same generations as its parent, so the same numbers
    assert rows["optimized-xattn"]["fvd_proxy"] == pytest.approx(rows["lowres-ft"]["fvd_proxy"], rel=1e-3)
    assert rows["optimized-xattn"]["first_frame_psnr"] == pytest.approx(rows["lowres-ft"]["first_frame_psnr"],
                                                                        abs=0.05)


def test_motion_bands_split_the_clips_by_requested_bucket() -> None:
    """Fast clips that boil: per band, generated consecutive PSNR and motion sit beside the real clips'."""
    buckets = [10, 40, 100, 200, 250]
    bands = evaluation.motion_bands(buckets, psnrs=[30, 28, 27, 26, 24], consecutive=[30, 30, 28, 20, 18],
                                    motions=[0.5, 0.7, 2.0, 9.0, 11.0], real_consecutive=[40, 40, 38, 36, 34],
                                    real_motions=[0.4, 0.6, 2.0, 5.0, 7.0])
    assert [b["clips"] for b in bands] == [2, 1, 0, 2]
    assert bands[0]["consecutive_psnr"] == 30.0 and bands[0]["motion_ref_px_real"] == 0.5
    assert "first_frame_psnr" not in bands[2]  # an empty band says so by its count, no made-up means
    assert bands[3]["consecutive_psnr"] == 19.0 and bands[3]["consecutive_psnr_real"] == 35.0
    assert bands[3]["motion_ref_px"] == 10.0 and bands[3]["motion_ref_px_real"] == 6.0
    table = evaluation.format_motion_bands({"stage": "svd", "resolution": "32x16", "by_motion": bands})
    assert "192-255 | 2 | 25.0 | 19.0 | 35.0 | 10.0 | 6.0" in table
