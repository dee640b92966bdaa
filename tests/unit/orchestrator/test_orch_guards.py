"""Controller safety rules: missing-class alarm (never remove capacity under load) and the replica floor."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from orch_fakes import FakeForecaster, make_cluster, make_table, plan_of, snapshot

from oserve.control.controller import Controller, ControllerInputError
from oserve.control.guards import floor_replicas, missing_classes
from oserve.control.metrics import OrchestratorMetrics
from oserve.policies import make_planner
from oserve.types import DEFAULT_SCHEME, Demand

NAMES = DEFAULT_SCHEME.names
MISSING = NAMES[3]
RUNNING = plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,)))


def _table_without_rows_for(cls: str):
    table = make_table()
    variants = {name: v.model_copy(update={"classes": {c: p for c, p in v.classes.items() if c != cls}})
                for name, v in table.variants.items()}
    return table.model_copy(update={"variants": variants})


def _tick(planner, table, rates: list[float], current, **kw):
    planner = make_planner(planner) if isinstance(planner, str) else planner
    ctrl = Controller(FakeForecaster(), planner, make_cluster(), table, DEFAULT_SCHEME,
                      min_history=1, **kw)
    ts = np.array([0.0])
    return ctrl.tick(0.0, snapshot(rates), ts, np.array([rates]), current)


def test_missing_classes_names_absent_rows_and_all_zero_rows():
    no_row = _table_without_rows_for(MISSING)
    zero = make_table(capacities={"fast": {c: 2.0 for c in NAMES[:3]}})
    loaded = Demand(rates_rps={NAMES[0]: 1.0, MISSING: 20.0})
    assert missing_classes(no_row, loaded) == {MISSING: "no row in the profile table"}
    assert missing_classes(zero, loaded) == {MISSING: "capacity 0 in every row"}
    assert missing_classes(no_row, Demand(rates_rps={NAMES[0]: 1.0, MISSING: 0.0})) == {}


@pytest.mark.parametrize("planner", ["greedy", "flow", "milp"])
def test_a_class_missing_from_the_table_never_removes_running_capacity(planner, caplog):
    table = _table_without_rows_for(MISSING)
    rates = [0.0, 0.0, 0.0, 20.0]  # 20 req/s, all of the class the table lacks
    with caplog.at_level(logging.WARNING, logger="oserve.control.controller"):
        d = _tick(planner, table, rates, RUNNING)
    assert d.plan.replica_counts() == {"fast": 2}, d.reason  # both running replicas stay
    assert not d.replicas_changed
    assert d.alarms == (f"missing-class: {MISSING} (no row in the profile table)",)
    assert "missing-class alarm" in caplog.text
    metrics = OrchestratorMetrics()
    metrics.observe_decision(d)
    assert metrics.registry.get_sample_value("oserve_missing_class_alarm", {"request_class": MISSING}) == 1.0
    assert metrics.registry.get_sample_value("oserve_missing_class_alarm", {"request_class": NAMES[0]}) == 0.0


def test_without_the_alarm_the_same_load_plans_normally():
    d = _tick("greedy", make_table(), [0.0, 0.0, 0.0, 1.0], RUNNING, min_replicas=0)
    assert d.alarms == () and d.replicas_changed  # one 'fast' replica (2 req/s) suffices: one is stopped


def test_zero_demand_keeps_min_replicas():
    table = make_table()
    table = table.model_copy(update={"variants": {"fast": table.variants["fast"]}})
    saving = make_planner("milp", weights={"fill_idle_devices": False})
    bare = _tick(saving, table, [0.0] * 4, RUNNING, min_replicas=0)
    floored = _tick(saving, table, [0.0] * 4, RUNNING)  # default min_replicas=1
    assert bare.plan.replica_counts() == {}
    assert floored.plan.replica_counts() == {"fast": 1}
    assert all(floored.plan.routing[c] == {"fast": 1.0} for c in NAMES)
    empty = RUNNING.model_copy(update={"replicas": []})
    assert floor_replicas(empty, None, table, 1) is empty  # nothing running: nothing to keep


def test_less_demand_is_planned_for_only_once_it_lasted_the_window():
    planner = make_planner("greedy", weights={"fill_idle_devices": False})
    ctrl = Controller(FakeForecaster(), planner, make_cluster(), make_table(), DEFAULT_SCHEME, min_history=100,
                      scale_down_window_s=30.0)
    current, seen = RUNNING, []
    for t, rate in [(0, 3.0), (10, 0.5), (20, 0.5), (30, 0.5), (40, 0.5), (50, 6.0)]:
        d = ctrl.tick(float(t), snapshot([rate, 0, 0, 0]), np.zeros(0), np.zeros((0, 4)), current)
        current = d.plan
        seen.append((d.demand.rates_rps[NAMES[0]], sum(d.plan.replica_counts().values())))
    assert [x for x, _ in seen] == [3.0, 3.0, 3.0, 3.0, 0.5, 6.0]  # the 3 req/s of t=0 is kept until t=30
    assert [n for _, n in seen] == [3, 3, 3, 3, 1, 4]  # fast: 0.7 x 2 req/s each; down after the window, up at once
    with pytest.raises(ControllerInputError) as err:
        Controller(FakeForecaster(), planner, make_cluster(), make_table(), DEFAULT_SCHEME, scale_down_window_s=-1)
    assert err.value.field == "scale_down_window_s"
