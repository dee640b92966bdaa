"""Hypothesis properties every planner must satisfy, and the objective ordering MILP >= greedy >= static."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oserve.policies import ClusterSpec, Demand, NodeSpec, ObjectiveWeights, check_plan, evaluate, make_planner
from oserve.testing.tables import GIB, synthetic_table

CLASSES = ["a", "b", "c"]
SIZES = [1, 2, 4, 8]


@st.composite
def instances(draw):
    n_var = draw(st.integers(1, 4))
    caps, devs, mems = {}, {}, {}
    for i in range(n_var):
        v = f"v{i}"
        devs[v] = draw(st.sampled_from(SIZES))
        mems[v] = draw(st.sampled_from([20, 40, 70, 90])) * GIB  # 90 GiB fits no 80 GiB device
        caps[v] = {c: draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 8.0])) for c in CLASSES}
    table = synthetic_table(caps, devs, memory_per_device_bytes=mems, class_names=CLASSES)
    nodes = [NodeSpec(name=f"n{j}", device_type="a100-80gb", devices=draw(st.sampled_from([2, 4, 8])),
                      device_memory_bytes=draw(st.sampled_from([40, 80])) * GIB)
             for j in range(draw(st.integers(1, 3)))]
    demand = Demand(rates_rps={c: draw(st.sampled_from([0.0, 0.7, 2.0, 5.0, 20.0])) for c in CLASSES})
    return ClusterSpec(nodes=nodes), table, demand


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["milp", "greedy", "flow", "static"])
@FAST
@given(inst=instances())
def test_plans_are_valid_and_deterministic(name, inst):
    cluster, table, demand = inst
    planner = make_planner(name)
    plan = planner.plan(cluster, table, demand)
    assert check_plan(plan, cluster, table) == []  # memory, devices, TP within node, routing sums to 1
    again = make_planner(name).plan(cluster, table, demand)
    assert again == plan
    score = evaluate(plan, cluster, table, demand)
    assert plan.objective == pytest.approx(score.objective)
    for key, used in score.memory_used_bytes.items():
        node = next(n for n in cluster.nodes if n.name == key.split(":")[0])
        assert used <= node.device_memory_bytes
    assert 0.0 <= plan.slo_attainment <= 1.0 + 1e-9


@pytest.mark.parametrize("fill", [True, False], ids=["fill-idle", "free-idle"])
@FAST
@given(inst=instances())
def test_milp_objective_dominates_greedy_and_static(fill, inst):
    cluster, table, demand = inst
    w = ObjectiveWeights(fill_idle_devices=fill)
    milp = make_planner("milp", weights=w).plan(cluster, table, demand)
    greedy = make_planner("greedy", weights=w).plan(cluster, table, demand)
    static = make_planner("static", weights=w).plan(cluster, table, demand)
    tol = 1e-3 * max(1.0, abs(milp.objective))
    if milp.slo_attainment < 1 - 1e-9:
        # Overload: the MILP credits serving part of a class, but the whole demand is routed (admission is not
        # enforced, so evaluate does not credit it); the MILP is exact only for demand the plan carries.
        return
    # optimal for the MILP's own model (headroom with the best routing); the pooling search may then move
    # replicas for more headroom with pooled routing, which evaluate scores (no optimality claim for that),
    # or the floor take greedy's plan for its higher objective (test_milp_takes_greedys_plan_...)
    assert milp.optimal or "pooled routing" in milp.reason or "with a higher objective" in milp.reason
    assert milp.objective >= greedy.objective - tol
    assert milp.objective >= static.objective - tol
    assert milp.objective >= make_planner("flow", weights=w).plan(cluster, table, demand).objective - tol
    if milp.slo_attainment >= 1 - 1e-9:  # feasible demand: the heuristic meets it too and beats static
        assert greedy.objective >= static.objective - tol


@pytest.mark.parametrize("name", ["milp", "greedy", "flow"])
@FAST
@given(inst=instances())
def test_plan_carries_at_least_the_best_single_variant_plan(name, inst):
    """Issue 12: on any table and demand a planner's plan carries (goodput, req/s within SLO under the
    shared time-sharing model) at least what the best single-variant, cluster-filling plan carries."""
    cluster, table, demand = inst
    plan = make_planner(name).plan(cluster, table, demand)
    carried = evaluate(plan, cluster, table, demand).goodput_rps
    best = 0.0
    for v in table.variants:
        single = make_planner("static", variant=v).plan(cluster, table, demand)
        best = max(best, evaluate(single, cluster, table, demand).goodput_rps)
    assert carried >= best - 1e-3 * max(1.0, best)


@FAST
@given(inst=instances(), cut=st.sampled_from([0.0, 0.3, 0.9]))
def test_admission_limit_is_not_credited(inst, cut):
    """Nothing enforces ``admit_rps``, so a plan that claims to admit less earns no more goodput."""
    cluster, table, demand = inst
    plan = make_planner("milp").plan(cluster, table, demand)
    limited = plan.model_copy(update={"admit_rps": {c: r * cut for c, r in demand.rates_rps.items()}})
    full = evaluate(plan, cluster, table, demand)
    assert evaluate(limited, cluster, table, demand).goodput_rps == pytest.approx(full.goodput_rps)


def test_milp_takes_greedys_plan_when_evaluate_scores_it_higher():
    """Found by hypothesis (random draw): the demand is met either way, the MILP's optimum (headroom with the
    best routing) scored 3.40992 under evaluate (pooled headroom), greedy's 3.414; the pooling search keeps
    only counts that carry the demand with pooled routing, which greedy's do not, so it could not move there.
    The floor's extra candidates (MILPPlanner.floor_allocations) now win on the objective at equal goodput."""
    caps = {"v0": {"a": 0.5, "b": 0.5, "c": 0.0}, "v1": {"a": 0.0, "b": 0.0, "c": 0.5},
            "v2": {"a": 0.0, "b": 0.0, "c": 0.5}, "v3": {"a": 1.0, "b": 0.0, "c": 0.0}}
    table = synthetic_table(caps, {v: 1 for v in caps}, start_time_s={v: 60.0 for v in caps}, class_names=["a", "b", "c"])
    cluster = ClusterSpec(nodes=[NodeSpec(name=f"n{i}", device_type="a100-80gb", devices=d, device_memory_bytes=40 * GIB)
                                 for i, d in enumerate([2, 2, 4])])
    demand = Demand(rates_rps={"a": 2.0, "b": 0.7, "c": 0.7})
    w = ObjectiveWeights(fill_idle_devices=True)
    milp = make_planner("milp", weights=w).plan(cluster, table, demand)
    greedy = make_planner("greedy", weights=w).plan(cluster, table, demand)
    assert greedy.slo_attainment == pytest.approx(1.0) and greedy.objective == pytest.approx(3.414)
    assert milp.objective >= greedy.objective - 1e-9
    assert milp.predicted_goodput_rps == pytest.approx(greedy.predicted_goodput_rps)
    assert "with a higher objective" in milp.reason and milp.optimal is False
    assert check_plan(milp, cluster, table) == []
