"""Tests of FakeBackend / FakeReplica (the fake engine other parts' tests rely on)."""

from __future__ import annotations

import asyncio

import pytest

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.errors import EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions


def spec(variant: str = "v0", max_num_seqs: int = 8, max_model_len: int = 2048) -> ReplicaSpec:
    return ReplicaSpec(variant=variant, model="fake", served_model_name="m", max_model_len=max_model_len,
                       max_num_seqs=max_num_seqs)


async def collect(rep, rid: str, prompt: str = "a b c", max_tokens: int = 5, **kw) -> list:
    return [c async for c in rep.generate(rid, prompt, SamplingParams(max_tokens=max_tokens, **kw))]


async def test_deterministic_stream_and_counts() -> None:
    rep = await FakeBackend().start_replica(spec(), "r0")
    a = await collect(rep, "x")
    b = await collect(rep, "y")
    assert [c.text for c in a] == [c.text for c in b] and len(a) == 5
    assert a[-1].finished and a[-1].finish_reason == "length" and a[-1].completion_tokens == 5
    assert all(c.prompt_tokens == 3 for c in a) and not any(c.finished for c in a[:-1])
    assert rep.count_tokens("one two  three") == 3 and rep.count_tokens([1, 2]) == 2


async def test_char_tokenization_eos_and_context_limit() -> None:
    opts = FakeReplicaOptions(tokenization="char", eos_after_tokens=2, effective_max_model_len=100)
    rep = await FakeBackend(opts).start_replica(spec(), "r0")
    assert rep.count_tokens("abcd") == 4
    out = await collect(rep, "x", max_tokens=10)
    assert len(out) == 2 and out[-1].finish_reason == "stop"
    out = await collect(rep, "y", max_tokens=10, ignore_eos=True)
    assert len(out) == 10
    assert (await rep.stats()).max_model_len == 100
    with pytest.raises(InvalidRequestError):
        await collect(rep, "z", prompt="a" * 90, max_tokens=20)


async def test_abort_frees_slot_and_ends_stream() -> None:
    rep = await FakeBackend(FakeReplicaOptions(token_delay_s=0.01)).start_replica(spec(), "r0")
    got = []

    async def consume() -> None:
        async for c in rep.generate("x", "p", SamplingParams(max_tokens=1000)):
            got.append(c)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    assert (await rep.stats()).running == 1
    await rep.abort("x")
    assert (await rep.stats()).running == 0
    await asyncio.wait_for(task, 1)
    assert got[-1].finish_reason == "abort" and rep.aborted_ids == ["x"]
    await rep.abort("unknown")  # ignored


async def test_max_num_seqs_queues_requests() -> None:
    rep = await FakeBackend(FakeReplicaOptions(token_delay_s=0.01)).start_replica(spec(max_num_seqs=2), "r0")
    tasks = [asyncio.create_task(collect(rep, f"q{i}", max_tokens=5)) for i in range(5)]
    await asyncio.sleep(0.02)
    st = await rep.stats()
    assert st.running == 2 and st.waiting == 3
    await asyncio.gather(*tasks)
    st = await rep.stats()
    assert st.running == 0 and st.waiting == 0


async def test_drain_finishes_short_and_aborts_long_requests() -> None:
    rep = await FakeBackend(FakeReplicaOptions(token_delay_s=0.01)).start_replica(spec(), "r0")
    short = asyncio.create_task(collect(rep, "short", max_tokens=3))
    long = asyncio.create_task(collect(rep, "long", max_tokens=1000))
    await asyncio.sleep(0.005)
    aborted = await rep.drain(timeout_s=0.2)
    assert aborted == 1 and rep.state == "draining"
    assert len(await short) == 3
    with pytest.raises(RequestAbortedError):
        await long
    with pytest.raises(ReplicaError):
        await collect(rep, "late")
    assert (await rep.stats()).running == 0
    await rep.stop()
    await rep.stop()
    assert rep.state == "stopped" and not await rep.health()


async def test_failure_injection() -> None:
    backend = FakeBackend(fail_start_variants={"bad"}, fail_start_cause="out_of_memory")
    with pytest.raises(EngineStartError) as ei:
        await backend.start_replica(spec("bad"), "r0")
    assert ei.value.cause == "out_of_memory"
    rep = await FakeBackend(FakeReplicaOptions(die_after_tokens=3)).start_replica(spec(), "r1")
    with pytest.raises(ReplicaError) as ei2:
        await collect(rep, "x", max_tokens=10)
    assert ei2.value.replica_id == "r1" and rep.state == "failed" and not await rep.health()
    with pytest.raises(EngineStartError):
        b2 = FakeBackend()
        await b2.start_replica(spec(), "dup")
        await b2.start_replica(spec(), "dup")
