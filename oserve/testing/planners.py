"""Conformance checks for Planner implementations (run them on your own subclasses).

``check_planner(planner)`` plans a few fixed instances (a mix that needs two variants, a variant too
big for any device, zero demand, unmet demand, a heterogeneous cluster, re-planning from a current
plan) and raises ``AssertionError`` naming the instance and the violated property: device memory,
devices per node, TP groups within a node, routing shares summing to 1, determinism, and the plan's
reported numbers agreeing with :func:`oserve.policies.evaluate`.
"""

from __future__ import annotations

from oserve.policies import ClusterSpec, Demand, NodeSpec, Planner, check_plan, evaluate
from oserve.profiles.table import ProfileTable
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import Plan

__all__ = ["check_planner", "conformance_instances"]


def conformance_instances() -> list[tuple[str, ClusterSpec, ProfileTable, Demand]]:
    """The fixed (name, cluster, table, demand) instances ``check_planner`` runs."""
    mix = synthetic_table({"int4-tp1": {"short": 8.0, "long": 0.1}, "fp16-tp4": {"short": 12.0, "long": 2.0},
                           "huge-tp2": {"short": 50.0, "long": 9.0}},
                          {"int4-tp1": 1, "fp16-tp4": 4, "huge-tp2": 2},
                          memory_per_device_bytes={"int4-tp1": 30 * GIB, "fp16-tp4": 70 * GIB, "huge-tp2": 200 * GIB},
                          class_names=["short", "long"])
    one = ClusterSpec.homogeneous(1, 8, "a100-80gb", 80 * GIB)
    hetero = ClusterSpec(nodes=[NodeSpec(name="a", device_type="a100-80gb", devices=8, device_memory_bytes=80 * GIB),
                                NodeSpec(name="b", device_type="a100-80gb", devices=4, device_memory_bytes=40 * GIB),
                                NodeSpec(name="c", device_type="a100-80gb", devices=2, device_memory_bytes=80 * GIB)])
    return [
        ("mix", one, mix, Demand(rates_rps={"short": 32.0, "long": 2.0})),
        ("zero-demand", one, mix, Demand(rates_rps={})),
        ("unmet", one, mix, Demand(rates_rps={"short": 300.0, "long": 30.0})),
        ("heterogeneous", hetero, mix, Demand(rates_rps={"short": 40.0, "long": 3.0})),
    ]


def _check(label: str, plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand,
           current: Plan | None, planner: Planner) -> None:
    problems = check_plan(plan, cluster, table)
    assert not problems, f"{label}: invalid plan: {problems}"
    score = evaluate(plan, cluster, table, demand, current, planner.weights)
    assert abs(score.objective - plan.objective) <= 1e-6 * max(1.0, abs(score.objective)), (
        f"{label}: plan.objective {plan.objective} != evaluate() {score.objective}")
    assert abs(score.goodput_rps - plan.predicted_goodput_rps) <= 1e-6 * max(1.0, score.goodput_rps), (
        f"{label}: predicted goodput disagrees with evaluate()")
    assert plan.memory_used_bytes == score.memory_used_bytes, f"{label}: memory_used_bytes disagrees"
    assert plan.reason, f"{label}: empty reason"


def check_planner(planner: Planner) -> None:
    """Run the conformance instances through ``planner``.

    Raises:
        AssertionError: a property does not hold (the message names the instance).
    """
    for name, cluster, table, demand in conformance_instances():
        plan = planner.plan(cluster, table, demand)
        _check(name, plan, cluster, table, demand, None, planner)
        again = planner.plan(cluster, table, demand)
        assert again == plan, f"{name}: same input gave a different plan"
        shifted = Demand(rates_rps={c: r * 1.5 + 0.5 for c, r in demand.rates_rps.items()} or {"long": 1.0})
        replanned = planner.plan(cluster, table, shifted, plan)
        _check(f"{name} (re-planned from current)", replanned, cluster, table, shifted, plan, planner)
