"""Tests of the warm engine pool (oserve.backends.warm_pool) over the fake backend."""

from __future__ import annotations

import asyncio

import pytest

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.backends.warm_pool import WarmPoolBackend
from oserve.errors import ReplicaError, RequestAbortedError
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions


def spec(variant: str = "fp32", core: int = 0) -> ReplicaSpec:
    return ReplicaSpec(variant=variant, model="fake", served_model_name="m", cpu_cores=(core,))


async def run(rep, rid: str, max_tokens: int = 4) -> list:
    return [c async for c in rep.generate(rid, "a b c", SamplingParams(max_tokens=max_tokens))]


async def test_prestarted_engine_is_handed_out_warm_and_returned_on_stop() -> None:
    inner = FakeBackend()
    pool = WarmPoolBackend(inner)
    times = await pool.prestart([spec("fp32", 0), spec("int8", 0)])
    assert len(times) == 2 and inner.starts == 2 and pool.idle_count() == 2
    rep = await pool.start_replica(spec("int8", 0), "oserve-r1")
    assert rep.replica_id == "oserve-r1" and rep.spec.variant == "int8" and rep.state == "ready"
    assert inner.starts == 2 and pool.warm_starts == 1 and pool.cold_starts == 0 and pool.idle_count() == 1
    out = await run(rep, "q1")
    assert out[-1].finished and pool.output_tokens == {"int8": 4}
    await rep.stop()
    assert rep.state == "stopped" and pool.idle_count() == 2
    with pytest.raises(ReplicaError):
        await run(rep, "q2")
    # the same engine again, under a new handle that is ready although the old one is stopped
    again = await pool.start_replica(spec("int8", 0), "oserve-r2")
    assert again.engine is rep.engine and again.state == "ready" and pool.warm_starts == 2
    assert (await run(again, "q3"))[-1].finished
    await pool.shutdown()
    assert pool.idle_count() == 0 and rep.engine.state == "stopped"


async def test_spec_not_in_pool_starts_cold_and_joins_the_pool() -> None:
    inner = FakeBackend()
    pool = WarmPoolBackend(inner)
    await pool.prestart([spec("fp32", 0)])
    rep = await pool.start_replica(spec("fp32", 1), "r")  # another core: a different spec
    assert pool.cold_starts == 1 and inner.starts == 2
    await rep.stop()
    assert pool.idle_count() == 2
    await pool.start_replica(spec("fp32", 1), "r2")
    assert inner.starts == 2 and pool.warm_starts == 1
    pool.reset_counters()
    assert (pool.warm_starts, pool.cold_starts, pool.output_tokens, pool.handouts) == (0, 0, {}, [])
    await pool.shutdown()


async def test_drain_waits_then_aborts_only_this_handles_requests() -> None:
    pool = WarmPoolBackend(FakeBackend(FakeReplicaOptions(token_delay_s=0.05)))
    await pool.prestart([spec()])
    rep = await pool.start_replica(spec(), "r")
    slow = asyncio.create_task(run(rep, "long", max_tokens=200))
    await asyncio.sleep(0.1)
    aborted = await rep.drain(0.2)
    assert aborted == 1 and rep.state == "draining"
    with pytest.raises(RequestAbortedError):
        await slow
    await rep.stop()
    fresh = await pool.start_replica(spec(), "r2")
    assert (await run(fresh, "after"))[-1].finished  # the engine itself was not drained
    await pool.shutdown()


async def test_pooled_replica_parks_and_wakes_through_the_engine() -> None:
    inner = FakeBackend(FakeReplicaOptions(wake_delay_s=0.01))
    pool = WarmPoolBackend(inner)
    await pool.prestart([spec("int8", 0)])
    rep = await pool.start_replica(spec("int8", 0), "parked-r")
    await rep.park()
    assert rep.state == "parked" and rep.engine.state == "parked" and rep.engine.parks == 1
    with pytest.raises(ReplicaError):  # a parked replica takes no request
        await run(rep, "q-parked")
    await rep.wake()
    assert rep.state == "ready" and rep.engine.state == "ready" and rep.engine.wakes == 1
    assert (await run(rep, "q-woken"))[-1].finished
    with pytest.raises(ReplicaError):  # waking a replica that is not parked says so
        await rep.wake()
    await pool.shutdown()


async def test_park_refuses_a_replica_with_requests_in_flight() -> None:
    pool = WarmPoolBackend(FakeBackend(FakeReplicaOptions(token_delay_s=0.05)))
    await pool.prestart([spec()])
    rep = await pool.start_replica(spec(), "busy")
    task = asyncio.create_task(run(rep, "long", 10))
    await asyncio.sleep(0.06)
    with pytest.raises(ReplicaError, match="in flight"):
        await rep.park()
    assert rep.state == "ready" and (await task)[-1].finished
    await pool.shutdown()


async def test_stopping_a_parked_replica_returns_a_ready_engine_to_the_pool() -> None:
    pool = WarmPoolBackend(FakeBackend())
    await pool.prestart([spec("int8", 1)])
    rep = await pool.start_replica(spec("int8", 1), "p1")
    await rep.drain(1.0)
    await rep.park()
    await rep.stop()
    assert rep.state == "stopped" and rep.engine.state == "ready" and pool.idle_count() == 1
    again = await pool.start_replica(spec("int8", 1), "p2")
    assert again.engine is rep.engine and pool.warm_starts == 2
    assert (await run(again, "q"))[-1].finished
    await pool.shutdown()
