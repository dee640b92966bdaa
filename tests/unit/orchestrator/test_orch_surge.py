"""Surge checks: a burst between control ticks makes the orchestrator decide at once (FakeBackend, no engines)."""

from __future__ import annotations

import numpy as np
import pytest
from orch_fakes import FakeSnapshot, make_cluster, make_table, plan_of, spec_factory

from oserve.clock import SimClock
from oserve.config import SurgeConfig
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.control.surge import FlooredSnapshot, QuietAfter, SurgeRule, check_surge, window_rates
from oserve.errors import ConfigError
from oserve.forecast import make as make_forecaster
from oserve.policies import make_planner
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(60)
NAMES = DEFAULT_SCHEME.names
SS = "short-in/short-out"
TABLE = make_table(capacities={"fast": dict.fromkeys(NAMES, 3.0)})  # 3 req/s per replica within SLO
CLUSTER = make_cluster(devices=4)
ONE = plan_of(("fast", "node0", (0,)))


def rates(ss: float) -> dict[str, float]:
    return {c: (ss if c == SS else 0.0) for c in NAMES}


def test_window_rates_averages_the_last_bins():
    ts = np.arange(8, dtype=float)
    r = np.zeros((8, len(NAMES)))
    r[:, 0] = [1, 1, 1, 1, 1, 6, 6, 6]
    mean, recent, n = window_rates(ts, r, 3)
    assert mean[0] == pytest.approx(6.0) and recent[0] == pytest.approx(6.0) and n == 18
    mean, lead, n = window_rates(ts, r, 5)
    # last 2 of 5 s at 6 req/s, the 3 s before at 8/3: the trend leads to 6 + (6 - 8/3)
    assert mean[0] == pytest.approx(4.0) and lead[0] == pytest.approx(6.0 + 6.0 - 8.0 / 3.0) and n == 20
    r[:, 0] = [1, 1, 1, 1, 1, 6, 2, 2]  # falling: the leading rate is the last half's, never below it
    mean, lead, n = window_rates(ts, r, 5)
    assert lead[0] == pytest.approx(2.0)
    mean, recent, n = window_rates(np.zeros(0), np.zeros((0, len(NAMES))), 5)
    assert mean.shape == recent.shape == (len(NAMES),) and n == 0


def test_check_surge_fires_above_table_capacity_only():
    rule = SurgeRule(window_s=5, capacity_factor=1.0, min_arrivals=8)
    calm = check_surge(rule, ONE, CLUSTER, TABLE, rates(2.0), 10)  # 2 of 3 req/s
    assert not calm.surge and calm.utilization == pytest.approx(2 / 3)
    burst = check_surge(rule, ONE, CLUSTER, TABLE, rates(4.5), 22)
    assert burst.surge and burst.utilization == pytest.approx(1.5)
    assert burst.reason.startswith("surge:") and "1.50" in burst.reason
    # the same rates over two replicas are within capacity
    two = plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,)))
    assert not check_surge(rule, two, CLUSTER, TABLE, rates(4.5), 22).surge
    # a handful of requests is noise, however high their rate reads
    assert not check_surge(rule, ONE, CLUSTER, TABLE, rates(4.5), 7).surge
    assert not check_surge(rule, None, CLUSTER, TABLE, rates(4.5), 22).surge
    # a rising burst: the surge plans for the window's last half when it is higher than the mean
    rising = check_surge(rule, ONE, CLUSTER, TABLE, rates(4.5), 22, recent_rps=rates(7.0))
    assert rising.surge and rising.utilization == pytest.approx(1.5) and rising.rates_rps[SS] == 7.0
    assert check_surge(rule, ONE, CLUSTER, TABLE, rates(2.0), 10, recent_rps=rates(7.0)).rates_rps[SS] == 2.0
    # growth_factor: a surge plans for a multiple of its rates; no surge, no change; the utilization is measured
    grown = SurgeRule(window_s=5, capacity_factor=1.0, min_arrivals=8, growth_factor=2.0)
    big = check_surge(grown, ONE, CLUSTER, TABLE, rates(4.5), 22, recent_rps=rates(7.0))
    assert big.surge and big.rates_rps[SS] == 14.0 and big.utilization == pytest.approx(1.5) and "14.00" in big.reason
    assert check_surge(grown, ONE, CLUSTER, TABLE, rates(2.0), 10, recent_rps=rates(7.0)).rates_rps[SS] == 2.0


def test_surge_rule_and_config_name_the_bad_field():
    with pytest.raises(ConfigError) as e:
        SurgeRule(window_s=0)
    assert e.value.field == "surge.window_s"
    with pytest.raises(ConfigError) as e:
        SurgeRule(capacity_factor=float("nan"))
    assert e.value.field == "surge.capacity_factor"
    with pytest.raises(ConfigError) as e:
        SurgeRule(min_gap_s=-1)
    assert e.value.field == "surge.min_gap_s"
    for bad in (0.5, 101.0, 1e308, "2"):
        with pytest.raises(ConfigError) as e:
            SurgeRule(growth_factor=bad)  # type: ignore[arg-type]
        assert e.value.field == "surge.growth_factor" and e.value.allowed == "1..100 (multiple of the surge's rates)"
    with pytest.raises(ValueError, match="growth_factor"):
        SurgeConfig(growth_factor=float("inf"))
    assert SurgeRule(**SurgeConfig(window_s=3, min_arrivals=4).model_dump()) == SurgeRule(window_s=3, min_arrivals=4)
    with pytest.raises(ValueError, match="window_s"):
        SurgeConfig(window_s=0)


def test_floored_snapshot_raises_rates_and_keeps_the_rest():
    snap = FakeSnapshot(time_s=3.0, class_names=tuple(NAMES), arrival_rates_rps=np.array([1.0, 2.0, 0.0, 0.0]))
    f = FlooredSnapshot(snap, {NAMES[0]: 4.0, NAMES[1]: 1.0})
    assert f.arrival_rates_rps.tolist() == [4.0, 2.0, 0.0, 0.0]
    assert f.time_s == 3.0 and f.class_names == tuple(NAMES)
    assert snap.arrival_rates_rps.tolist() == [1.0, 2.0, 0.0, 0.0]  # the monitor's snapshot is not changed


def feed(monitor: WorkloadMonitor, clock: SimClock, per_s: int, seconds: int) -> None:
    cls = DEFAULT_SCHEME.by_name(SS)
    for _ in range(seconds):
        for i in range(per_s):
            rid = f"r{clock.now()}-{i}"
            monitor.record_admission(rid, cls, 10, 100)
            monitor.record_first_token(rid)
            monitor.record_completion(rid, 100, True)
        clock.advance_to(clock.now() + 1.0)


async def test_a_burst_between_ticks_is_decided_at_once_and_calm_traffic_is_not():
    mclock = SimClock(0.0)
    monitor = WorkloadMonitor(DEFAULT_SCHEME, mclock, window_s=10, history_s=120)
    orch = Orchestrator.build(
        FakeBackend(), make_forecaster("ewma"), make_planner("milp"), CLUSTER, TABLE, router=Router(),
        monitor=monitor, spec_factory=spec_factory, initial_plan=ONE,
        options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, min_history=3,
                                    surge=SurgeRule(window_s=3, min_arrivals=8, min_gap_s=0.0)))
    feed(monitor, mclock, 2, 20)  # 2 req/s on one 3-req/s replica
    await orch.start()
    try:
        assert await orch.check_surge() is None
        assert orch.history == []
        feed(monitor, mclock, 9, 3)  # 9 req/s for 3 s: the 10-s window reads 4.1, the 3-s window 9
        assert monitor.snapshot().arrival_rates_rps[0] == pytest.approx(4.1)
        d = await orch.check_surge()
        assert d is not None and d.reason.startswith("surge:")
        assert d.observed_rps[SS] == pytest.approx(9.0)  # planned on the short window, not the 10-s one
        assert d.replicas_changed and d.plan.replica_counts()["fast"] >= 3  # 9 req/s needs >= 3 replicas
        await orch.switcher.idle()
        assert orch.current_plan.replica_counts()["fast"] >= 3
        assert await orch.check_surge() is None  # the new plan carries the burst
    finally:
        await orch.stop()


async def test_surge_checks_respect_the_gap_and_a_pinned_plan():
    mclock = SimClock(0.0)
    monitor = WorkloadMonitor(DEFAULT_SCHEME, mclock, window_s=10, history_s=120)
    orch = Orchestrator.build(
        FakeBackend(), make_forecaster("ewma"), make_planner("milp"), CLUSTER, TABLE, router=Router(),
        monitor=monitor, spec_factory=spec_factory, initial_plan=ONE,
        options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, min_history=3,
                                    surge=SurgeRule(window_s=3, min_arrivals=8, min_gap_s=3600.0)))
    feed(monitor, mclock, 9, 20)
    await orch.start()
    try:
        await orch.step()  # a decision just now: the next surge decision waits min_gap_s
        assert await orch.check_surge() is None
        orch.options = OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, min_history=3,
                                           surge=SurgeRule(window_s=3, min_arrivals=8, min_gap_s=0.0))
        await orch.pin(ONE)
        n = len(orch.history)
        assert await orch.check_surge() is None  # an admin's pin is not overridden
        assert len(orch.history) == n
    finally:
        await orch.stop()


def test_a_deployment_without_routing_is_scored_as_the_router_spreads_it():
    """The config's initial deployment has no routing until the first decision: the check must score it
    spread over its replicas (as the router does), not as capacity nowhere (a false surge)."""
    bare = ONE.model_copy(update={"routing": {}})
    calm = check_surge(SurgeRule(min_arrivals=1), bare, CLUSTER, TABLE, rates(0.1), 10)
    assert not calm.surge and calm.utilization == pytest.approx(0.1 / 3.0)
    assert check_surge(SurgeRule(min_arrivals=1), bare, CLUSTER, TABLE, rates(4.5), 22).surge


def test_check_interval_has_a_floor():
    with pytest.raises(ConfigError) as e:
        SurgeRule(check_interval_s=0.001)
    assert e.value.field == "surge.check_interval_s" and "0.1" in e.value.allowed
    with pytest.raises(ValueError, match="check_interval_s"):
        SurgeConfig(check_interval_s=1e-9)


def test_quiet_after_skips_repeats_until_the_load_grows_or_the_period_ends():
    q = QuietAfter(until_s=10.0, utilization=1.5)
    same = check_surge(SurgeRule(), ONE, CLUSTER, TABLE, rates(4.5), 22)  # utilization 1.5
    grown = check_surge(SurgeRule(), ONE, CLUSTER, TABLE, rates(6.0), 30)  # 2.0 > 1.5 x 1.2
    assert q.skips(same, 5.0) and not q.skips(grown, 5.0) and not q.skips(same, 10.0)


async def test_a_surge_that_changes_nothing_is_not_decided_again_every_check():
    mclock = SimClock(0.0)
    monitor = WorkloadMonitor(DEFAULT_SCHEME, mclock, window_s=10, history_s=120)
    one_device = make_cluster(devices=1)
    orch = Orchestrator.build(
        FakeBackend(), make_forecaster("ewma"), make_planner("milp"), one_device, TABLE, router=Router(),
        monitor=monitor, spec_factory=spec_factory, initial_plan=ONE,
        options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, min_history=3,
                                    surge=SurgeRule(window_s=3, min_arrivals=8, min_gap_s=0.0)))
    feed(monitor, mclock, 9, 20)  # 9 req/s on the only device's 3-req/s replica: nothing more fits
    await orch.start()
    try:
        d = await orch.check_surge()
        assert d is not None and not d.replicas_changed
        assert await orch.check_surge() is None  # the same overload: quiet until the next tick
        feed(monitor, mclock, 14, 3)  # the load grows by more than REPEAT_GROWTH: decide again
        assert await orch.check_surge() is not None
    finally:
        await orch.stop()
