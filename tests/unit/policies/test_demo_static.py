"""Tests of the demo's static deployments and rate choice (oserve.cli.demo_static), on a small table."""

from __future__ import annotations

from pathlib import Path

import pytest

from oserve.cli.demo_static import best_static_mix, mix_name, mix_plan, peak_scale, served_fraction, static_mixes
from oserve.profiles.quality import VariantQuality
from oserve.profiles.table import ClassProfile, ProfileTable, VariantProfile
from oserve.types import ClusterSpec, Demand, NodeSpec

CL = ClusterSpec(nodes=[NodeSpec(name="n", device_type="cpu", devices=2, device_memory_bytes=4 << 30)])
CLASSES = ["a", "b"]
SHIPPED = ProfileTable.load(Path(__file__).resolve().parents[3] / "examples" / "profiles" / "cpu-smollm2-precision.json")
BASE = next(iter(SHIPPED.variants.values()))


def variant(name: str, caps: tuple[float, float], quality: float | None) -> VariantProfile:
    q = None if quality is None else VariantQuality(reference="fp32", tokens=100, mean_abs_logprob_diff=0.1,
                                                    perplexity_ratio=1.01, top1_agreement=quality)
    return BASE.model_copy(update={
        "name": name, "precision": name, "quality": q,
        "classes": {c: ClassProfile(capacity_rps=cap, ttft_s=0.5, tpot_s=0.05, max_concurrency=32)
                    for c, cap in zip(CLASSES, caps, strict=True)}})


TABLE = SHIPPED.model_copy(update={"class_names": CLASSES, "variants":{"fp32": variant("fp32", (2.0, 1.0), None), "int8": variant("int8", (4.0, 2.0), 0.9)}})


def test_mixes_and_capacity_share_routing() -> None:
    assert static_mixes(CL, ["int8", "fp32"]) == [("fp32", "fp32"), ("fp32", "int8"), ("int8", "int8")]
    plan = mix_plan(CL, TABLE, ["fp32", "int8"])
    assert [(r.variant, r.device_ids) for r in plan.replicas] == [("fp32", (0,)), ("int8", (1,))]
    assert plan.routing["a"] == pytest.approx({"fp32": 2 / 6, "int8": 4 / 6})
    assert mix_name(["int8", "fp32"]) == "1 x fp32 + 1 x int8"
    with pytest.raises(ValueError, match="3 variants for 2 devices"):
        mix_plan(CL, TABLE, ["fp32"] * 3)


def test_served_fraction_and_peak_scale_follow_the_capacities() -> None:
    plain = mix_plan(CL, TABLE, ["fp32", "fp32"])
    assert served_fraction(plain, CL, TABLE, Demand(rates_rps={"a": 4.0, "b": 0.0})) == pytest.approx(1.0)
    assert served_fraction(plain, CL, TABLE, Demand(rates_rps={"a": 8.0, "b": 0.0})) == pytest.approx(0.5)
    # 2 fp32 replicas serve 4 req/s of class a: the largest multiple of 1 req/s is 4 (to 1%)
    assert peak_scale(plain, CL, TABLE, Demand(rates_rps={"a": 1.0, "b": 0.0})) == pytest.approx(4.0, rel=0.02)
    int8 = mix_plan(CL, TABLE, ["int8", "int8"])
    assert peak_scale(int8, CL, TABLE, Demand(rates_rps={"a": 1.0, "b": 0.0})) == pytest.approx(8.0, rel=0.02)


def test_best_static_mix_prefers_goodput_then_full_precision() -> None:
    light = [Demand(rates_rps={"a": 1.0, "b": 0.5})] * 3
    mix, scores = best_static_mix(CL, TABLE, light, ["fp32"])
    assert mix == ("fp32", "fp32") and len(scores) == 3  # every mix serves it all: most full precision wins
    burst = [*light, Demand(rates_rps={"a": 7.0, "b": 0.0})]
    mix, scores = best_static_mix(CL, TABLE, burst, ["fp32"])
    assert mix == ("int8", "int8")  # only 2 x int8 serves the 7 req/s burst
    assert scores["2 x int8"] > scores["1 x fp32 + 1 x int8"] > scores["2 x fp32"]
    with pytest.raises(ValueError, match="at least one demand"):
        best_static_mix(CL, TABLE, [], ["fp32"])
