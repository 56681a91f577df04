"""The stage registry: the path of the paper as data."""

import pytest

from explorer import stages as registry


def test_path_order_and_slugs() -> None:
    assert registry.SLUGS == (
        "svd", "svd-512", "lowres-ft", "optimized-xattn", "adversarial-1step", "temporal-multiscale",
        "temporal-pruning", "channel-funnels", "mobilevd-hd",
    )
    assert registry.resolve("mobilevd") == "channel-funnels"
    assert registry.resolve(" MobileVD ") == "channel-funnels"


def test_unknown_slug_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'.*valid stages"):
        registry.resolve("nope")
    with pytest.raises(ValueError):
        registry.resolve(None)  # type: ignore[arg-type]


def test_parents_exist_and_lineage() -> None:
    for s in registry.STAGES:
        if s.parent:
            assert registry.get_stage(s.parent)
    chain = [s.slug for s in registry.lineage("mobilevd")]
    assert chain == ["svd", "lowres-ft", "optimized-xattn", "adversarial-1step", "temporal-multiscale",
                     "temporal-pruning", "channel-funnels"]
    names = [t.name for t in registry.architecture_transforms("mobilevd-hd")]
    assert names == ["optimized_cross_attention", "temporal_multiscale", "temporal_pruning", "channel_funnels"]


def test_paper_numbers_table2() -> None:
    tflops = {s.slug: s.paper.tflops for s in registry.STAGES}
    assert tflops == {"svd": 45.43, "svd-512": 8.60, "lowres-ft": 8.60, "optimized-xattn": 8.24,
                      "adversarial-1step": 8.24, "temporal-multiscale": 5.42, "temporal-pruning": 4.64,
                      "channel-funnels": 4.34, "mobilevd-hd": 23.63}
    phone = {s.slug: s.paper.phone_ms for s in registry.STAGES}
    assert phone["svd"] == registry.OOM and phone["mobilevd-hd"] == registry.OOM
    assert phone["channel-funnels"] == 1780
    assert registry.get_stage("svd").steps == 50 and registry.get_stage("mobilevd").steps == 1
    # the headline 523x = 50 NFE x 45.43 / 4.34
    assert round(50 * 45.43 / 4.34) == 523


def test_sizes_per_scale() -> None:
    assert registry.get_stage("svd").size("tiny") == (256, 144)
    assert registry.get_stage("lowres-ft").size("tiny") == (128, 64)
    assert registry.get_stage("svd-512").size("full") == (512, 256)


def test_reference_tables() -> None:
    assert {r.label for r in registry.PEERS} >= {"AnimateLCM", "UFOGen", "LADD", "SF-V"}
    assert len(registry.ablation_rows("Table 3")) == 4
    assert len(registry.ablation_rows("Table 4")) == 5
    assert len(registry.ablation_rows("Table 6")) == 5
    he = [r for r in registry.ablation_rows("Table 4") if r.config["init"] == "he"][0]
    assert he.fvd_25fps == 332


def test_transform_roundtrip() -> None:
    t = registry.Transform("temporal_pruning", {"kept": 11})
    assert registry.Transform.from_dict(t.to_dict()) == t
