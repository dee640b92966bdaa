"""Switcher execution against FakeBackend (a fake engine) and the real Router: races and drains."""

from __future__ import annotations

import asyncio

import pytest
from orch_fakes import GIB, make_cluster, make_table, plan_of, spec_factory

from oserve.backends.base import SamplingParams
from oserve.control.resources import ResourceModel
from oserve.control.switcher import Switcher
from oserve.errors import RequestAbortedError
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions

pytestmark = pytest.mark.timeout(30)


def make_switcher(backend: FakeBackend, *, devices: int = 4, drain_timeout_s: float = 5.0, **kw) -> tuple[Switcher, Router]:
    table = make_table()
    router = Router()
    sw = Switcher(backend, router, spec_factory, ResourceModel(make_cluster(devices=devices, memory_bytes=4 * GIB),
                                                                table),
                  drain_timeout_s=drain_timeout_s, warmup_requests=2, **kw)
    return sw, router


def assert_view_matches_reality(sw: Switcher, router: Router, backend: FakeBackend) -> None:
    """The switcher's registry, the router and the engines agree on what runs."""
    running = {rid for rid, r in backend.replicas.items() if r.state in ("ready", "draining")}
    assert set(sw.replicas) == running
    assert {r.replica_id for r in router.replicas()} == running
    assert all(m.state == "ready" for m in sw.replicas.values())


async def stream(router: Router, rid: str, max_tokens: int) -> list:
    replica = router.acquire(None, max_tokens + 8)
    try:
        return [c async for c in replica.generate(rid, "hello world", SamplingParams(max_tokens=max_tokens))]
    finally:
        router.release(replica.replica_id)


async def test_initial_apply_starts_warms_and_routes():
    backend = FakeBackend()
    sw, router = make_switcher(backend)
    res = await sw.apply(plan_of(("fast", "node0", (0,)), ("big", "node0", (1,))))
    assert res.status == "applied", res.steps
    assert router.ready_count() == 2
    assert all(r.requests_started == 2 for r in backend.replicas.values())  # warm-up requests
    assert set(router.routing) == set(sw.actual_plan().routing) and sw.actual_plan().replica_counts() == {
        "fast": 1, "big": 1}
    again = await sw.apply(plan_of(("fast", "node0", (0,)), ("big", "node0", (1,))))
    assert again.status == "unchanged" and backend.starts == 2


async def test_streams_in_flight_during_drain_complete():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    old = next(iter(sw.replicas))
    streams = [asyncio.create_task(stream(router, f"s{i}", 30)) for i in range(4)]
    await asyncio.sleep(0.05)
    res = await sw.apply(plan_of(("big", "node0", (1,))))
    assert res.status == "applied" and res.make_before_break and res.aborted_requests == 0
    outs = await asyncio.gather(*streams)
    assert all(o[-1].finished and o[-1].completion_tokens == 30 for o in outs)
    assert old not in sw.replicas and backend.replicas[old].state == "stopped"
    # the drained replica was out of the router before the new one took all traffic
    assert [r.spec.variant for r in router.ready_replicas()] == ["big"]
    kinds = [s.kind for s in res.steps]
    assert kinds.index("start") < kinds.index("route") < kinds.index("drain") < kinds.index("stop")


@pytest.mark.parametrize("quality_restore", [False, True])
async def test_a_migrating_drain_hands_requests_over_unless_the_switch_only_restores_quality(quality_restore):
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    sw, router = make_switcher(backend, migrate_on_drain=True)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    streams = [asyncio.create_task(stream(router, f"s{i}", 30)) for i in range(3)]
    await asyncio.sleep(0.05)
    target = plan_of(("big", "node0", (1,))).model_copy(update={"quality_restore": quality_restore})
    res = await sw.apply(target)
    outs = await asyncio.gather(*streams, return_exceptions=True)
    if quality_restore:  # not urgent: the old replica's in-flight requests finish where they run
        assert res.migrated_requests == 0 and res.aborted_requests == 0
        assert all(o[-1].finished and o[-1].completion_tokens == 30 for o in outs)
    else:  # a capacity switch hands them over at once (the endpoint resumes each elsewhere)
        assert res.migrated_requests == 3
        assert all(isinstance(o, RequestAbortedError) for o in outs)


async def test_a_newer_plan_cuts_a_quality_restores_patient_drain_short():
    # a restore waits for the old replica's requests (20 s here), but a plan that arrives meanwhile (a surge)
    # must not wait behind it: the rest are handed over at once and the new plan runs
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    sw, router = make_switcher(backend, migrate_on_drain=True, drain_timeout_s=20.0)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    streams = [asyncio.create_task(stream(router, f"s{i}", 1000)) for i in range(2)]  # ~10 s each
    await asyncio.sleep(0.05)
    restore = asyncio.create_task(sw.apply(plan_of(("big", "node0", (1,))).model_copy(update={"quality_restore": True})))
    await asyncio.sleep(0.3)
    assert not restore.done()  # patient: waiting for the two streams
    t0 = asyncio.get_running_loop().time()
    surge = await sw.apply(plan_of(("big", "node0", (1,)), ("fast", "node0", (2,))))
    assert asyncio.get_running_loop().time() - t0 < 3.0  # not the 10 s the streams still needed
    res = await restore
    assert res.migrated_requests == 2 and res.aborted_requests == 0
    assert surge.status == "applied"
    outs = await asyncio.gather(*streams, return_exceptions=True)
    assert all(isinstance(o, RequestAbortedError) for o in outs)  # handed over (the endpoint resumes them)


async def test_drain_timeout_aborts_with_an_explicit_error():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.02))
    sw, router = make_switcher(backend, drain_timeout_s=0.1)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    long = asyncio.create_task(stream(router, "long", 500))
    await asyncio.sleep(0.05)
    res = await sw.apply(plan_of(("big", "node0", (0,))))
    with pytest.raises(RequestAbortedError):
        await long
    assert res.aborted_requests == 1 and res.status == "applied"


async def test_scale_down_while_scale_up_is_warming_cancels_starts():
    backend = FakeBackend(start_delay_s=0.3)
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    up = sw.submit(plan_of(*[("fast", "node0", (i,)) for i in range(4)]))
    await asyncio.sleep(0.1)  # the three new replicas are still starting
    assert sorted(m.state for m in sw.replicas.values()) == ["ready", "starting", "starting", "starting"]
    down = sw.submit(plan_of(("fast", "node0", (0,))))
    r_up, r_down = await up, await down
    assert r_up.status == "superseded"
    assert sum(s.kind == "cancel" for s in r_up.steps) == 3
    assert r_down.status in ("applied", "unchanged")
    assert len(sw.replicas) == 1 and router.ready_count() == 1
    running = [r for r in backend.replicas.values() if r.state == "ready"]
    assert len(running) == 1 and running[0].replica_id in sw.replicas
    # the cancelled engines were let finish starting (never interrupted mid-load), then stopped
    assert len(backend.replicas) == 4 and sum(r.state == "stopped" for r in backend.replicas.values()) == 3
    out = await stream(router, "after", 5)
    assert out[-1].completion_tokens == 5
    assert_view_matches_reality(sw, router, backend)


async def test_new_plan_mid_drain_completes_drain_then_follows_real_state():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    s = asyncio.create_task(stream(router, "inflight", 40))
    await asyncio.sleep(0.02)
    first = sw.submit(plan_of(("big", "node0", (1,))))
    while not any(m.state == "draining" for m in sw.replicas.values()):
        await asyncio.sleep(0.005)
    second = sw.submit(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    r1, r2 = await first, await second
    out = await s
    assert out[-1].completion_tokens == 40  # the stream on the draining replica finished
    assert r1.status == "applied" and r2.status == "applied"
    assert sw.actual_plan().replica_counts() == {"fast": 2}
    assert sorted(r.spec.variant for r in router.ready_replicas()) == ["fast", "fast"]
    assert sum(1 for r in backend.replicas.values() if r.state == "ready") == 2
    assert_view_matches_reality(sw, router, backend)


async def test_failed_start_is_reported_and_next_plan_starts_from_real_state():
    backend = FakeBackend(fail_start_variants={"big"}, fail_start_cause="out_of_memory")
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    res = await sw.apply(plan_of(("big", "node0", (1,))))
    assert res.status == "failed"
    failed = res.failed_steps
    assert failed[0].kind == "start" and "out_of_memory" in failed[0].detail
    assert any(s.kind == "skip" and "no capacity" in s.detail for s in failed)  # old replica kept serving
    assert sw.actual_plan().replica_counts() == {"fast": 1} and router.ready_count() == 1
    backend.fail_start_variants.clear()
    nxt = await sw.apply(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    assert nxt.status == "applied" and [s.kind for s in nxt.steps].count("start") == 1
    assert_view_matches_reality(sw, router, backend)


async def test_replica_failure_leaves_router_at_once():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    rid = next(iter(sw.replicas))
    backend.replicas[rid].kill()
    await sw.replica_failed(rid, "health check failed")
    assert rid not in sw.replicas and router.get(rid) is None and router.ready_count() == 1
    res = await sw.apply(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    assert res.status == "applied" and router.ready_count() == 2
    assert_view_matches_reality(sw, router, backend)


async def test_shutdown_drains_and_stops_everything():
    backend = FakeBackend()
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,)), ("big", "node0", (1,))))
    await sw.shutdown()
    assert not sw.replicas and router.ready_count() == 0
    assert all(r.state == "stopped" for r in backend.replicas.values())


async def test_start_timeout_is_reported_and_the_late_engine_is_stopped():
    backend = FakeBackend()
    sw, router = make_switcher(backend, start_timeout_s=0.1)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    backend.start_delay_s = 0.4
    res = await sw.apply(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    assert res.status == "failed" and "timeout" in res.failed_steps[0].detail
    # the engine is still loading: the registry says so (failed, not serving) until it is stopped
    late = [m for m in sw.replicas.values() if m.state == "failed"]
    assert len(late) == 1 and router.ready_count() == 1
    await asyncio.sleep(0.5)
    assert late[0].replica_id not in sw.replicas
    assert backend.replicas[late[0].replica_id].state == "stopped"
    assert_view_matches_reality(sw, router, backend)


async def test_failed_start_after_a_rolling_drain_rolls_back_the_drained_replica():
    backend = FakeBackend(fail_start_variants={"big"})
    sw, router = make_switcher(backend, devices=1)  # one replica fits: the switch must roll
    await sw.apply(plan_of(("fast", "node0", (0,))))
    res = await sw.apply(plan_of(("big", "node0", (0,))))
    assert not res.make_before_break and res.status == "partial", res.steps
    assert any(s.kind == "skip" and s.detail.startswith("rollback") for s in res.failed_steps)
    assert sw.actual_plan().replica_counts() == {"fast": 1} and router.ready_count() == 1
    assert res.actual.replica_counts() == {"fast": 1}
    assert_view_matches_reality(sw, router, backend)


async def test_routing_only_change_does_not_supersede_the_running_transition():
    backend = FakeBackend(start_delay_s=0.3)
    sw, router = make_switcher(backend)
    await sw.apply(plan_of(("fast", "node0", (0,))))
    reps = (("fast", "node0", (0,)), ("big", "node0", (1,)))
    up = sw.submit(plan_of(*reps))
    await asyncio.sleep(0.1)  # 'big' is still starting
    assert sorted(m.state for m in sw.replicas.values()) == ["ready", "starting"]
    new_routing = {c: {"fast": 0.25, "big": 0.75} for c in router.routing}
    reroute = sw.submit(plan_of(*reps, routing=new_routing))
    r_up, r_reroute = await up, await reroute
    assert r_up is r_reroute and r_up.status == "applied", r_up.steps
    assert not any(s.kind == "cancel" for s in r_up.steps)
    assert r_up.target.routing == new_routing  # the result names the newest target
    assert router.routing == new_routing and sw.actual_plan().routing == new_routing
    assert backend.starts == 2 and [r.status for r in sw.results].count("superseded") == 0
