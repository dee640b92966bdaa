"""Hysteresis decides a switch once: the start cost is weighed against the gain over the horizon."""

from __future__ import annotations

import pytest

from oserve.errors import ConfigError
from oserve.policies import ClusterSpec, Demand, HysteresisPlanner, make_planner
from oserve.testing.tables import GIB, synthetic_table

SHORT, LONG = "short", "long"
SAVE = {"fill_idle_devices": False}  # energy-saving mode: each device costs device_cost_rps


def _table():
    return synthetic_table({"fast": {SHORT: 4.0, LONG: 1.0}}, {"fast": 1}, class_names=[SHORT, LONG])


def _two_replicas(planner, cluster, table):
    plan = planner.plan(cluster, table, Demand(rates_rps={SHORT: 5.0, LONG: 0.0}))
    assert plan.replica_counts() == {"fast": 2}
    return plan


def test_zero_demand_scales_down_at_the_first_decision():
    table, cluster = _table(), ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    zero = Demand(rates_rps={SHORT: 0.0, LONG: 0.0})
    bare = make_planner("milp", weights=SAVE)
    current = _two_replicas(bare, cluster, table)
    # the bare planner charges the start time of the stopped replica on every decision: it keeps both
    assert bare.plan(cluster, table, zero, current).replica_counts() == {"fast": 2}
    hyst = HysteresisPlanner(make_planner("milp", weights=SAVE), horizon_s=30.0)
    down = hyst.plan(cluster, table, zero, current)
    assert down.replica_counts() == {}, down.reason  # the planner's minimum (the controller keeps one replica)
    assert "switching" in down.reason


def test_a_switch_that_starts_replicas_must_pay_its_start_cost_over_the_horizon():
    table, cluster = _table(), ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    current = _two_replicas(make_planner("greedy", weights=SAVE), cluster, table)
    more = Demand(rates_rps={SHORT: 6.5, LONG: 0.0})  # two replicas plan for 2 x 0.7 x 4 = 5.6 req/s
    cheap = HysteresisPlanner(make_planner("greedy", weights=SAVE), min_gain_fraction=0.0, horizon_s=60.0)
    assert cheap.plan(cluster, table, more, current).replica_counts() == {"fast": 3}
    dear = HysteresisPlanner(make_planner("greedy", weights=SAVE), min_gain_fraction=0.0, horizon_s=60.0,
                             switch_cost_weight=1e4)
    kept = dear.plan(cluster, table, more, current)
    assert kept.replica_counts() == {"fast": 2} and "keeping" in kept.reason


def test_horizon_must_be_positive():
    with pytest.raises(ConfigError) as err:
        HysteresisPlanner("greedy", horizon_s=0.0)
    assert err.value.field == "planner.horizon_s"


def test_no_replica_switch_at_zero_demand_for_tie_breakers_alone():
    # Llama-2-70B on 4 x 8 A100: at zero demand the MILP's tie-breakers (spare capacity) prefer 4 x int8 TP8 over the
    # running 16 x int8 TP2; with no goodput to gain the running replicas stay (the next burst would pay the switch)
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.policies import restrict_table, static_plan

    table = restrict_table(ProfileTable.load("examples/profiles/a100-80gb-mixed.json"), model="llama-2-70b")
    cluster = SimConfig(table="examples/profiles/a100-80gb-mixed.json").cluster.spec()
    busy = Demand(rates_rps={"short-in/short-out": 6.0, "long-in/short-out": 4.0})
    idle = Demand(rates_rps={"short-in/short-out": 0.0, "long-in/short-out": 0.0})
    running = static_plan(cluster, table, "llama-2-70b-int8-tp2")
    assert make_planner("milp").plan(cluster, table, idle).replica_counts() != running.replica_counts()
    kept = HysteresisPlanner("milp").plan(cluster, table, idle, running)
    assert kept.replica_counts() == running.replica_counts() == {"llama-2-70b-int8-tp2": 16}, kept.reason
    assert "no demand" in kept.reason
    assert HysteresisPlanner("milp").plan(cluster, table, busy, running).replica_counts()  # still plans under load


def test_replicas_start_under_demand_when_none_are_running():
    # the zero-demand rule keys on the demand, not on the kept plan's goodput: with no replica left (all failed, the
    # orchestrator's actual plan is empty) and 10 req/s of demand the kept plan serves nothing, yet replicas must start
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.policies import restrict_table
    from oserve.types import Plan

    table = restrict_table(ProfileTable.load("examples/profiles/a100-80gb-mixed.json"), model="llama-2-70b")
    cluster = SimConfig(table="examples/profiles/a100-80gb-mixed.json").cluster.spec()
    busy = Demand(rates_rps={"short-in/short-out": 6.0, "long-in/short-out": 4.0})
    plan = HysteresisPlanner("milp").plan(cluster, table, busy, Plan())
    assert plan.replica_counts(), plan.reason
    assert plan.predicted_goodput_rps > 0, plan.reason
    assert "no demand" not in plan.reason
