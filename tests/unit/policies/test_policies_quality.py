"""Quality in the planner: min_quality per class, and the preference for higher quality after goodput."""

from __future__ import annotations

import pydantic
import pytest

from oserve.errors import ConfigError
from oserve.policies import ClusterSpec, Demand, ObjectiveWeights, check_plan, evaluate, make_planner
from oserve.profiles.quality import VariantQuality
from oserve.testing.tables import GIB, synthetic_table

CHAT = "chat"
FREE = ObjectiveWeights(fill_idle_devices=False)


def _quality(score: float) -> VariantQuality:
    return VariantQuality(reference="fp32", tokens=500, mean_abs_logprob_diff=0.1, perplexity_ratio=1.01,
                          top1_agreement=score)


@pytest.fixture
def cpu_table():
    """Two one-core CPU variants: fp32 (4 req/s, reference quality) and int8 (8 req/s, quality 0.9)."""
    t = synthetic_table({"fp32-1c": {CHAT: 4.0}, "int8-1c": {CHAT: 8.0}}, {"fp32-1c": 1, "int8-1c": 1},
                        memory_per_device_bytes=GIB, start_time_s=30.0, device_type="cpu", class_names=[CHAT])
    variants = dict(t.variants)
    variants["int8-1c"] = variants["int8-1c"].model_copy(update={"quality": _quality(0.9)})
    return t.model_copy(update={"variants": variants})


@pytest.fixture
def two_cores():
    return ClusterSpec.homogeneous(1, 2, "cpu", 4 * GIB)


def _share(plan, variant):
    return plan.routing.get(CHAT, {}).get(variant, 0.0)


@pytest.mark.parametrize("fill", [False, True])
def test_peak_goes_to_int8_and_low_load_back_to_fp32(cpu_table, two_cores, fill):
    planner = make_planner("milp", weights={"fill_idle_devices": fill})
    low = Demand(rates_rps={CHAT: 2.0})  # one fp32 replica serves it (4 x 0.7 = 2.8 req/s)
    peak = Demand(rates_rps={CHAT: 10.0})  # two fp32 replicas: 5.6 req/s; two int8: 11.2 req/s
    p_low = planner.plan(two_cores, cpu_table, low)
    assert _share(p_low, "fp32-1c") == pytest.approx(1.0)
    assert p_low.slo_attainment == pytest.approx(1.0)
    p_peak = planner.plan(two_cores, cpu_table, peak, current=p_low)
    assert _share(p_peak, "int8-1c") > 0.5
    assert p_peak.slo_attainment == pytest.approx(1.0)
    back = planner.plan(two_cores, cpu_table, low, current=p_peak)
    assert _share(back, "fp32-1c") == pytest.approx(1.0)
    assert back.replica_counts().get("fp32-1c", 0) >= 1
    for plan, demand, cur in ((p_low, low, None), (p_peak, peak, p_low), (back, low, p_peak)):
        assert check_plan(plan, two_cores, cpu_table) == []
        w = ObjectiveWeights(fill_idle_devices=fill)
        assert plan.objective == pytest.approx(evaluate(plan, two_cores, cpu_table, demand, cur, w).objective)


def test_without_quality_preference_the_cheaper_int8_may_serve_low_load(cpu_table, two_cores):
    # quality_cost_rps=0: both variants serve 2 req/s on one core, nothing prefers fp32. With the
    # default weight fp32 wins: the preference is what moves low load back to full precision.
    indifferent = make_planner("milp", weights={"fill_idle_devices": False, "quality_cost_rps": 0.0})
    low = Demand(rates_rps={CHAT: 2.0})
    s0 = evaluate(indifferent.plan(two_cores, cpu_table, low), two_cores, cpu_table, low, None,
                  ObjectiveWeights(fill_idle_devices=False, quality_cost_rps=0.0))
    assert s0.goodput_rps == pytest.approx(2.0)
    assert s0.quality_cost_rps == 0.0
    preferring = make_planner("milp", weights=FREE).plan(two_cores, cpu_table, low)
    assert _share(preferring, "fp32-1c") == pytest.approx(1.0)


def test_goodput_dominates_quality(cpu_table, two_cores):
    # At the peak, serving everything on int8 beats serving less at full precision.
    peak = Demand(rates_rps={CHAT: 10.0})
    plan = make_planner("milp", weights=FREE).plan(two_cores, cpu_table, peak)
    fp32_only = make_planner("static", variant="fp32-1c", replicas=2).plan(two_cores, cpu_table, peak)
    assert plan.predicted_goodput_rps > evaluate(fp32_only, two_cores, cpu_table, peak, None, FREE).goodput_rps


@pytest.mark.parametrize("name", ["milp", "greedy", "flow"])
def test_min_quality_keeps_class_off_low_quality_variants(cpu_table, two_cores, name):
    peak = Demand(rates_rps={CHAT: 10.0}, min_quality={CHAT: 0.95})
    plan = make_planner(name, weights=FREE).plan(two_cores, cpu_table, peak)
    assert _share(plan, "int8-1c") == 0.0
    assert plan.predicted_goodput_rps == pytest.approx(5.6)  # two fp32 replicas at 70 % of 4 req/s
    # a minimum the int8 variant meets lets it serve again
    ok = make_planner(name, weights=FREE).plan(two_cores, cpu_table,
                                              Demand(rates_rps={CHAT: 10.0}, min_quality={CHAT: 0.9}))
    assert ok.predicted_goodput_rps > 5.6 + 1e-6


def test_evaluate_does_not_count_traffic_below_min_quality(cpu_table, two_cores):
    plan = make_planner("static", variant="int8-1c", replicas=1).plan(two_cores, cpu_table,
                                                                     Demand(rates_rps={CHAT: 2.0}))
    strict = Demand(rates_rps={CHAT: 2.0}, min_quality={CHAT: 0.95})
    assert evaluate(plan, two_cores, cpu_table, strict).goodput_rps == 0.0
    loose = evaluate(plan, two_cores, cpu_table, Demand(rates_rps={CHAT: 2.0}))
    assert loose.goodput_rps == pytest.approx(2.0)
    assert loose.quality_cost_rps == pytest.approx(0.5 * 2.0 * (1 - 0.9))


def test_min_quality_validation(cpu_table, two_cores):
    with pytest.raises(pydantic.ValidationError, match="min_quality"):
        Demand(rates_rps={CHAT: 1.0}, min_quality={CHAT: 1.5})
    with pytest.raises(ConfigError, match="unknown class") as info:
        make_planner("milp").plan(two_cores, cpu_table, Demand(rates_rps={CHAT: 1.0}, min_quality={"x": 0.5}))
    assert info.value.field == "demand.min_quality.x"
    with pytest.raises(pydantic.ValidationError, match="quality_cost_rps"):
        ObjectiveWeights(quality_cost_rps=1.0)


def test_table_without_quality_counts_as_full_quality(cpu_table):
    assert cpu_table.variants["fp32-1c"].quality_score == 1.0
    assert cpu_table.variants["int8-1c"].quality_score == 0.9


def test_cached_milp_model_follows_the_table_quality(cpu_table, two_cores):
    # same capacities, different quality: the planner must not reuse the compiled model of the other
    planner = make_planner("milp", weights=FREE)
    low = Demand(rates_rps={CHAT: 2.0})
    assert _share(planner.plan(two_cores, cpu_table, low), "fp32-1c") == pytest.approx(1.0)
    variants = dict(cpu_table.variants)
    variants["fp32-1c"] = variants["fp32-1c"].model_copy(update={"quality": _quality(0.5)})
    worse_fp32 = cpu_table.model_copy(update={"variants": variants})
    assert _share(planner.plan(two_cores, worse_fp32, low), "int8-1c") == pytest.approx(1.0)
