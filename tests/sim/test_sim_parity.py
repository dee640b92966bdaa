"""Parity: the live switcher over the fake backend and the simulator take the same steps.

The simulator drives the real :class:`~oserve.control.switcher.Switcher` on a simulated backend; this
test submits the same targets, one after the other, to a live switcher over
:class:`~oserve.testing.fake_backend.FakeBackend` (wall clock, real router) and to the simulator, and
compares every transition's status and steps (kind, replica, variant, node, ok, detail).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from oserve.backends.base import ReplicaSpec
from oserve.control.controller import Decision
from oserve.control.records import SwitchResult
from oserve.control.resources import ResourceModel
from oserve.control.specs import spec_factory_from_templates
from oserve.control.switcher import Switcher
from oserve.server.router import Router
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.loop import SimRun
from oserve.testing.fake_backend import FakeBackend
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Demand, Plan, ReplicaPlacement
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names
TICK_S = 1000.0


def table():
    caps = {v: {c: 5.0 for c in NAMES} for v in ("small", "big")}
    return synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB,
                           start_time_s={"small": 20.0, "big": 40.0}, class_names=NAMES)


def plan(*reps: tuple[str, tuple[int, ...]]) -> Plan:
    variants = sorted({v for v, _ in reps})
    return Plan(replicas=[ReplicaPlacement(variant=v, node="node0", device_ids=d) for v, d in reps],
                routing={c: {v: 1.0 / len(variants) for v in variants} for c in NAMES})


TARGETS = [
    plan(("small", (0,))),  # the initial deployment
    plan(("small", (0,)), ("small", (1,))),  # one start
    plan(("small", (0,)), ("big", (2, 3))),  # make-before-break: start big, then drain small on 1
    plan(("big", (0, 1)), ("big", (2, 3))),  # rolling: small on 0 must stop before big fits on 0-1
    plan(("small", (3,))),  # both bigs drain; the small one starts where a big ran
]


def steps_of(results: list[SwitchResult]) -> list[tuple]:
    return [(r.status, [(s.kind, s.replica_id, s.variant, s.node, s.ok, s.detail) for s in r.steps])
            for r in results]


async def live_steps(cluster: ClusterSpec) -> list[tuple]:
    templates = {v: ReplicaSpec(variant=v, model=v, served_model_name=v) for v in ("small", "big")}
    sw = Switcher(FakeBackend(), Router(), spec_factory_from_templates(templates, cluster),
                  ResourceModel(cluster, table()), drain_timeout_s=5.0, warmup_requests=0)
    results = [await sw.apply(t) for t in TARGETS]
    await sw.shutdown(0.0)
    return steps_of(results)


class ScriptedController:
    """Asks for ``TARGETS[k]`` at the ``k``-th control tick (a stand-in for forecaster + planner)."""

    def tick(self, now_s, snapshot, history_ts, history_rates, current):
        k = min(int(round(now_s / TICK_S)), len(TARGETS) - 1)
        target = TARGETS[k]
        return Decision(now_s, {}, {}, Demand(rates_rps={}), target, target is not current, "scripted")


def sim_steps(cluster: ClusterSpec) -> list[tuple]:
    n = len(TARGETS) + 1
    trace = Trace(np.arange(n) * TICK_S, np.full(n, 100), np.full(n, 10), name="sparse")
    sim = Simulation(trace, table(), cluster, TARGETS[0], controller=ScriptedController(),
                     options=SimOptions(control_interval_s=TICK_S, drain_timeout_s=5.0))
    run = SimRun(sim)
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(run.run())
    return steps_of(run.switcher.results)


@pytest.mark.timeout(60)
def test_live_and_simulated_switches_take_the_same_steps() -> None:
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    live = asyncio.run(live_steps(cluster))
    simulated = sim_steps(cluster)
    assert [s for s, _ in live] == ["applied"] * len(TARGETS)
    kinds = [[k for k, *_ in steps] for _, steps in live]
    assert "drain" in kinds[2] and kinds[2].index("start") < kinds[2].index("drain")  # make-before-break
    assert kinds[3].index("stop") < kinds[3].index("start")  # rolling: the stop frees memory first
    assert simulated == live


async def test_a_simulation_started_from_async_code_runs_on_its_own_loop() -> None:
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    trace = Trace(np.arange(20) * 1.0, np.full(20, 100), np.full(20, 10), name="steady")
    res = Simulation(trace, table(), cluster, TARGETS[0]).run()  # inside this test's running loop
    assert len(res.requests) == 20 and all(r["finish_s"] is not None for r in res.requests)
