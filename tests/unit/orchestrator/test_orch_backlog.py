"""Backlog as demand and the forecast lead (issues 12 and 13): controller + monitor, real greedy planner."""

from __future__ import annotations

import numpy as np
import pytest
from orch_fakes import FakeForecaster, FakePlanner, make_cluster, make_table, plan_of, snapshot

from oserve.clock import SimClock
from oserve.control.backlog import backlog_rps
from oserve.control.controller import Controller, ControllerInputError
from oserve.errors import ConfigError
from oserve.policies import make_planner
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

NAMES = DEFAULT_SCHEME.names
SHORT = DEFAULT_SCHEME.by_name(NAMES[0])


def test_backlog_rule() -> None:
    assert backlog_rps(0, 50.0, 2.0) == 0.0
    assert backlog_rps(10, 0.5, 2.0) == 0.0  # younger than half the SLO: normal batching delay
    assert backlog_rps(10, 1.5, 2.0, min_drain_s=0.1) == pytest.approx(10 / 0.5)  # spread over the SLO left
    assert backlog_rps(34, 15.0, 2.0) == pytest.approx(3.4)  # past the SLO: drained over min_drain_s (10 s)
    assert backlog_rps(10, 0.5, 2.0, min_age_fraction=0.0) == pytest.approx(1.0)


def test_backlog_parameters_name_the_field() -> None:
    for kw, field in (({"backlog_min_age_fraction": 1.5}, "backlog_min_age_fraction"),
                      ({"backlog_min_drain_s": 0.0}, "backlog_min_drain_s")):
        with pytest.raises(ConfigError) as ei:
            Controller(FakeForecaster(), FakePlanner(), make_cluster(), make_table(), DEFAULT_SCHEME, **kw)
        assert ei.value.field == field
    with pytest.raises(ControllerInputError) as ei2:
        Controller(FakeForecaster(), FakePlanner(), make_cluster(), make_table(), DEFAULT_SCHEME, switch_lead_s=-1)
    assert ei2.value.field == "switch_lead_s"


def test_monitor_snapshot_reports_waiting_requests_and_their_age() -> None:
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10)
    for i in range(5):
        mon.record_admission(f"r{i}", SHORT, 10, 10)
    clock.advance_to(3.0)
    mon.record_first_token("r0")
    mon.record_completion("r1", 0, False)
    clock.advance_to(4.0)
    snap = mon.snapshot()
    assert snap.waiting.tolist() == [3, 0, 0, 0]
    assert snap.oldest_wait_s.tolist() == [4.0, 0.0, 0.0, 0.0]


def _burst_decision(backlog: bool, min_replicas: int = 1):
    """40 requests at t=0 on one replica serving 2 req/s (SLO TTFT 2 s); 6 served; tick at t=15 s."""
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10, history_s=120)
    for i in range(40):
        mon.record_admission(f"b{i}", SHORT, 100, 20)
    for i in range(6):
        clock.advance_to(0.5 * (i + 1))
        mon.record_first_token(f"b{i}")
        mon.record_completion(f"b{i}", 20, True)
    clock.advance_to(15.0)
    snap = mon.snapshot()
    assert snap.arrival_rates_rps.sum() == 0.0  # the burst has left the window: the rate alone says "idle"
    assert snap.waiting[0] == 34
    table = make_table(capacities={"fast": dict.fromkeys(NAMES, 2.0)})
    planner = make_planner("greedy", weights={"fill_idle_devices": False})  # energy saving
    ctrl = Controller(FakeForecaster(), planner, make_cluster(devices=4), table, DEFAULT_SCHEME,
                      min_history=1000, backlog=backlog, min_replicas=min_replicas)
    ts, rates = mon.rate_history()
    return ctrl.tick(15.0, snap, ts, rates, plan_of(("fast", "node0", (0,))))


def test_burst_backlog_keeps_and_starts_capacity_in_energy_saving_mode() -> None:
    # the reported bug: 0 replicas with 34 queued (without the one-replica floor, which hides it)
    before = _burst_decision(backlog=False, min_replicas=0)
    assert before.plan.replica_counts() == {}
    assert _burst_decision(backlog=False).plan.replica_counts() == {"fast": 1}  # the floor alone keeps one
    d = _burst_decision(backlog=True)
    assert d.backlog_rps[NAMES[0]] == pytest.approx(3.4)  # 34 queued, past the SLO, over 10 s
    assert d.demand.rates_rps[NAMES[0]] == pytest.approx(3.4)
    n = d.plan.replica_counts().get("fast", 0)
    assert n >= 2 and n * 2.0 * 0.7 >= 3.4  # capacity at the planner's 70 % target utilization
    assert d.to_dict()["backlog_rps"] == d.backlog_rps


class _HorizonForecaster(FakeForecaster):
    def __init__(self) -> None:
        super().__init__()
        self.horizons: list[float] = []

    def predict(self, horizon_s: float):
        self.horizons.append(horizon_s)
        return super().predict(horizon_s)


@pytest.mark.parametrize(("horizon_s", "lead", "expected"), [(1.0, None, 5.0), (30.0, None, 30.0),
                                                             (10.0, 120.0, 120.0)])
def test_forecast_leads_by_the_switch_time(horizon_s: float, lead: float | None, expected: float) -> None:
    f = _HorizonForecaster()
    ctrl = Controller(f, FakePlanner(), make_cluster(), make_table(), DEFAULT_SCHEME, horizon_s=horizon_s,
                      min_history=1, switch_lead_s=lead)  # the table's variants start in 5 s
    ts = np.array([0.0])
    d = ctrl.tick(0.0, snapshot([1.0, 0, 0, 0]), ts, np.array([[1.0, 0, 0, 0]]), None)
    assert f.horizons == [expected] and d.horizon_s == expected == ctrl.effective_horizon_s
