"""Planner behaviour: hand-solvable mix, infeasible memory, zero demand, registry, solver-limit fallback."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.policies import (
    ClusterSpec,
    Demand,
    Planner,
    check_plan,
    evaluate,
    make_planner,
    register_planner,
)
from oserve.policies.base import Allocation
from oserve.policies.milp import MILPPlanner, _Point
from oserve.policies.problem import ObjectiveWeights
from oserve.testing.tables import GIB, synthetic_table

SHORT, LONG = "short", "long"

PLANNERS = ["milp", "greedy", "flow"]
# The hand-solved cases below check the planners' mechanics at the table's full capacity with idle
# devices freed (the pre-headroom objective); the defaults (headroom, spare devices) are tested in
# test_policies_headroom.py.
EXACT = ObjectiveWeights(target_utilization=1.0, fill_idle_devices=False)


@pytest.mark.parametrize("name", PLANNERS)
def test_mixes_int4_tp1_for_short_and_fp16_tp4_for_long(name, mix_table, one_node):
    # 8 GPUs: 4 x int4-tp1 serve 32 req/s short; one fp16-tp4 serves 2 req/s long. Nothing else gets 34.
    demand = Demand(rates_rps={SHORT: 32.0, LONG: 2.0})
    plan = make_planner(name, weights=EXACT).plan(one_node, mix_table, demand)
    assert plan.replica_counts() == {"int4-tp1": 4, "fp16-tp4": 1}
    assert plan.routing[SHORT] == {"int4-tp1": pytest.approx(1.0)}
    assert plan.routing[LONG] == {"fp16-tp4": pytest.approx(1.0)}
    assert plan.predicted_goodput_rps == pytest.approx(34.0)
    assert plan.slo_attainment == pytest.approx(1.0)
    assert not check_plan(plan, one_node, mix_table)
    tp4 = next(r for r in plan.replicas if r.variant == "fp16-tp4")
    assert tp4.device_ids in {(0, 1, 2, 3), (4, 5, 6, 7)}


def test_static_single_variant_cannot_match_the_mix(mix_table, one_node):
    demand = Demand(rates_rps={SHORT: 32.0, LONG: 2.0})
    static = make_planner("static", variant="int4-tp1").plan(one_node, mix_table, demand)
    milp = make_planner("milp", weights=EXACT).plan(one_node, mix_table, demand)
    assert static.replica_counts() == {"int4-tp1": 8}
    assert static.predicted_goodput_rps < milp.predicted_goodput_rps - 1.0


@pytest.mark.parametrize("name", PLANNERS + ["static"])
def test_variant_fitting_no_device_is_never_placed(name):
    table = synthetic_table({"big": {"a": 10.0}, "small": {"a": 1.0}}, {"big": 1, "small": 1},
                            memory_per_device_bytes={"big": 100 * GIB, "small": 10 * GIB}, class_names=["a"])
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    plan = make_planner(name, weights=EXACT).plan(cluster, table, Demand(rates_rps={"a": 5.0}))
    assert "big" not in plan.replica_counts()
    assert plan.replica_counts().get("small") == 2
    assert not check_plan(plan, cluster, table)
    assert "memory" in plan.reason
    assert plan.slo_attainment == pytest.approx(0.4)


@pytest.mark.parametrize("name", PLANNERS)
def test_class_only_servable_by_unfit_variant_names_memory(name):
    table = synthetic_table({"big": {"a": 1.0, "b": 1.0}, "small": {"a": 5.0}}, {"big": 1, "small": 1},
                            memory_per_device_bytes={"big": 100 * GIB, "small": 10 * GIB}, class_names=["a", "b"])
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    plan = make_planner(name, weights=EXACT).plan(cluster, table, Demand(rates_rps={"a": 1.0, "b": 1.0}))
    assert "binding: memory (class b is only served" in plan.reason
    assert plan.slo_attainment == pytest.approx(0.5)
    assert plan.routing["b"] == {}


@pytest.mark.parametrize("name", PLANNERS)
def test_devices_binding_reported(name, mix_table, one_node):
    plan = make_planner(name, weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: 500.0, LONG: 0.0}))
    assert "binding: devices" in plan.reason
    assert plan.slo_attainment == pytest.approx(64.0 / 500.0, rel=1e-6)
    assert plan.admit_rps[SHORT] == pytest.approx(64.0, rel=1e-6)


@pytest.mark.parametrize("name", PLANNERS)
def test_zero_demand_frees_devices_and_routes_by_capacity(name, mix_table, one_node):
    plan = make_planner(name, weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={}))
    assert plan.replicas == []
    assert plan.slo_attainment == 1.0
    assert plan.routing == {SHORT: {}, LONG: {}}


def test_zero_demand_class_routed_over_capacity(mix_table, one_node):
    plan = make_planner("milp", weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: 0.0, LONG: 2.0}))
    assert plan.replica_counts() == {"fp16-tp4": 1}
    assert plan.routing[SHORT] == {"fp16-tp4": pytest.approx(1.0)}


def test_solver_limit_with_zero_values_falls_back(mix_table, one_node, monkeypatch):
    planner = MILPPlanner(weights=EXACT, time_limit_s=1e-6)

    def limit_zero(self, model, problem):
        return _Point("user_limit", np.zeros(len(model.slots)), np.zeros(len(model.pairs)), optimal=False)

    monkeypatch.setattr(MILPPlanner, "_solve", limit_zero)
    current = make_planner("greedy", weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: 8.0, LONG: 2.0}))
    plan = planner.plan(one_node, mix_table, Demand(rates_rps={SHORT: 32.0, LONG: 2.0}), current)
    assert plan.reason.startswith("MILP greedy_better") and "user_limit" in plan.reason
    assert plan.replica_counts() == {"int4-tp1": 4, "fp16-tp4": 1}
    assert plan.optimal is False


def test_solver_limit_with_infeasible_values_is_rejected(mix_table, one_node, monkeypatch):
    def limit_bad(self, model, problem):  # zero replicas but traffic served: violates capacity
        return _Point("user_limit", np.zeros(len(model.slots)), np.ones(len(model.pairs)), optimal=False)

    monkeypatch.setattr(MILPPlanner, "_solve", limit_bad)
    plan = MILPPlanner(weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: 32.0, LONG: 2.0}))
    assert "solution rejected (served rate over the replicas' capacity)" in plan.reason
    assert "fell back to greedy" in plan.reason
    assert plan.replica_counts() == {"int4-tp1": 4, "fp16-tp4": 1}
    assert not check_plan(plan, one_node, mix_table)


def test_tiny_time_limit_never_applies_invalid_point():
    from oserve.testing.tables import synthetic_a100_table

    table = synthetic_a100_table()
    cluster = ClusterSpec.homogeneous(4, 8, "a100-80gb", 80 * GIB)
    demand = Demand(rates_rps=dict.fromkeys(table.class_names, 3.0))
    for backend in ("cvxpy", "highspy"):
        plan = MILPPlanner(time_limit_s=1e-9, backend=backend).plan(cluster, table, demand)
        assert plan.optimal is False
        assert "greedy" in plan.reason  # HiGHS stops at the limit with no useful point
        assert not check_plan(plan, cluster, table)
        assert plan.replicas and plan.predicted_goodput_rps > 0


def test_highspy_backend_matches_cvxpy(mix_table):
    cluster = ClusterSpec.homogeneous(3, 8, "a100-80gb", 80 * GIB)
    demand = Demand(rates_rps={SHORT: 70.0, LONG: 7.0})
    a = MILPPlanner(backend="cvxpy").plan(cluster, mix_table, demand)
    b = MILPPlanner(backend="highspy").plan(cluster, mix_table, demand)
    assert a.objective == pytest.approx(b.objective, rel=1e-4)
    # overloaded: both MILPs credit serving part of a class, the whole demand is routed (admission is not
    # enforced), so neither claims optimality for the shared objective
    assert a.slo_attainment < 1 and a.optimal is False and b.optimal is False
    met = Demand(rates_rps={SHORT: 30.0, LONG: 3.0})
    a, b = (MILPPlanner(backend=k).plan(cluster, mix_table, met) for k in ("cvxpy", "highspy"))
    assert a.objective == pytest.approx(b.objective, rel=1e-4)
    assert a.optimal and b.optimal and a.slo_attainment == pytest.approx(1.0)


def test_switching_cost_keeps_replicas_in_place(mix_table, one_node):
    planner = make_planner("milp", weights=EXACT)
    first = planner.plan(one_node, mix_table, Demand(rates_rps={SHORT: 16.0, LONG: 2.0}))
    second = planner.plan(one_node, mix_table, Demand(rates_rps={SHORT: 24.0, LONG: 2.0}), first)
    assert set(first.replicas) <= set(second.replicas)
    score = evaluate(second, one_node, mix_table, Demand(rates_rps={SHORT: 24.0, LONG: 2.0}), first)
    assert score.switch_start_s == pytest.approx(30.0)


def test_registry_unknown_duplicate_and_bad_params():
    with pytest.raises(ConfigError) as e:
        make_planner("nope")
    assert "milp" in e.value.allowed
    with pytest.raises(ConfigError):
        register_planner("milp", MILPPlanner)
    with pytest.raises(ConfigError):
        make_planner("greedy", bogus=1)

    class Mine(Planner):
        name = "mine"

        def _allocate(self, problem):
            return Allocation(np.zeros(problem.fits.shape, dtype=np.int64))

    register_planner("test-mine", Mine)
    assert isinstance(make_planner("test-mine"), Mine)
    with pytest.raises(ConfigError):
        register_planner("test-mine", Mine)


def test_bad_demand_raises_config_error(mix_table, one_node):
    with pytest.raises(ConfigError) as e:
        make_planner("greedy", weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={"unknown": 1.0}))
    assert e.value.field == "demand.unknown"
    with pytest.raises(ConfigError):
        make_planner("greedy", weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: -1.0}))


def test_cpu_cluster_plans_on_cores():
    table = synthetic_table({"q4-1c": {"a": 0.5}, "q4-2c": {"a": 1.2}}, {"q4-1c": 1, "q4-2c": 2},
                            memory_per_device_bytes=4 * GIB, device_type="cpu", class_names=["a"])
    cluster = ClusterSpec.homogeneous(1, 2, "cpu", 8 * GIB)
    plan = make_planner("milp", weights=EXACT).plan(cluster, table, Demand(rates_rps={"a": 1.0}))
    assert plan.replica_counts() == {"q4-2c": 1}
    assert plan.replicas[0].device_ids == (0, 1)


@pytest.mark.parametrize("weights", [None, EXACT], ids=["defaults", "exact"])
@pytest.mark.parametrize("name", PLANNERS + ["static", "hysteresis"])
def test_conformance(name, weights):
    from oserve.testing import check_planner

    check_planner(make_planner(name, weights=weights))


def test_greedy_on_128_nodes_is_valid_and_near_the_milp():
    # its speed (target < 1 s) is measured by bench/planner_bench.py (bench/results/planner.json), not timed here
    from oserve.testing.tables import synthetic_a100_table

    table = synthetic_a100_table()
    cluster = ClusterSpec.homogeneous(128, 8, "a100-80gb", 80 * GIB)
    demand = Demand(rates_rps=dict(zip(table.class_names, [150.0, 120.0, 60.0, 40.0, 8.0, 5.0], strict=True)))
    plan = make_planner("greedy", weights=EXACT).plan(cluster, table, demand)
    assert not check_plan(plan, cluster, table)
    milp = make_planner("milp", weights=EXACT).plan(cluster, table, demand)
    assert milp.optimal
    assert plan.objective >= milp.objective * (1 - 0.02)


def test_missing_milp_solver_uses_heuristic(mix_table, one_node, monkeypatch):
    import oserve.policies.milp as milp_mod

    monkeypatch.setattr(milp_mod, "milp_solver_available", lambda: False)
    plan = milp_mod.MILPPlanner(weights=EXACT).plan(one_node, mix_table, Demand(rates_rps={SHORT: 32.0, LONG: 2.0}))
    assert plan.reason.startswith("MILP no_solver: no MILP solver installed; fell back to greedy")
    assert plan.replica_counts() == {"int4-tp1": 4, "fp16-tp4": 1}


def test_milp_rejects_bad_parameters():
    with pytest.raises(ConfigError):
        MILPPlanner(time_limit_s=0)
    with pytest.raises(ConfigError):
        MILPPlanner(backend="gurobi")
    with pytest.raises(ConfigError):
        make_planner("milp", threads=0)


def test_a_planner_from_an_entry_point_names_its_plans(tmp_path, monkeypatch, mix_table, one_node):
    # An installed package's entry point, as docs/planning.md tells a user to publish it.
    (tmp_path / "ep_planner_pkg.py").write_text(
        "import numpy as np\n"
        "from oserve import Allocation, Planner\n"
        "class EpPlanner(Planner):\n"
        "    def _allocate(self, problem):\n"
        "        return Allocation(np.zeros(problem.fits.shape, dtype=np.int64), reason='none')\n")
    dist = tmp_path / "ep_planner_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-planner-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[oserve.planners]\nep-planner = ep_planner_pkg:EpPlanner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = make_planner("ep-planner").plan(one_node, mix_table, Demand(rates_rps={SHORT: 1.0}))
    assert plan.planner == "ep-planner"


def test_milp_computes_greedys_allocation_once_per_problem(monkeypatch):
    from oserve.policies.problem import build_problem
    from oserve.testing.tables import synthetic_a100_table

    table = synthetic_a100_table()
    cluster = ClusterSpec.homogeneous(4, 8, "a100-80gb", 80 * GIB)
    demand = Demand(rates_rps=dict(zip(table.class_names, [20.0, 10.0, 5.0, 2.0, 1.0, 0.5], strict=True)))
    milp = MILPPlanner()
    calls = []
    real = milp._fallback._allocate
    monkeypatch.setattr(milp._fallback, "_allocate", lambda p: calls.append(p) or real(p))
    problem = build_problem(cluster, table, demand, None, milp.weights)
    first = milp.floor_allocations(problem)[0]
    again = milp.floor_allocations(problem)[0]
    milp._pooling_starts(problem)
    assert len(calls) == 1 and np.array_equal(first.counts, again.counts)
    first.counts[:] = 0  # a caller's copy: writing it leaves the cached allocation alone
    assert np.array_equal(milp.floor_allocations(problem)[0].counts, again.counts) and len(calls) == 1
    problem.demand[:] = problem.demand * 10  # the same object with other demand is another problem
    milp.floor_allocations(problem)
    assert len(calls) == 2
    other = build_problem(cluster, table, demand, None, milp.weights)
    milp.floor_allocations(other)
    assert len(calls) == 3
