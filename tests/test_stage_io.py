"""Stage folders: save/load round trips, the hub layout offline, corrupt folders, no pickles, UNet swapping."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import explorer.transforms
from explorer.components import build_pipeline
from explorer.pipeline import (
    PICKLE_SUFFIXES,
    STAGE_FILE,
    StageLoadError,
    StageRecord,
    generate,
    hub_allow_patterns,
    load_stage,
    read_stage_record,
    save_stage,
    swap_unet,
)
from explorer.stages import Transform, architecture_transforms

W, H, F = 32, 16, 3  # multiples of 8 px; latent 8x4 at the micro VAE's factor 4
GEN = {"width": W, "height": H, "num_frames": F, "steps": 2, "min_guidance": 1.0, "max_guidance": 2.0, "seed": 7}
SHARED = ("vae", "image_encoder", "feature_extractor", "scheduler")


def _record(slug: str = "svd", **kw: object) -> StageRecord:
    return StageRecord(slug=slug, scale="micro", width=W, height=H, frames=F, steps=2, **kw)



def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random((40, 80, 3))


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("micro", seed=0)


@pytest.fixture(scope="module")
def reference(pipe, image) -> np.ndarray:
    return generate(pipe, image, **GEN).frames


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, pipe) -> Path:
    """A checkpoints root with two stages sharing vae/image encoder/processor/scheduler, plus a hub-layout copy."""
    root = tmp_path_factory.mktemp("checkpoints")
    shared = {name: root / "_shared" / name for name in SHARED}
    save_stage(pipe, root / "svd", _record(extra={"training": {"steps": 0}}), shared=shared)
    other = build_pipeline("micro", seed=1)
    save_stage({"unet": other.unet}, root / "lowres-ft", _record("lowres-ft", parent="svd"), shared=shared)
    pipe.save_pretrained(root / "hub", safe_serialization=True)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_stage_folder_layout_and_record(checkpoints: Path) -> None:
    assert _files(checkpoints / "svd") == [
        "model_index.json",
        "stage.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    data = json.loads((checkpoints / "svd" / STAGE_FILE).read_text())
    assert data["slug"] == "svd" and data["scale"] == "micro" and data["transforms"] == []
    assert data["components"] == {name: f"../_shared/{name}" for name in SHARED}
    assert data["extra"] == {"training": {"steps": 0}}
    assert (data["width"], data["height"], data["frames"], data["steps"]) == (W, H, F, 2)
    assert (checkpoints / "_shared" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoints / "_shared" / "image_encoder" / "model.safetensors").is_file()


def test_no_pickle_files_written(checkpoints: Path) -> None:
    written = [p for p in checkpoints.rglob("*") if p.is_file()]
    assert written and not [p for p in written if p.suffix.lower() in PICKLE_SUFFIXES]
    assert {p.suffix for p in written} <= {".json", ".safetensors", ".txt"}


def test_round_trip_is_strict_and_identical(checkpoints: Path, pipe, image, reference) -> None:
    loaded, record = load_stage(checkpoints / "svd")
    assert record.slug == "svd" and record.components["vae"] == "../_shared/vae"
    assert all(_same_weights(getattr(pipe, n), getattr(loaded, n)) for n in ("unet", "vae", "image_encoder"))
    assert np.array_equal(generate(loaded, image, **GEN).frames, reference)
    # the record's defaults drive generate when arguments are omitted
    res = generate(loaded, image, seed=7, max_guidance=2.0)
    assert res.frames.shape == (F, H, W, 3) and res.nfe == 2 * 2


def test_hub_layout_folder_loads_offline(checkpoints: Path, image, reference, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not (checkpoints / "hub" / STAGE_FILE).exists()
    loaded, record = load_stage(checkpoints / "hub")
    assert record.slug == "svd" and record.scale == "micro" and record.transforms == ()
    assert np.array_equal(generate(loaded, image, **GEN).frames, reference)


def _fake_hub_cache(cache: Path, repo: str, src: Path) -> None:
    """A Hugging Face cache entry (models--owner--name/snapshots/<sha>, refs/main) holding ``src``."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / sha)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(sha)


def test_hub_id_through_snapshot_download_offline(checkpoints: Path, tmp_path: Path, image, reference,
                                                  monkeypatch) -> None:
    cache = tmp_path / "hf-cache"
    _fake_hub_cache(cache, "someone/svd-micro", checkpoints / "hub")
    loaded, record = load_stage("someone/svd-micro", cache_dir=cache, local_files_only=True)
    assert record.slug == "svd" and record.extra["source"] == "someone/svd-micro"
    assert np.array_equal(generate(loaded, image, **GEN).frames, reference)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # honoured without local_files_only
    load_stage("someone/svd-micro", cache_dir=cache)
    with pytest.raises(StageLoadError, match="someone/absent"):
        load_stage("someone/absent", cache_dir=cache)


def test_hub_id_with_subfolder_and_shared_components(checkpoints: Path, tmp_path: Path, image) -> None:
    cache = tmp_path / "hf-cache"
    src = tmp_path / "repo"
    shutil.copytree(checkpoints, src, ignore=shutil.ignore_patterns("hub"))
    _fake_hub_cache(cache, "someone/mobilevd-micro", src)
    loaded, record = load_stage("someone/mobilevd-micro", subfolder="lowres-ft", cache_dir=cache,
                                local_files_only=True)
    direct, _ = load_stage(checkpoints / "lowres-ft")
    assert record.slug == "lowres-ft"
    assert all(_same_weights(getattr(loaded, n), getattr(direct, n)) for n in ("unet", "vae", "image_encoder"))


def test_hub_allow_patterns_fetch_only_component_safetensors() -> None:
    def fetched(name: str, variant: str | None = None) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in hub_allow_patterns(variant))

    assert fetched("model_index.json") and fetched("unet/config.json") and fetched("scheduler/scheduler_config.json")
    assert fetched("unet/diffusion_pytorch_model.safetensors") and fetched("image_encoder/model.safetensors")
    assert fetched("unet/diffusion_pytorch_model-00001-of-00002.safetensors")
    assert not fetched("svd.safetensors") and not fetched("svd_image_decoder.safetensors")
    assert not fetched("unet/diffusion_pytorch_model.bin") and not fetched("image_encoder/pytorch_model.bin")
    assert not fetched("unet/diffusion_pytorch_model.fp16.safetensors")
    assert fetched("unet/diffusion_pytorch_model.fp16.safetensors", "fp16")
    assert not fetched("unet/diffusion_pytorch_model.safetensors", "fp16")


def test_variant_weights_load(checkpoints: Path, tmp_path: Path, image, reference) -> None:
    folder = tmp_path / "hub"
    shutil.copytree(checkpoints / "hub", folder)
    for comp, base in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                       ("image_encoder", "model")):
        (folder / comp / f"{base}.safetensors").rename(folder / comp / f"{base}.fp16.safetensors")
    with pytest.raises(StageLoadError, match="variant"):
        load_stage(folder)
    loaded, _ = load_stage(folder, variant="fp16")
    assert np.array_equal(generate(loaded, image, **GEN).frames, reference)


def test_swap_unet_in_place_matches_fresh_load(checkpoints: Path, image) -> None:
    loaded, _ = load_stage(checkpoints / "svd")
    unet, vae = loaded.unet, loaded.vae
    record = swap_unet(loaded, checkpoints / "lowres-ft")
    assert record.slug == "lowres-ft"
    assert loaded.unet is unet and loaded.vae is vae  # same architecture and shared VAE: weights copied in place
    fresh, _ = load_stage(checkpoints / "lowres-ft")
    assert all(_same_weights(getattr(loaded, n), getattr(fresh, n)) for n in ("unet", "vae", "image_encoder"))
    assert np.array_equal(generate(loaded, image, **GEN).frames, generate(fresh, image, **GEN).frames)


def test_swap_unet_rebuilds_for_another_architecture(tmp_path: Path, pipe, image, monkeypatch) -> None:
    _install_probe_transform(monkeypatch)
    root = tmp_path / "ck"
    save_stage(pipe, root / "svd", _record())
    probed = build_pipeline("micro", seed=2)
    probed.unet = explorer.transforms.apply_transforms(probed.unet, [Transform("probe", {"size": 3})])
    save_stage(probed, root / "probe", _record("probe", transforms=(Transform("probe", {"size": 3}),)))
    loaded, _ = load_stage(root / "svd")
    old_unet = loaded.unet
    swap_unet(loaded, root / "probe")
    assert loaded.unet is not old_unet and hasattr(loaded.unet, "probe")
    fresh, _ = load_stage(root / "probe")
    assert _same_weights(loaded.unet, fresh.unet) and loaded.unet.probe.shape == (3,)


def _install_probe_transform(monkeypatch) -> None:
    """A stand-in transform that changes the module tree (adds a parameter), to check load order:
    build -> apply recorded transforms -> strict load."""
    real = getattr(explorer.transforms, "apply_transforms", None)

    def apply(unet, transforms):
        rest = []
        for t in transforms:
            if t.name == "probe":
                unet.register_parameter("probe", torch.nn.Parameter(torch.zeros(int(t.params["size"]))))
            else:
                rest.append(t)
        if rest:
            assert real is not None, "explorer.transforms.apply_transforms is not available"
            unet = real(unet, rest)
        return unet

    monkeypatch.setattr(explorer.transforms, "apply_transforms", apply, raising=False)


def test_recorded_transforms_are_applied_before_strict_loading(tmp_path: Path, monkeypatch) -> None:
    _install_probe_transform(monkeypatch)
    source = build_pipeline("micro", seed=3)
    source.unet = explorer.transforms.apply_transforms(source.unet, [Transform("probe", {"size": 5})])
    with torch.no_grad():
        source.unet.probe.copy_(torch.arange(5.0))
    rec = _record("probe", transforms=(Transform("probe", {"size": 5}),))
    save_stage(source, tmp_path / "probe", rec)
    loaded, record = load_stage(tmp_path / "probe")
    assert record.transforms == (Transform("probe", {"size": 5}),)
    assert torch.equal(loaded.unet.probe, torch.arange(5.0))
    # the same weights under a record without the transform: the extra tensor is refused, naming the file
    data = json.loads((tmp_path / "probe" / STAGE_FILE).read_text())
    data["transforms"] = []
    (tmp_path / "probe" / STAGE_FILE).write_text(json.dumps(data))
    with pytest.raises(StageLoadError, match=r"diffusion_pytorch_model\.safetensors.*unexpected.*probe"):
        load_stage(tmp_path / "probe")


def test_real_transform_chain_round_trip(tmp_path: Path, image) -> None:
    if getattr(explorer.transforms, "apply_transforms", None) is None:
        pytest.skip("explorer.transforms.apply_transforms not available yet")
    chain = []
    for t in architecture_transforms("channel-funnels"):
        if t.name == "temporal_pruning":  # a concrete choice of kept blocks, as a trained stage records it
            t = Transform(t.name, {"blocks": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]})
        chain.append(t)
    source = build_pipeline("micro", seed=4)
    source.unet = explorer.transforms.apply_transforms(source.unet, chain)
    rec = _record("channel-funnels", parent="temporal-pruning", transforms=tuple(chain))
    save_stage(source, tmp_path / "cf", rec)
    loaded, record = load_stage(tmp_path / "cf")
    assert [t.name for t in record.transforms] == [t.name for t in chain]
    kw = {**GEN, "steps": 1, "max_guidance": 1.0}
    assert np.array_equal(generate(loaded, image, **kw).frames, generate(source, image, **kw).frames)


def test_record_from_registry() -> None:
    rec = StageRecord.from_stage("mobilevd", "tiny")
    assert rec.slug == "channel-funnels" and rec.parent == "temporal-pruning"
    assert (rec.width, rec.height, rec.steps) == (128, 64, 1)
    assert list(rec.transforms) == architecture_transforms("channel-funnels")
    again = StageRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec


# ---------------------------------------------------------------------------------------------------------
# Corrupt or mismatched folders: StageLoadError naming the file


@pytest.fixture()
def stage_copy(checkpoints: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ck"
    shutil.copytree(checkpoints, root, ignore=shutil.ignore_patterns("hub"))
    return root / "svd"


def test_missing_weights_file(stage_copy: Path) -> None:
    (stage_copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(StageLoadError, match=r"missing weights file .*unet.diffusion_pytorch_model\.safetensors"):
        load_stage(stage_copy)


def test_missing_shared_component(stage_copy: Path) -> None:
    shutil.rmtree(stage_copy.parent / "_shared" / "vae")
    with pytest.raises(StageLoadError, match=r"_shared.vae"):
        load_stage(stage_copy)


def test_truncated_safetensors(stage_copy: Path) -> None:
    path = stage_copy / "unet" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StageLoadError, match=r"unet.diffusion_pytorch_model\.safetensors"):
        load_stage(stage_copy)


def test_wrong_tensor_shape(stage_copy: Path) -> None:
    path = stage_copy.parent / "_shared" / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    key = sorted(k for k in state if k.endswith("conv_in.weight"))[0]
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    save_file(state, str(path))
    with pytest.raises(StageLoadError, match=rf"_shared.vae.diffusion_pytorch_model\.safetensors.*wrong shape.*{key}"):
        load_stage(stage_copy)


def test_config_not_matching_weights(stage_copy: Path) -> None:
    path = stage_copy / "unet" / "config.json"
    config = json.loads(path.read_text())
    config["block_out_channels"] = [32, 32, 32, 64]
    path.write_text(json.dumps(config))
    with pytest.raises(StageLoadError, match=r"unet.diffusion_pytorch_model\.safetensors.*unet.config\.json"):
        load_stage(stage_copy)


@pytest.mark.parametrize("relative", ["stage.json", "unet/config.json", "../_shared/scheduler/scheduler_config.json",
                                      "model_index.json"])
def test_bad_json(stage_copy: Path, relative: str) -> None:
    path = stage_copy / relative
    path.write_text('{"slug": "svd", ')
    with pytest.raises(StageLoadError, match=rf"bad JSON in .*{Path(relative).name}"):
        load_stage(stage_copy)


def test_pickle_weights_are_refused(stage_copy: Path) -> None:
    unet = stage_copy / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(StageLoadError, match=r"pickle.*diffusion_pytorch_model\.bin"):
        load_stage(stage_copy)


def test_component_reference_cannot_leave_the_root(stage_copy: Path) -> None:
    data = json.loads((stage_copy / STAGE_FILE).read_text())
    data["components"]["vae"] = "../../../outside/vae"
    (stage_copy / STAGE_FILE).write_text(json.dumps(data))
    with pytest.raises(StageLoadError, match="leaves the checkpoints root"):
        load_stage(stage_copy)
    data["components"]["vae"] = "/etc/vae"
    (stage_copy / STAGE_FILE).write_text(json.dumps(data))
    with pytest.raises(StageLoadError, match="must be relative"):
        load_stage(stage_copy)


def test_foreign_component_class_is_refused(stage_copy: Path) -> None:
    path = stage_copy / "model_index.json"
    index = json.loads(path.read_text())
    index["unet"] = ["my_package", "EvilUNet"]
    path.write_text(json.dumps(index))
    with pytest.raises(StageLoadError, match="EvilUNet"):
        load_stage(stage_copy)


def test_not_a_stage_folder(tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match="not a stage folder"):
        load_stage(tmp_path)
    with pytest.raises(StageLoadError, match="not found"):
        load_stage(tmp_path / "nothing" / "here")
    with pytest.raises(StageLoadError, match="not found"):
        load_stage("./relative/missing")
    with pytest.raises(StageLoadError, match="not a stage folder"):
        read_stage_record(tmp_path)


def test_shared_component_conflict_is_an_error(tmp_path: Path, pipe) -> None:
    root = tmp_path / "ck"
    shared = {"vae": root / "_shared" / "vae"}
    save_stage(pipe, root / "a", _record(), shared=shared)
    save_stage(pipe, root / "b", _record(), shared=shared)  # same VAE: reused
    other = build_pipeline("micro", seed=9)
    with pytest.raises(ValueError, match="different vae"):
        save_stage(other, root / "c", _record(), shared=shared)
    with pytest.raises(ValueError, match="outside the checkpoints root"):
        save_stage(pipe, root / "d", _record(), shared={"vae": tmp_path / "elsewhere" / "vae"})


def test_unet_is_built_on_meta_without_random_init(checkpoints: Path, monkeypatch) -> None:
    """Loading must not pay for a random initialisation (17 s for full SVD on 2 cores): build on meta, assign."""
    import explorer.pipeline.folder as pipeline_mod  # load_unet looks _build_transformed_unet up there

    devices: list[str] = []
    real = pipeline_mod._build_transformed_unet

    def spy(config, transforms, device):
        devices.append(device)
        return real(config, transforms, device)

    monkeypatch.setattr(pipeline_mod, "_build_transformed_unet", spy)
    loaded, _ = load_stage(checkpoints / "svd")
    assert devices == ["meta"]
    assert not any(t.is_meta for t in list(loaded.unet.parameters()) + list(loaded.unet.buffers()))


def test_torch_dtype(checkpoints: Path) -> None:
    loaded, _ = load_stage(checkpoints / "svd", torch_dtype=torch.bfloat16)
    assert {loaded.unet.dtype, loaded.vae.dtype, loaded.image_encoder.dtype} == {torch.bfloat16}


def test_weights_stored_in_float16_load_as_float32(stage_copy: Path) -> None:
    from explorer.pipeline import store_weights_as

    vae_file = stage_copy.parent / "_shared" / "vae" / "diffusion_pytorch_model.safetensors"
    vae_before = vae_file.read_bytes()
    sizes = store_weights_as(stage_copy, "float16", components=("unet", "vae"))
    assert set(sizes) == {"unet"}  # the VAE is shared (referenced), not this stage's to rewrite
    before, after = sizes["unet"]
    assert after < 0.55 * before and vae_file.read_bytes() == vae_before
    loaded, _ = load_stage(stage_copy)
    assert loaded.unet.dtype == torch.float32
    original = build_pipeline("micro", seed=0).unet.state_dict()  # what stage_copy's svd holds in float32
    for k, v in loaded.unet.state_dict().items():
        assert torch.equal(v, original[k].half().float()), k  # exactly the float16 rounding, nothing else
    with pytest.raises(ValueError, match="dtype"):
        store_weights_as(stage_copy, "int8")


def test_local_looking_missing_path_is_not_sent_to_the_hub(checkpoints: Path, monkeypatch) -> None:
    monkeypatch.chdir(checkpoints)
    with pytest.raises(StageLoadError, match="stage folder not found"):
        load_stage("_shared/typo")
