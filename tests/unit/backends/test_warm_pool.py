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


async def test_drain_hands_back_unstarted_requests_at_once() -> None:
    # one sequence at a time: the second request waits in the engine's queue without a token
    opts = FakeReplicaOptions(token_delay_s=0.05)
    pool = WarmPoolBackend(FakeBackend(opts))
    await pool.prestart([spec()])
    rep = await pool.start_replica(spec(), "r")
    first_tokens: list[str] = []

    async def consume(rid: str, n: int) -> str:
        async for c in rep.generate(rid, "a b c", SamplingParams(max_tokens=n)):
            if c.completion_tokens == 1:
                first_tokens.append(rid)
        return rid

    running = asyncio.create_task(consume("running", 10))
    await asyncio.sleep(0.12)  # "running" has its first tokens
    assert first_tokens == ["running"]
    rep._in_flight.add("queued")  # a request the engine holds but has not started (no token yet)
    engine_aborts: list[str] = []
    real_abort = rep.engine.abort

    async def record_abort(rid: str) -> None:
        engine_aborts.append(rid)
        rep._in_flight.discard(rid)  # the queued request's stream ends on its abort
        await real_abort(rid)

    rep.engine.abort = record_abort  # type: ignore[method-assign]
    aborted = await rep.drain(5.0)
    assert engine_aborts == ["queued"] and pool.requeued == 1  # handed back at once, not after 5 s
    assert aborted == 0 and await running == "running"  # the started request finished normally
    off = WarmPoolBackend(FakeBackend(opts), requeue_unstarted=False)
    await off.prestart([spec()])
    rep2 = await off.start_replica(spec(), "r2")
    rep2._in_flight.add("queued")
    rep2._idle.clear()
    assert await rep2.drain(0.05) == 1 and off.requeued == 0  # without it: aborted at the timeout
    await pool.shutdown()
    await off.shutdown()
