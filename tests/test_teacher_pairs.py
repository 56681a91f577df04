"""The teacher-pair store for one-step distillation: what is stored is what the teacher made from the stored
noise, building resumes shard by shard with the same result, other weights are refused, draws are pure
functions of the step, and the adversarial loop trains from the store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from explorer.components import build_image_encoder, build_vae
from explorer.models import build_unet
from explorer.training.teacher_pairs import PairsConfig, PairStore, TeacherPairsError, build_pairs, fingerprints


@pytest.fixture(scope="module")
def micro() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    return build_unet("micro", seed=1).eval(), build_vae("micro"), build_image_encoder("micro")


def _cfg(out: Path, pairs: int) -> PairsConfig:
    return PairsConfig(out=str(out), size=(32, 16), pairs=pairs, shard=2, chunk=2, teacher_steps=2, threads=0)


def test_store_holds_the_teachers_samples_and_resumes_identically(tmp_path: Path, micro: tuple) -> None:
    from explorer.training.distill import teacher_sample

    teacher, vae, enc = micro
    one_go = build_pairs(_cfg(tmp_path / "a", 4), teacher, vae, enc, progress=False)
    build_pairs(_cfg(tmp_path / "b", 2), teacher, vae, enc, progress=False)
    resumed = build_pairs(_cfg(tmp_path / "b", 4), teacher, vae, enc, progress=False)  # adds shard 1 only
    assert one_go["shards"] == resumed["shards"] == 2
    a = PairStore(tmp_path / "a", expect=fingerprints(teacher, vae, enc))
    b = PairStore(tmp_path / "b")
    assert len(a) == 4
    for key, v in a.tensors.items():
        assert torch.equal(v, b.tensors[key]), key
    cond, eps, target = a.batch(torch.tensor([0, 3]))
    assert eps.shape == cond.latents.shape == target.shape and cond.latents.shape[1] == 14
    again = teacher_sample(teacher, cond, eps, 2, 1.0, 3.0)  # the teacher ran on exactly the stored noise
    assert torch.allclose(again, target, rtol=2e-3, atol=2e-3)  # only the target's float16 rounding


def test_other_weights_and_bad_stores_are_refused(tmp_path: Path, micro: tuple) -> None:
    teacher, vae, enc = micro
    build_pairs(_cfg(tmp_path / "s", 2), teacher, vae, enc, progress=False)
    other = build_unet("micro", seed=5)
    with pytest.raises(TeacherPairsError, match="other weights"):
        build_pairs(_cfg(tmp_path / "s", 4), other, vae, enc, progress=False)
    with pytest.raises(TeacherPairsError, match="another teacher"):
        PairStore(tmp_path / "s", expect=fingerprints(other, vae, enc))
    with pytest.raises(TeacherPairsError, match="no teacher pairs"):
        PairStore(tmp_path / "missing")
    with pytest.raises(ValueError, match="multiple"):
        build_pairs(replace(_cfg(tmp_path / "t", 3)), teacher, vae, enc, progress=False)


def test_draws_are_epoch_permutations_and_data_parallel_slices(tmp_path: Path, micro: tuple) -> None:
    teacher, vae, enc = micro
    build_pairs(_cfg(tmp_path / "s", 4), teacher, vae, enc, progress=False)
    store = PairStore(tmp_path / "s", seed=3)
    epoch = torch.cat([store.indices(step, 2) for step in range(2)])
    assert sorted(epoch.tolist()) == [0, 1, 2, 3]  # every pair once per epoch
    assert torch.equal(store.indices(1, 2), store.indices(1, 2))  # a pure function of the step (resumes)
    combined = store.indices(1, 2)
    assert torch.equal(torch.cat([store.indices(1, 1, 0, 2), store.indices(1, 1, 1, 2)]), combined)


def test_adversarial_loop_distils_from_the_store(tmp_path: Path, micro: tuple) -> None:
    from explorer.training.adversarial import AdversarialConfig, train_adversarial

    teacher, vae, enc = micro
    build_pairs(_cfg(tmp_path / "pairs", 4), teacher, vae, enc, progress=False)
    unet = build_unet("micro", seed=0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    cfg = AdversarialConfig(out=str(tmp_path / "adv"), size=(32, 16), steps=2, batch=2, num_workers=0, ckpt_every=2,
                            log_every=1, r1_every=1, warmup=1, distill_weight=1.0, pairs=str(tmp_path / "pairs"),
                            distill_motion_weight=1.0)
    train_adversarial(cfg, unet, teacher, vae, enc, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "adv" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["distill"] > 0 and r["distill_motion"] > 0 for r in rows)
    assert any(not torch.equal(before[k], v) for k, v in unet.state_dict().items())
    judged = replace(cfg, out=str(tmp_path / "md"), distill_weight=0.0, distill_motion_weight=0.0,
                     motion_d_weight=1.0, motion_d_width=8, motion_d_real="teacher")
    train_adversarial(judged, build_unet("micro", seed=0), teacher, vae, enc, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "md" / "log.jsonl").read_text().splitlines()]
    # the motion discriminator judges the sigma_max student against the stored teacher clips, without distillation
    assert all({"adv_motion", "loss_md", "md_real", "md_fake"} <= set(r) and "distill" not in r for r in rows)
    with pytest.raises(ValueError, match="pair store"):
        train_adversarial(replace(judged, out=str(tmp_path / "md2"), pairs=""), build_unet("micro", seed=0),
                          teacher, vae, enc, progress=False)
    with pytest.raises(ValueError, match="motion_d_real"):
        train_adversarial(replace(judged, out=str(tmp_path / "md3"), motion_d_real="real"),
                          build_unet("micro", seed=0), teacher, vae, enc, progress=False)
    # distillation alone: no heads' update, no generator pass from the noised real clip, the student still learns
    pure = replace(cfg, out=str(tmp_path / "pure"), sfv_terms=False)
    student = build_unet("micro", seed=0)
    train_adversarial(pure, student, teacher, vae, enc, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "pure" / "log.jsonl").read_text().splitlines()]
    assert all("distill" in r and not {"loss_d", "adv", "rec"} & set(r) for r in rows)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    for bad, match in ((dict(distill_weight=0.0, distill_motion_weight=0.0), "another term"),
                       (dict(motion_d_weight=1.0), "motion_d_real='data'")):
        with pytest.raises(ValueError, match=match):
            train_adversarial(replace(pure, out=str(tmp_path / "bad"), **bad), build_unet("micro", seed=0),
                              teacher, vae, enc, progress=False)
    with pytest.raises(ValueError, match="not"):  # pairs at another size than the stage trains at
        train_adversarial(replace(cfg, out=str(tmp_path / "adv2"), size=(64, 32)), build_unet("micro", seed=0),
                          teacher, vae, enc, progress=False)
    with pytest.raises(TeacherPairsError, match="another teacher"):
        train_adversarial(replace(cfg, out=str(tmp_path / "adv3")), build_unet("micro", seed=0),
                          build_unet("micro", seed=7), vae, enc, progress=False)


def test_motion_distance_sees_only_what_changes_between_frames() -> None:
    from explorer.training.adversarial import motion_distance, pseudo_huber

    target = torch.randn(2, 6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    shifted = target + torch.randn(2, 1, 3, 4, 4, generator=torch.Generator().manual_seed(1))  # same motion
    static = target[:, :1].expand_as(target)  # frame 0 right, the motion averaged away
    assert motion_distance(shifted, target) < 1e-6 < pseudo_huber(shifted, target).item()
    assert motion_distance(static, target) > pseudo_huber(static, target)  # the static clip pays more here


def test_plan_distils_only_at_the_pairs_size(tmp_path: Path) -> None:
    from explorer.training.path import PathBuilder, Plan

    pure = PathBuilder(replace(Plan(), adv_distill_weight=0.0), tmp_path / "ck", tmp_path / "runs", progress=False)
    cfg = pure._adv_cfg("adversarial-1step", 400)
    assert cfg.pairs == "" and cfg.distill_weight == 0 and cfg.d_p_mean == -1.0  # SF-V's pure recipe
    assert pure.finished("teacher-pairs")  # nothing to build when the plan does not distil
    assert Plan().adv_distill_weight == 1.0 and Plan().adv_lr_g == 5e-5  # the shipped stages' recipe (session 16)
    plan = replace(Plan(), adv_probe_every=50, adv_d_p_mean=-3.0)
    builder = PathBuilder(plan, tmp_path / "ck", tmp_path / "runs", progress=False)
    cfg = builder._adv_cfg("adversarial-1step", 400)
    assert cfg.pairs == str(tmp_path / "runs" / "teacher-pairs-128x64") and cfg.distill_weight == 1.0
    assert cfg.probe_every == 50 and cfg.d_p_mean == -3.0 and cfg.distill_motion_weight == 0
    motion = PathBuilder(replace(plan, adv_distill_motion_weight=1.0), tmp_path / "ck", tmp_path / "runs",
                         progress=False)
    assert motion._adv_cfg("adversarial-1step", 400).distill_motion_weight == 1.0
    assert cfg.recon_weight == 0.1  # SF-V's reconstruction term, on by default; an axis of the plan
    assert PathBuilder(replace(plan, adv_recon_weight=0.0), tmp_path / "ck", tmp_path / "runs",
                       progress=False)._adv_cfg("adversarial-1step", 400).recon_weight == 0.0
    assert motion._adv_cfg("mobilevd-hd", 150, size=plan.base).distill_motion_weight == 0  # no pairs there
    hd = builder._adv_cfg("mobilevd-hd", 150, size=plan.base, batch=2)
    assert hd.pairs == "" and hd.distill_weight == 0  # the pairs are 128x64; the hd stage trains without them
    assert not builder.finished("teacher-pairs")


def test_plan_overrides_parse_each_field_as_its_type(tmp_path: Path) -> None:
    """build_path's --set: numbers, sizes and booleans parsed as the field's type; unknown fields and bad values
    are clear errors; the plan axes reach the adversarial config."""
    from explorer.training.path import PathBuilder, Plan

    plan = Plan()
    plan.override(["adv_steps=1000", "lowres=96x48", "adv_sfv_terms=false", "adv_motion_d_real=teacher",
                   "adv_lr_g=1e-4"])
    assert (plan.adv_steps, plan.lowres, plan.adv_sfv_terms, plan.adv_lr_g) == (1000, (96, 48), False, 1e-4)
    cfg = PathBuilder(plan, tmp_path / "ck", tmp_path / "runs", progress=False)._adv_cfg("adversarial-1step", 9)
    assert cfg.sfv_terms is False and cfg.motion_d_real == "teacher"
    plan.override(["adv_sfv_terms=1"])
    assert plan.adv_sfv_terms is True
    for bad, match in (("adv_sfv_terms=maybe", "true or false"), ("adv_steps=many", "adv_steps"),
                       ("no_such=1", "unknown plan field")):
        with pytest.raises(ValueError, match=match):
            plan.override([bad])

