"""The simulator models the live router-side queue: batch limits, FIFO waits, new replicas take queued work."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.control.controller import Decision
from oserve.sim.engine import SimOptions, Simulation
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Demand, Plan, ReplicaPlacement
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names


def _table(max_num_seqs: int = 4):
    table = synthetic_table({"small": dict.fromkeys(NAMES, 2.0)}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                            start_time_s=5.0, class_names=NAMES)
    v = table.variants["small"].model_copy(update={"max_num_seqs": max_num_seqs})
    return table.model_copy(update={"variants": {"small": v}})


def _plan(n: int) -> Plan:
    return Plan(replicas=[ReplicaPlacement(variant="small", node="node0", device_ids=(i,)) for i in range(n)],
                routing={c: {"small": 1.0} for c in NAMES})


def _burst_run(router_queue: bool):
    """40 requests at t=0 on one replica; a pinned switch at t=1 s starts two more (ready at ~6 s)."""
    start, target = _plan(1), _plan(3)

    class PinnedController:
        def tick(self, now_s, snapshot, history_ts, history_rates, current):
            plan = target if now_s >= 1 else start
            return Decision(now_s, {}, {}, Demand(rates_rps={}), plan, plan is not current, "test")

    n = 40  # plus one late request: control ticks run until the last arrival
    arrivals = np.append(np.arange(n) * 1e-3, 60.0)
    tr = Trace(arrivals, np.full(n + 1, 100), np.full(n + 1, 100))
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    return Simulation(tr, _table(), cluster, start, controller=PinnedController(),
                      options=SimOptions(control_interval_s=1.0, router_queue=router_queue)).run()


def test_new_replicas_take_queued_work_only_with_the_router_queue() -> None:
    off, on = _burst_run(False), _burst_run(True)
    for res in (off, on):
        assert all(r["finish_s"] is not None for r in res.requests)  # nothing lost
    first = off.requests[0]["replica"]
    assert {r["replica"] for r in off.requests[:40]} == {first}  # the reported bug: new replicas got none
    replicas_on = [r["replica"] for r in on.requests[:40]]
    assert len(set(replicas_on)) == 3
    assert sum(rid != first for rid in replicas_on) >= 10  # the queue moved to the new capacity
    ttft = {name: float(np.median([r["first_token_s"] - r["arrival_s"] for r in res.requests[:40]]))
            for name, res in (("off", off), ("on", on))}
    assert ttft["on"] < ttft["off"]


@pytest.mark.parametrize("router_queue", [True, False])
def test_replica_never_holds_more_than_its_batch_limit(monkeypatch, router_queue: bool) -> None:
    from oserve.sim.replica import SimReplica

    peak: dict[str, int] = {}
    add = SimReplica.add

    def counting_add(self, q):
        add(self, q)
        peak[self.replica_id] = max(peak.get(self.replica_id, 0), self.outstanding)

    monkeypatch.setattr(SimReplica, "add", counting_add)
    n = 30
    tr = Trace(np.arange(n) * 1e-3, np.full(n, 100), np.full(n, 50))
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    res = Simulation(tr, _table(max_num_seqs=4), cluster, _plan(2),
                     options=SimOptions(router_queue=router_queue)).run()
    assert all(r["finish_s"] is not None and not r["touched"] for r in res.requests)
    if router_queue:
        assert peak and max(peak.values()) == 4  # the rest waited in the router
    else:
        assert max(peak.values()) == 15  # least outstanding piles 15 into each engine's queue
