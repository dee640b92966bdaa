"""Parked (warm) replicas: the step rules, the resource model and the switcher over the fake backend."""

from __future__ import annotations

import asyncio

import pytest
from orch_fakes import GIB, make_cluster, make_table, spec_factory

from oserve.backends.base import SamplingParams
from oserve.control.resources import ResourceModel
from oserve.control.rules import LiveReplica, plan_steps
from oserve.control.switcher import Switcher
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Plan, ReplicaPlacement

pytestmark = pytest.mark.timeout(30)


def rp(variant: str, dev: int, node: str = "node0") -> ReplicaPlacement:
    return ReplicaPlacement(variant=variant, node=node, device_ids=(dev,))


def plan(active: list[ReplicaPlacement], parked: list[ReplicaPlacement] = ()) -> Plan:
    variants = sorted({p.variant for p in active})
    routing = {c: {v: 1.0 / len(variants) for v in variants} for c in DEFAULT_SCHEME.names} if variants else {}
    return Plan(replicas=active, parked=list(parked), routing=routing)


def res(devices: int = 2, share: bool = True, memory_bytes: int = 8 * GIB) -> ResourceModel:
    return ResourceModel(make_cluster(devices=devices, memory_bytes=memory_bytes), make_table(), share_cpu_cores=share)


# ----------------------------------------------------------------- rules
def test_swap_wakes_the_parked_replica_and_parks_the_active_one():
    live = [LiveReplica("f0", rp("big", 0), "ready"), LiveReplica("p0", rp("fast", 0), "parked")]
    steps = plan_steps(live, plan([rp("fast", 0)], [rp("big", 0)]), res(), make_table())
    assert steps.wakes == ("p0",) and steps.parks == ("f0",)
    assert not steps.starts and not steps.stops and not steps.cleanup
    assert steps.make_before_break and len(steps.phases) == 1
    assert steps.phases[0].wakes == ("p0",) and steps.phases[0].parks == ("f0",)


def test_exclusive_cores_park_first_then_wake_on_the_freed_core():
    live = [LiveReplica("f0", rp("big", 0), "ready"), LiveReplica("f1", rp("big", 1), "ready"),
            LiveReplica("p0", rp("fast", 0), "parked"), LiveReplica("p1", rp("fast", 1), "parked")]
    target = plan([rp("fast", 0), rp("fast", 1)], [rp("big", 0), rp("big", 1)])
    steps = plan_steps(live, target, res(share=False), make_table())
    assert set(steps.wakes) == {"p0", "p1"} and set(steps.parks) == {"f0", "f1"} and not steps.starts
    # cores are exclusive: each wake waits for the active replica on its core to be parked; no class loses capacity
    assert not steps.make_before_break and not steps.capacity_gap_classes
    first = steps.phases[0]
    assert not first.wakes and len(first.parks) == 1
    assert sum(len(ph.wakes) for ph in steps.phases) == 2


def test_parked_replicas_of_the_target_start_and_park_missing_ones_stop():
    live = [LiveReplica("f0", rp("big", 0), "ready"), LiveReplica("old", rp("fast", 1), "parked")]
    target = plan([rp("big", 0)], [rp("big", 1)])
    steps = plan_steps(live, target, res(), make_table())
    assert steps.cleanup == ("old",)  # a parked replica the target does not keep is stopped first
    assert steps.phases[0].park_starts == (rp("big", 1),) and not steps.phases[0].starts
    assert steps.keep == ("f0",)


def test_more_active_than_parked_wakes_then_starts_cold():
    live = [LiveReplica("p0", rp("fast", 0), "parked")]
    steps = plan_steps(live, plan([rp("fast", 0), rp("fast", 1)]), res(), make_table())
    assert steps.wakes == ("p0",) and steps.starts == (rp("fast", 1),)


def test_parked_replicas_hold_memory_on_cpu_and_none_on_gpu():
    cpu = res(devices=2, memory_bytes=4 * GIB)  # pool of 8 GiB, 4 GiB per replica
    assert not cpu.fits([rp("big", 0)], rp("fast", 1), [rp("fast", 0)])
    assert cpu.fits([rp("big", 0)], rp("fast", 1), [])
    gpu_table = make_table(device_type="a100-80gb")
    gpu = ResourceModel(ClusterSpec.homogeneous(1, 1, "a100-80gb", 4 * GIB), gpu_table)
    assert gpu.fits([], rp("fast", 0), [rp("big", 0)])  # asleep: weights in host memory
    assert not gpu.fits([rp("big", 0)], rp("fast", 0))


# ----------------------------------------------------------------- switcher over the fake backend
async def stream(router: Router, rid: str, max_tokens: int) -> list:
    replica = router.acquire(None, max_tokens + 8)
    try:
        return [c async for c in replica.generate(rid, "hello world", SamplingParams(max_tokens=max_tokens))]
    finally:
        router.release(replica.replica_id)


async def test_switcher_activates_parked_replica_by_wake_without_a_start():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01, wake_delay_s=0.05))
    router = Router()
    sw = Switcher(backend, router, spec_factory, res(), drain_timeout_s=5.0, warmup_requests=1)
    first = await sw.apply(plan([rp("big", 0)], [rp("fast", 0)]))
    assert first.status == "applied", first.steps
    states = {m.placement.variant: m.state for m in sw.replicas.values()}
    assert states == {"big": "ready", "fast": "parked"}
    assert [r.spec.variant for r in router.replicas()] == ["big"]  # parked: not in the router
    assert sw.actual_plan().parked == [rp("fast", 0)]
    starts = backend.starts

    streams = [asyncio.create_task(stream(router, f"s{i}", 20)) for i in range(3)]
    await asyncio.sleep(0.03)
    res2 = await sw.apply(plan([rp("fast", 0)], [rp("big", 0)]))
    outs = await asyncio.gather(*streams)
    assert res2.status == "applied", res2.steps
    assert backend.starts == starts  # no cold start
    assert all(o[-1].finished and o[-1].completion_tokens == 20 for o in outs) and res2.aborted_requests == 0
    kinds = [s.kind for s in res2.steps]
    assert "start" not in kinds and kinds.index("wake") < kinds.index("route") < kinds.index("park")
    wake = next(s for s in res2.steps if s.kind == "wake")
    assert wake.ok and wake.finished_s - wake.started_s >= 0.05
    assert [r.spec.variant for r in router.ready_replicas()] == ["fast"]
    assert {m.placement.variant: m.state for m in sw.replicas.values()} == {"fast": "ready", "big": "parked"}
    assert all(r.state in ("ready", "parked") for r in backend.replicas.values())
    # and back again: still no start
    res3 = await sw.apply(plan([rp("big", 0)], [rp("fast", 0)]))
    assert res3.status == "applied" and backend.starts == starts


async def test_parked_replica_dropped_from_the_plan_is_stopped():
    backend = FakeBackend()
    router = Router()
    sw = Switcher(backend, router, spec_factory, res(), warmup_requests=0)
    await sw.apply(plan([rp("big", 0)], [rp("fast", 1)]))
    done = await sw.apply(plan([rp("big", 0)]))
    assert done.status == "applied" and [m.placement.variant for m in sw.replicas.values()] == ["big"]
    assert sorted(r.state for r in backend.replicas.values()) == ["ready", "stopped"]


# ----------------------------------------------------------------- the parking policy
def test_park_plan_puts_the_other_variant_beside_each_active_replica():
    from oserve.policies.parking import park_plan
    table = make_table()
    cluster = make_cluster(devices=2, memory_bytes=8 * GIB)
    out = park_plan(plan([rp("big", 0), rp("big", 1)]), {"big": 2, "fast": 2}, cluster, table)
    assert sorted(out.parked, key=lambda p: p.device_ids) == [rp("fast", 0), rp("fast", 1)]
    # after the planner moved traffic to 'fast', 'big' parks where it ran
    swapped = park_plan(plan([rp("fast", 1), rp("fast", 0)]), {"big": 2, "fast": 2}, cluster, table, previous=out)
    assert sorted(swapped.parked, key=lambda p: p.device_ids) == [rp("big", 0), rp("big", 1)]


def test_park_plan_parks_fewer_when_memory_is_short_and_checks_names():
    from oserve.errors import ConfigError
    from oserve.policies.parking import park_plan
    table = make_table()  # 4 GiB per replica
    cluster = make_cluster(devices=2, memory_bytes=5 * GIB)  # a 10 GiB pool: the two active replicas, no more
    out = park_plan(plan([rp("big", 0), rp("big", 1)]), {"fast": 2}, cluster, table)
    assert out.parked == [] and "not parked: fast (2 short: memory)" in out.reason
    with pytest.raises(ConfigError, match="keep_warm") as e:
        park_plan(plan([rp("big", 0)]), {"nope": 1}, cluster, table)
    assert e.value.field == "orchestrator.parking.keep_warm.nope"


def test_parking_planner_charges_the_wake_time_of_a_parked_variant():
    from oserve.policies.parking import DEFAULT_WAKE_S, ParkingPlanner, wake_table

    table = make_table()  # start_time_s 5 s
    cur = plan([rp("big", 0)], [rp("fast", 0)])
    wt = wake_table(table, cur, {})
    assert wt.variants["fast"].start_time_s == DEFAULT_WAKE_S and wt.variants["big"].start_time_s == 5.0
    assert wake_table(table, cur, {"fast": 0.2}).variants["fast"].start_time_s == 0.2

    seen = {}

    class Inner:
        name = "inner"

        def plan(self, cluster, table, demand, current):
            seen["start"] = table.variants["fast"].start_time_s
            return plan([rp("fast", 0)])

    from oserve.types import Demand
    out = ParkingPlanner(Inner(), {"big": 1, "fast": 1}, {"fast": 0.3}).plan(
        make_cluster(devices=2, memory_bytes=8 * GIB), table, Demand(rates_rps={}), cur)
    assert seen["start"] == 0.3 and out.parked == [rp("big", 0)] and out.replicas == [rp("fast", 0)]


def test_relocation_drops_parked_replicas_on_gone_nodes():
    from oserve.control.rules import relocate_plan
    two = ResourceModel(make_cluster(devices=2, memory_bytes=8 * GIB, nodes=2), make_table())
    one = two.with_cluster(make_cluster(devices=2, memory_bytes=8 * GIB, nodes=1))
    p = plan([rp("big", 0)], [rp("fast", 0), rp("fast", 0, node="node1")])
    out = relocate_plan(p, one).plan
    assert out.parked == [rp("fast", 0)] and out.replicas == [rp("big", 0)]


def test_wake_table_makes_deactivating_a_kept_warm_variant_cheap_too():
    from oserve.policies.parking import wake_table
    table = make_table()
    cur = plan([rp("big", 0)], [rp("fast", 0)])
    assert wake_table(table, cur, {"big": 0.1}, keep_warm=["big"]).variants["big"].start_time_s == 0.1
    assert wake_table(table, plan([rp("big", 0)]), {}) is table  # nothing warm: the table itself


@pytest.mark.parametrize("kind", ["greedy", "milp"])
def test_a_real_planner_moves_traffic_to_the_parked_variant_at_a_burst(kind):
    from oserve.policies import make_planner
    from oserve.policies.parking import ParkingPlanner
    from oserve.types import Demand
    cur = plan([rp("big", 0), rp("big", 1)], [rp("fast", 0), rp("fast", 1)])
    burst = Demand(rates_rps=dict.fromkeys(DEFAULT_SCHEME.names, 0.9))  # 3.6 req/s > 2 x 1 req/s of 'big'
    out = ParkingPlanner(make_planner(kind), {"big": 2, "fast": 2}).plan(
        make_cluster(devices=2, memory_bytes=8 * GIB), make_table(), burst, cur)
    assert out.replica_counts() == {"fast": 2} and sorted(p.variant for p in out.parked) == ["big", "big"]
    steps = plan_steps([LiveReplica("b0", rp("big", 0), "ready"), LiveReplica("b1", rp("big", 1), "ready"),
                        LiveReplica("f0", rp("fast", 0), "parked"), LiveReplica("f1", rp("fast", 1), "parked")],
                       out, res(), make_table())
    assert sorted(steps.wakes) == ["f0", "f1"] and sorted(steps.parks) == ["b0", "b1"] and not steps.starts


@pytest.mark.parametrize(("wake", "keep", "field"), [
    ({"big": float("inf")}, {"big": 1}, "control.parking.wake_time_s.big"),
    ({"big": float("nan")}, {"big": 1}, "control.parking.wake_time_s.big"),
    ({}, {"nope": 1}, "control.parking.keep_warm.nope"),
])
def test_parking_planner_refuses_non_finite_wake_times_naming_the_configs_own_field(wake, keep, field):
    from orch_fakes import FakePlanner

    from oserve.errors import ConfigError
    from oserve.policies.parking import ParkingPlanner

    planner = ParkingPlanner(FakePlanner(), keep, wake, field="control.parking")
    with pytest.raises(ConfigError) as e:
        planner.plan(make_cluster(), make_table(), None, None)  # type: ignore[arg-type]
    assert e.value.field == field and str(e.value).startswith("control.parking.")


@pytest.mark.parametrize("key", ["min_gain_fraction", "switch_cost_weight", "scale_down_window_s"])
def test_hysteresis_and_parking_configs_refuse_infinity(key):
    from pydantic import ValidationError

    from oserve.config import HysteresisConfig, ParkingConfig

    with pytest.raises(ValidationError, match=key):
        HysteresisConfig.model_validate({key: float("inf")})
    with pytest.raises(ValidationError, match="wake_time_s"):
        ParkingConfig.model_validate({"wake_time_s": {"big": float("inf")}})


def test_park_plan_names_the_simulate_configs_field():
    from oserve.errors import ConfigError
    from oserve.policies.parking import park_plan

    with pytest.raises(ConfigError) as e:
        park_plan(plan([rp("big", 0)]), {"nope": 1}, make_cluster(), make_table(), field="control.parking")
    assert e.value.field == "control.parking.keep_warm.nope"
