"""Planning headroom (target utilization) and spare devices (fill_idle_devices), across planners."""

from __future__ import annotations

import pydantic
import pytest

from oserve.policies import ClusterSpec, Demand, ObjectiveWeights, check_plan, evaluate, make_planner
from oserve.testing.tables import GIB, synthetic_table

SHORT, LONG = "short", "long"
PLANNERS = ["milp", "greedy", "flow"]
FREE = ObjectiveWeights(fill_idle_devices=False)


@pytest.mark.parametrize("name", PLANNERS)
def test_headroom_plans_capacity_at_target_utilization(name, mix_table, one_node):
    # 24 req/s short on int4-tp1 (8 req/s per replica): 3 replicas at 100 %, ceil(24 / 5.6) = 5 at 70 %
    demand = Demand(rates_rps={SHORT: 24.0})
    full = make_planner(name, weights=FREE.model_copy(update={"target_utilization": 1.0})).plan(
        one_node, mix_table, demand)
    headroom = make_planner(name, weights=FREE).plan(one_node, mix_table, demand)
    assert full.replica_counts() == {"int4-tp1": 3}
    assert headroom.replica_counts() == {"int4-tp1": 5}
    assert headroom.slo_attainment == pytest.approx(1.0)
    assert evaluate(headroom, one_node, mix_table, demand, None, FREE).utilization["int4-tp1"] == pytest.approx(
        24.0 / (5 * 8.0 * 0.7))


def test_evaluate_scores_at_target_utilization(mix_table, one_node):
    demand = Demand(rates_rps={SHORT: 8.0})
    plan = make_planner("static", variant="int4-tp1", replicas=1).plan(one_node, mix_table, demand)
    assert evaluate(plan, one_node, mix_table, demand).goodput_rps == pytest.approx(5.6)  # 8 x 0.7
    exact = ObjectiveWeights(target_utilization=1.0)
    assert evaluate(plan, one_node, mix_table, demand, None, exact).goodput_rps == pytest.approx(8.0)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_target_utilization_out_of_range_is_rejected(value):
    with pytest.raises(pydantic.ValidationError, match="target_utilization"):
        ObjectiveWeights(target_utilization=value)


@pytest.mark.parametrize("name", PLANNERS)
def test_idle_devices_host_replicas_by_default(name, mix_table, one_node):
    demand = Demand(rates_rps={SHORT: 8.0, LONG: 1.0})
    filled = make_planner(name).plan(one_node, mix_table, demand)
    freed = make_planner(name, weights=FREE).plan(one_node, mix_table, demand)
    assert filled.devices_used == 8
    assert freed.devices_used < 8
    assert filled.predicted_goodput_rps == pytest.approx(freed.predicted_goodput_rps, rel=1e-6)
    assert filled.slo_attainment == pytest.approx(1.0)
    assert not check_plan(filled, one_node, mix_table)
    score = evaluate(filled, one_node, mix_table, demand)
    assert score.device_cost_rps == 0.0 and score.capacity_value_rps > 0
    freed_score = evaluate(freed, one_node, mix_table, demand)
    assert score.spare_capacity_rps > freed_score.spare_capacity_rps
    # routing spreads the load over the spare replicas: the busiest variant is less utilized
    assert max(score.utilization.values()) < max(freed_score.utilization.values()) - 0.05
    assert all(u > 0 for u in score.utilization.values())


def test_spare_devices_get_the_variant_with_most_capacity_per_device_for_the_mix(one_node):
    # short-only demand: int4-tp1 gives 8 req/s per device, fp16-tp4 3; the spare devices get int4-tp1
    table = synthetic_table({"int4-tp1": {SHORT: 8.0, LONG: 0.1}, "fp16-tp4": {SHORT: 12.0, LONG: 2.0}},
                            {"int4-tp1": 1, "fp16-tp4": 4}, class_names=[SHORT, LONG])
    for name in PLANNERS:
        plan = make_planner(name).plan(one_node, table, Demand(rates_rps={SHORT: 4.0}))
        assert plan.replica_counts() == {"int4-tp1": 8}, name


@pytest.mark.parametrize("name", PLANNERS)
def test_zero_demand_fills_devices_unless_saving_energy(name, mix_table, one_node):
    filled = make_planner(name).plan(one_node, mix_table, Demand(rates_rps={}))
    assert filled.devices_used == 8
    assert all(abs(sum(filled.routing[c].values()) - 1.0) < 1e-9 for c in (SHORT, LONG))
    assert make_planner(name, weights=FREE).plan(one_node, mix_table, Demand(rates_rps={})).replicas == []


def _keys(plan):
    return sorted((r.variant, r.node, r.device_ids) for r in plan.replicas)


def test_spare_replicas_do_not_oscillate_under_noise(mix_table):
    cluster = ClusterSpec.homogeneous(2, 8, "a100-80gb", 80 * GIB)
    planner = make_planner("hysteresis", inner="milp")
    current = None
    switches = 0
    for i in range(12):
        noise = 1.0 + (0.04 if i % 2 else -0.04)
        plan = planner.plan(cluster, mix_table, Demand(rates_rps={SHORT: 20.0 * noise, LONG: 1.5 * noise}), current)
        assert plan.devices_used == 16
        if current is not None and _keys(plan) != _keys(current):
            switches += 1
        current = plan
    assert switches == 0
