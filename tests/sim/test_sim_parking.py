"""Parked replicas in the simulator: the same switcher steps as live (fake backend), and the wake takes
the variant's modelled ``wake_time_s`` of simulated time, not its start time."""

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
WAKE_S = 2.5


def table():
    caps = {v: {c: 5.0 for c in NAMES} for v in ("small", "big")}
    t = synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB,
                        start_time_s={"small": 20.0, "big": 40.0}, class_names=NAMES)
    return t.model_copy(update={"variants": {k: v.model_copy(update={"wake_time_s": WAKE_S})
                                             for k, v in t.variants.items()}})


def rp(v: str, d: tuple[int, ...]) -> ReplicaPlacement:
    return ReplicaPlacement(variant=v, node="node0", device_ids=d)


def plan(active: list[ReplicaPlacement], parked: list[ReplicaPlacement] = ()) -> Plan:
    variants = sorted({p.variant for p in active})
    return Plan(replicas=active, parked=list(parked), routing={c: {v: 1.0 / len(variants) for v in variants}
                                                               for c in NAMES})


TARGETS = [
    plan([rp("small", (0,))], [rp("big", (2, 3))]),  # initial: big starts and parks
    plan([rp("big", (2, 3))], [rp("small", (0,))]),  # wake big, park small
    plan([rp("small", (0,))], [rp("big", (2, 3))]),  # and back
    plan([rp("small", (0,))]),  # the parked big is no longer kept: stopped
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
    def tick(self, now_s, snapshot, history_ts, history_rates, current):
        target = TARGETS[min(int(round(now_s / TICK_S)), len(TARGETS) - 1)]
        return Decision(now_s, {}, {}, Demand(rates_rps={}), target, target is not current, "scripted")


def sim_run(cluster: ClusterSpec, arrivals: np.ndarray) -> SimRun:
    trace = Trace(arrivals, np.full(len(arrivals), 100), np.full(len(arrivals), 10), name="sparse")
    sim = Simulation(trace, table(), cluster, TARGETS[0], controller=ScriptedController(),
                     options=SimOptions(control_interval_s=TICK_S, drain_timeout_s=5.0))
    run = SimRun(sim)
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(run.run())
    return run


@pytest.mark.timeout(60)
def test_live_and_simulated_parking_take_the_same_steps() -> None:
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    live = asyncio.run(live_steps(cluster))
    run = sim_run(cluster, np.arange(len(TARGETS) + 1) * TICK_S)
    assert [s for s, _ in live] == ["applied"] * len(TARGETS)
    kinds = [[k for k, *_ in steps] for _, steps in live]
    assert "park" in kinds[0] and "wake" in kinds[1] and "park" in kinds[1] and "start" not in kinds[1] + kinds[2]
    assert steps_of(run.switcher.results) == live
    # the simulated wake takes the modelled wake time, not the 40 s start time
    wakes = [s for r in run.switcher.results for s in r.steps if s.kind == "wake"]
    assert len(wakes) == 2 and all(s.finished_s - s.started_s == pytest.approx(WAKE_S) for s in wakes)


@pytest.mark.timeout(60)
def test_no_request_is_lost_across_simulated_wake_and_park() -> None:
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    run = sim_run(cluster, np.arange(0.0, len(TARGETS) * TICK_S, 5.0))
    reqs = run.requests
    assert len(reqs) == len(TARGETS) * TICK_S / 5.0
    assert all(r.finish_s is not None and not r.aborted and not r.refused for r in reqs)
