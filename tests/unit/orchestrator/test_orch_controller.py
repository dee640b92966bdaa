"""Controller: the pure decision step (fake forecaster and planner, no engines, no clock)."""

from __future__ import annotations

import numpy as np
import pytest
from orch_fakes import FakeForecaster, FakePlanner, make_cluster, make_table, plan_of, snapshot

from oserve.control.controller import Controller, ControllerInputError, plans_equal
from oserve.errors import PlanningError
from oserve.types import DEFAULT_SCHEME

K = len(DEFAULT_SCHEME)


def _controller(**kw) -> Controller:
    return Controller(kw.pop("forecaster", FakeForecaster()), kw.pop("planner", FakePlanner()), make_cluster(),
                      make_table(), DEFAULT_SCHEME, **kw)


def _run(ctrl: Controller, series: np.ndarray) -> list:
    """Tick once per observation, feeding the growing history."""
    out, current = [], None
    for i in range(series.shape[0]):
        ts = np.arange(i + 1, dtype=float) * 10.0
        d = ctrl.tick(ts[-1], snapshot(series[i].tolist(), ts[-1]), ts, series[: i + 1], current)
        current = d.plan
        out.append(d)
    return out


def test_same_inputs_give_same_decisions():
    rng = np.random.default_rng(3)
    series = rng.uniform(0, 3, size=(20, K))
    a = [d.to_dict() for d in _run(_controller(min_history=4), series)]
    b = [d.to_dict() for d in _run(_controller(min_history=4), series)]
    assert a == b
    assert any(d["changed"] for d in a[1:])  # the series moves enough to change the plan


def test_warm_up_then_fit_then_update_only_new_observations():
    f = FakeForecaster()
    ctrl = _controller(forecaster=f, min_history=3)
    series = np.ones((6, K))
    decisions = _run(ctrl, series)
    assert "warming up" in decisions[0].reason
    assert decisions[0].forecast_rps == decisions[0].observed_rps
    assert f.calls == [("fit", 3), ("update", 1), ("update", 1), ("update", 1)]
    # a tick with no new observation does not update the forecaster again
    ts = np.arange(6, dtype=float) * 10.0
    ctrl.tick(60.0, snapshot([1.0] * K), ts, series, decisions[-1].plan)
    assert f.calls[-1] == ("update", 1) and len(f.calls) == 4


def test_demand_is_floored_at_observed_rate():
    # the forecaster predicts half of the recent mean; the observed rate is the floor
    ctrl = _controller(forecaster=FakeForecaster(factor=0.5), min_history=1)
    ts = np.array([0.0])
    d = ctrl.tick(0.0, snapshot([4.0, 0, 0, 0]), ts, np.array([[4.0, 0, 0, 0]]), None)
    assert d.forecast_rps[DEFAULT_SCHEME.names[0]] == pytest.approx(2.0)
    assert d.demand.rates_rps[DEFAULT_SCHEME.names[0]] == pytest.approx(4.0)
    ctrl2 = _controller(forecaster=FakeForecaster(factor=0.5), min_history=1, floor_at_observed=False)
    d2 = ctrl2.tick(0.0, snapshot([4.0, 0, 0, 0]), ts, np.array([[4.0, 0, 0, 0]]), None)
    assert d2.demand.rates_rps[DEFAULT_SCHEME.names[0]] == pytest.approx(2.0)


def test_changed_compares_counts_per_node_and_routing():
    a = plan_of(("fast", "node0", (0,)), ("big", "node0", (1,)))
    b = plan_of(("big", "node0", (3,)), ("fast", "node0", (2,)))  # other cores, same counts
    assert plans_equal(a, b)
    assert not plans_equal(a, plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    assert not plans_equal(a, plan_of(("fast", "node1", (0,)), ("big", "node0", (1,))))
    r = {c: {"fast": 0.9, "big": 0.1} for c in DEFAULT_SCHEME.names}
    assert not plans_equal(a, plan_of(("fast", "node0", (0,)), ("big", "node0", (1,)), routing=r))
    assert not plans_equal(a, None) and plans_equal(None, plan_of())


def test_pinned_plan_overrides_planner_until_unpinned():
    pinned = plan_of(("big", "node0", (0,)), ("big", "node0", (1,)))
    ctrl = _controller(min_history=1, pinned=pinned)
    ts, rates = np.array([0.0]), np.ones((1, K))
    d = ctrl.tick(0.0, snapshot([1.0] * K), ts, rates, None)
    assert d.plan == pinned and d.changed and d.reason.startswith("pinned")
    ctrl.unpin()
    d = ctrl.tick(1.0, snapshot([1.0] * K), ts, rates, pinned)
    assert d.plan.replica_counts() == {"fast": 2} and d.changed


def test_planner_failure_keeps_current_plan():
    class FailingPlanner:
        def plan(self, *a):
            raise PlanningError("solver down")

    ctrl = _controller(planner=FailingPlanner(), min_history=1)
    cur = plan_of(("fast", "node0", (0,)))
    d = ctrl.tick(0.0, snapshot([1.0] * K), np.array([0.0]), np.ones((1, K)), cur)
    assert d.plan == cur and not d.changed and "solver down" in d.reason
    with pytest.raises(PlanningError):
        ctrl.tick(1.0, snapshot([1.0] * K), np.array([0.0]), np.ones((1, K)), None)


def test_bad_inputs_raise_typed_errors_naming_the_field():
    ctrl = _controller()
    with pytest.raises(ControllerInputError) as e:
        ctrl.tick(0.0, snapshot([1.0] * K), np.zeros(3), np.zeros((3, K + 1)), None)
    assert e.value.field == "history_rates"
    with pytest.raises(ControllerInputError) as e:
        ctrl.tick(0.0, snapshot([-1.0] + [0.0] * (K - 1)), np.zeros(0), np.zeros((0, K)), None)
    assert e.value.field == "snapshot.arrival_rates_rps"
    with pytest.raises(ControllerInputError) as e:
        Controller(FakeForecaster(), FakePlanner(), make_cluster(), make_table(), DEFAULT_SCHEME, horizon_s=0)
    assert e.value.field == "horizon_s"


def test_history_is_bounded_and_records_outcomes():
    ctrl = _controller(min_history=1, history_len=3)
    ds = _run(ctrl, np.ones((5, K)))
    assert [d.time_s for d in ctrl.history] == [20.0, 30.0, 40.0]
    updated = ctrl.record_outcome(ds[-1], "applied")
    assert updated.outcome == "applied" and ctrl.history[-1].outcome == "applied"


def test_bin_history_averages_complete_bins_only():
    from oserve.control.controller import bin_history

    ts = np.arange(3, 14, dtype=float)  # seconds 3..13
    rates = np.arange(11 * K, dtype=float).reshape(11, K)
    starts, means = bin_history(ts, rates, 5)
    assert starts.tolist() == [5.0]  # bins [0,5) and [10,15) are incomplete
    assert np.allclose(means[0], rates[2:7].mean(axis=0))
    same_ts, same_rates = bin_history(ts, rates, 1)
    assert np.array_equal(same_ts, ts) and np.array_equal(same_rates, rates)
    sim = pytest.importorskip("oserve.sim.loop")
    assert sim.bin_history is bin_history  # the simulator bins with the very same function


def test_demand_carries_the_classes_minimum_quality():
    from oserve.types import ClassScheme

    d0 = DEFAULT_SCHEME
    scheme = ClassScheme(input_edges=d0.input_edges, output_edges=d0.output_edges, input_names=d0.input_names,
                         output_names=d0.output_names, expected_input_tokens=d0.expected_input_tokens,
                         expected_output_tokens=d0.expected_output_tokens, min_quality=((d0.names[1], 0.9),))
    ctrl = Controller(FakeForecaster(), FakePlanner(), make_cluster(), make_table(), scheme, min_history=1)
    d = ctrl.tick(0.0, snapshot([1.0] * K), np.array([0.0]), np.ones((1, K)), None)
    assert d.demand.min_quality == {d0.names[1]: 0.9}
