"""The router-side queue: per-replica in-flight limits, FIFO waits, dispatch on release/ready, timeouts."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from oserve_server_support import MODEL  # type: ignore[import-not-found]

from oserve.backends.base import ReplicaSpec
from oserve.errors import ConfigError, InvalidRequestError, QueueFullError, QueueTimeoutError
from oserve.policies.routing import Candidate, open_candidates
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions


async def settle() -> None:
    """Let queued waiters (``asyncio.wait_for`` tasks) run until they wait again."""
    for _ in range(10):
        await asyncio.sleep(0)


def replica(rid: str, max_num_seqs: int = 2, variant: str = "v0") -> FakeReplica:
    spec = ReplicaSpec(variant=variant, model="fake", served_model_name="m", max_model_len=2048,
                       max_num_seqs=max_num_seqs)
    return FakeReplica(spec, rid, FakeReplicaOptions())


def test_open_candidates_keeps_replicas_below_their_limit() -> None:
    cands = [Candidate("a", "v0", 2048), Candidate("b", "v0", 2048), Candidate("c", "v1", 2048)]
    out = open_candidates(cands, {"a": 2, "b": 1, "c": 9}, {"a": 2, "b": 2, "c": None})
    assert [c.replica_id for c in out] == ["b", "c"]
    assert open_candidates(cands, {"a": 2, "b": 2}, {"a": 2, "b": 2, "c": 1}) == [cands[2]]


def test_limit_is_the_batch_limit_and_try_acquire_waits_when_full() -> None:
    router = Router()
    router.add(replica("a", max_num_seqs=2))
    assert router.in_flight_limit("a") == 2
    assert router.try_acquire(None, 10) is not None and router.try_acquire(None, 10) is not None
    assert router.try_acquire(None, 10) is None  # full: the request must wait
    assert router.acquire(None, 10).replica_id == "a"  # the unlimited path (retries) still routes
    with pytest.raises(InvalidRequestError):  # fits no replica at all: 400 at once, never queued
        router.try_acquire(None, 5000)


def test_max_ongoing_requests_caps_a_replica_below_its_batch_limit() -> None:
    spec = ReplicaSpec(variant="v0", model="fake", served_model_name="m", max_num_seqs=32, max_ongoing_requests=2)
    router = Router()
    router.add(FakeReplica(spec, "a", FakeReplicaOptions()))
    router.add(replica("b", max_num_seqs=3))
    assert router.in_flight_limit("a") == 2 and router.in_flight_limit("b") == 3
    taken = [router.try_acquire(None, 10) for _ in range(5)]
    assert sorted(r.replica_id for r in taken if r is not None) == ["a", "a", "b", "b", "b"]
    assert router.try_acquire(None, 10) is None  # both at their limits: the next request waits in the router
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        ReplicaSpec(variant="v0", model="fake", served_model_name="m", max_ongoing_requests=0)


def test_bad_queue_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as ei:
        Router(queue_max=-1)
    assert ei.value.field == "queue_max"
    with pytest.raises(ConfigError) as ei:
        Router(queue_timeout_s=0)
    assert ei.value.field == "queue_timeout_s"
    with pytest.raises(ConfigError) as ei:
        Router().add(replica("a"), max_in_flight=0)
    assert ei.value.field == "max_in_flight"


async def test_freed_slot_goes_to_the_oldest_waiter_at_once() -> None:
    router = Router()
    router.add(replica("a", max_num_seqs=1))
    assert router.try_acquire("c0", 10) is not None
    w1 = asyncio.create_task(router.acquire_queued("c0", 10))
    w2 = asyncio.create_task(router.acquire_queued("c1", 10))
    await settle()
    assert router.queue_length() == 2 and router.queue_length("c1") == 1
    assert router.queue_by_class().keys() == {"c0", "c1"}
    router.release("a")
    await settle()
    assert w1.done() and not w2.done()  # FIFO
    assert router.outstanding("a") == 1 and router.queue_length() == 1
    router.release("a")
    assert (await w2).replica_id == "a"
    assert router.queued_total == 2 and router.queue_length() == 0


async def test_new_ready_replica_takes_queued_work_at_once() -> None:
    router = Router()
    router.add(replica("a", max_num_seqs=1))
    router.try_acquire(None, 10)
    waiters = [asyncio.create_task(router.acquire_queued(None, 10)) for _ in range(3)]
    await settle()
    router.add(replica("b", max_num_seqs=2), state="starting")
    await settle()
    assert router.queue_length() == 3  # starting: no traffic yet
    router.set_state("b", "ready")
    await settle()
    assert [w.done() for w in waiters] == [True, True, False]
    assert {w.result().replica_id for w in waiters[:2]} == {"b"}
    assert router.outstanding("b") == 2
    waiters[2].cancel()
    await asyncio.gather(waiters[2], return_exceptions=True)


def test_burst_beyond_a_full_variant_moves_to_running_replicas_with_free_slots() -> None:
    router = Router()
    router.add(replica("a0", max_num_seqs=2, variant="a"))
    router.add(replica("b0", max_num_seqs=2, variant="b"))
    router.set_routing({"c": {"a": 1.0}})  # the plan sends class c to variant a only
    got = [router.try_acquire("c", 10) for _ in range(5)]
    assert [r.replica_id if r else None for r in got] == ["a0", "a0", "b0", "b0", None]
    assert router.fallbacks == 2  # moved to running capacity, counted; the fifth waits


async def test_no_ready_replica_but_one_starting_waits_instead_of_503() -> None:
    router = Router()
    router.add(replica("a"), state="starting")
    w = asyncio.create_task(router.acquire_queued(None, 10))
    await settle()
    assert router.queue_length() == 1
    router.set_state("a", "ready")
    assert (await w).replica_id == "a"


async def test_queue_timeout_full_and_abandon_are_counted() -> None:
    router = Router(queue_max=1, queue_timeout_s=0.05, retry_after_s=3.0)
    router.add(replica("a", max_num_seqs=1))
    router.try_acquire(None, 10)
    with pytest.raises(QueueTimeoutError) as ei:
        await router.acquire_queued(None, 10)
    assert ei.value.status_code == 503 and ei.value.code == "queue_timeout" and ei.value.retry_after_s == 3.0
    assert router.queue_timeouts == 1 and router.queue_length() == 0
    w = asyncio.create_task(router.acquire_queued(None, 10))
    await settle()
    with pytest.raises(QueueFullError) as ei2:
        await router.acquire_queued(None, 10)
    assert ei2.value.status_code == 429 and ei2.value.code == "queue_full" and router.queue_rejected == 1
    w.cancel()  # the client left while queued
    await asyncio.gather(w, return_exceptions=True)
    assert router.queue_abandoned == 1 and router.queue_length() == 0
    router.release("a")
    assert router.outstanding("a") == 0  # nothing was dispatched to the abandoned entry


async def test_queue_off_ignores_limits() -> None:
    router = Router(queue_max=0)
    router.add(replica("a", max_num_seqs=1))
    assert [router.try_acquire(None, 10) is not None for _ in range(3)] == [True, True, True]
    assert (await router.acquire_queued(None, 10)).replica_id == "a" and router.outstanding("a") == 4


async def test_endpoint_queues_beyond_the_batch_limit_and_reports_the_queue(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.01)
    async with serve(n_replicas=1, options=opts, max_num_seqs=1) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        rep = srv.replicas[0]
        seen_running: list[int] = []
        seen_queued: list[int] = []

        async def watch() -> None:
            while True:
                seen_running.append((await rep.stats()).running or 0)
                seen_queued.append(srv.router.queue_length())
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        body = {"model": MODEL, "prompt": "a b", "max_tokens": 5}
        rs = await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(4)))
        watcher.cancel()
        assert [r.status_code for r in rs] == [200] * 4
        assert max(seen_running) == 1  # the engine never ran more than its batch limit
        assert max(seen_queued) >= 2  # the rest waited in the router
        assert srv.router.queued_total >= 2 and srv.router.queue_length() == 0
        text = (await http.get("/metrics")).text
        assert "oserve_router_queue_length" in text and "oserve_router_queued_total" in text


async def test_endpoint_queue_timeout_is_503_and_disconnect_leaves_the_queue(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.05)
    async with serve(n_replicas=1, options=opts, max_num_seqs=1) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        srv.router.queue_timeout_s = 0.1
        long = asyncio.create_task(http.post("/v1/completions",
                                             json={"model": MODEL, "prompt": "a", "max_tokens": 40}))
        await asyncio.sleep(0.1)
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_timeout"
        assert "retry-after" in r.headers
        srv.router.queue_timeout_s = 30.0

        async def leaving() -> None:
            async with httpx.AsyncClient(base_url=srv.base_url) as h2:
                await h2.post("/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2})

        gone = asyncio.create_task(leaving())
        for _ in range(100):
            if srv.router.queue_length() == 1:
                break
            await asyncio.sleep(0.01)
        assert srv.router.queue_length() == 1
        gone.cancel()  # the client disconnects while queued
        await asyncio.gather(gone, return_exceptions=True)
        for _ in range(100):
            if srv.router.queue_length() == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.router.queue_length() == 0 and srv.router.queue_abandoned == 1
        assert (await long).status_code == 200
        assert srv.router.outstanding() == 0
        assert srv.app.state.metrics.finished_total("completions", "abort") == 1
