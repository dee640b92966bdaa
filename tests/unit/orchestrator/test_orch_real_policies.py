"""The orchestrator with the real forecaster and planner (FakeBackend as the engine, no engines)."""

from __future__ import annotations

import pytest
from orch_fakes import make_cluster, make_table, spec_factory

from oserve.clock import SimClock
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.forecast import make as make_forecaster
from oserve.policies import make_planner
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(60)
NAMES = DEFAULT_SCHEME.names
CAPS = {"short": {c: (3.0 if c.endswith("short-out") else 0.3) for c in NAMES},
        "long": {c: (0.5 if c.endswith("short-out") else 1.5) for c in NAMES}}


def feed(monitor: WorkloadMonitor, clock: SimClock, cls_name: str, per_s: int, seconds: int) -> None:
    cls = DEFAULT_SCHEME.by_name(cls_name)
    for _ in range(seconds):
        for i in range(per_s):
            rid = f"{cls_name}{clock.now()}-{i}"
            monitor.record_admission(rid, cls, 10, 100)
            monitor.record_first_token(rid)  # served at once: no backlog (the controller's backlog rule)
            monitor.record_completion(rid, 100, True)
        clock.advance_to(clock.now() + 1.0)


async def test_greedy_planner_and_ewma_switch_on_a_mix_shift():
    mclock = SimClock(0.0)
    monitor = WorkloadMonitor(DEFAULT_SCHEME, mclock, window_s=5, history_s=120)
    backend = FakeBackend()
    orch = Orchestrator.build(backend, make_forecaster("ewma"), make_planner("greedy"), make_cluster(devices=4),
                              make_table(capacities=CAPS), router=Router(), monitor=monitor,
                              spec_factory=spec_factory,
                              options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600,
                                                          min_history=3, history_bin_s=5))
    feed(monitor, mclock, "short-in/short-out", 4, 20)
    await orch.start()  # no initial plan: the first decision's plan is deployed
    try:
        first = orch.history[0]
        assert "warming up" not in first.reason  # 4 complete 5-s bins >= min_history
        assert set(orch.current_plan.replica_counts()) == {"short"}
        assert first.outcome.startswith("applied")
        feed(monitor, mclock, "short-in/long-out", 3, 20)
        d = await orch.step()
        assert d.changed and d.replicas_changed and "long" in d.plan.replica_counts()
        await orch.switcher.idle()
        assert orch.current_plan.replica_counts() == d.plan.replica_counts()
        assert orch.history[-1].outcome.startswith("applied")
    finally:
        await orch.stop()
