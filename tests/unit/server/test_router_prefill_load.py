"""The router's ``prefill-tokens`` replica load: pending prefill tokens per replica (FakeReplica handles)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import get_args

import httpx
import pytest
from oserve_server_support import MODEL  # type: ignore[import-not-found]

from oserve.backends.base import ReplicaSpec
from oserve.compose.stack import start_stack
from oserve.config import ServeConfig, ServerConfig
from oserve.errors import ConfigError
from oserve.policies.routing import REPLICA_LOADS
from oserve.server.queued_acquire import acquire_watching
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions


def replica(rid: str, max_model_len: int = 8192, max_num_seqs: int = 256) -> FakeReplica:
    spec = ReplicaSpec(variant="v0", model="fake", served_model_name="m", max_model_len=max_model_len,
                       max_num_seqs=max_num_seqs)
    return FakeReplica(spec, rid, FakeReplicaOptions())


def two_replicas(load: str) -> Router:
    router = Router(replica_load=load)
    router.add(replica("a"))
    router.add(replica("b"))
    return router


def test_prefill_tokens_load_avoids_a_replica_still_prefilling_a_long_prompt() -> None:
    router = two_replicas("prefill-tokens")
    assert router.acquire(None, 4100, prompt_tokens=4000, request_id="long").replica_id == "a"
    # "b" gets every short request although it holds more outstanding requests than "a"
    got = [router.acquire(None, 60, prompt_tokens=10, request_id=f"s{i}").replica_id for i in range(3)]
    assert got == ["b", "b", "b"]
    assert router.pending_prefill_tokens("a") == 4000 and router.pending_prefill_tokens("b") == 30
    for i in range(3):
        assert router.first_token("b", f"s{i}") == 10
    assert router.first_token("a", "long") == 4000
    assert router.pending_prefill_tokens() == 0
    # prefill done everywhere: ties on pending tokens fall to the outstanding count (a: 1, b: 3)
    assert router.acquire(None, 60, prompt_tokens=10, request_id="n").replica_id == "a"


def test_requests_load_picks_exactly_as_before_and_still_counts_pending_tokens() -> None:
    router = two_replicas("requests")
    assert router.acquire(None, 4100, prompt_tokens=4000, request_id="long").replica_id == "a"
    got = [router.acquire(None, 60, prompt_tokens=10, request_id=f"s{i}").replica_id for i in range(3)]
    assert got == ["b", "a", "b"]  # least outstanding, ties by served then order added
    assert router.pending_prefill_tokens("a") == 4010 and router.pending_prefill_tokens("b") == 20
    assert Router().replica_load == "prefill-tokens"  # the default


def test_release_before_first_token_clears_and_first_token_then_release_subtracts_once() -> None:
    router = two_replicas("prefill-tokens")
    router.acquire(None, 600, prompt_tokens=500, request_id="x")
    router.acquire(None, 600, prompt_tokens=500, request_id="y")
    router.acquire(None, 300, prompt_tokens=200, request_id="z")
    assert (router.pending_prefill_tokens("a"), router.pending_prefill_tokens("b")) == (700, 500)
    router.release("a", "x")  # failed / aborted / client gone before its first token
    assert router.pending_prefill_tokens("a") == 200
    assert router.first_token("a", "z") == 200
    assert router.first_token("a", "z") == 0  # once per request
    assert router.first_token("a", "x") == 0 and router.first_token("gone", "z") == 0
    router.release("a", "z")
    assert router.pending_prefill_tokens("a") == 0 and router.outstanding("a") == 0
    router.first_token("b", "y")
    router.release("b", "y")
    assert router.pending_prefill_tokens() == 0 and router.outstanding() == 0
    router.release("b", "y")  # a second release finds nothing to subtract
    assert router.pending_prefill_tokens() == 0


def test_a_retry_on_another_replica_moves_its_pending_tokens() -> None:
    router = two_replicas("prefill-tokens")
    assert router.acquire(None, 600, prompt_tokens=500, request_id="r").replica_id == "a"
    router.release("a", "r")  # the replica failed before the first token
    assert router.acquire(None, 600, prompt_tokens=500, request_id="r", exclude=["a"]).replica_id == "b"
    assert (router.pending_prefill_tokens("a"), router.pending_prefill_tokens("b")) == (0, 500)


def test_a_request_without_id_counts_as_outstanding_only() -> None:
    router = two_replicas("prefill-tokens")
    router.acquire(None, 600, prompt_tokens=500)
    assert router.pending_prefill_tokens() == 0 and router.outstanding() == 1


async def test_a_queued_request_dispatched_later_carries_its_pending_tokens() -> None:
    router = Router(replica_load="prefill-tokens")
    router.add(replica("a", max_num_seqs=1))
    assert router.try_acquire(None, 60, prompt_tokens=50, request_id="first") is not None
    wait = asyncio.create_task(router.acquire_queued(None, 400, prompt_tokens=300, request_id="queued"))
    await asyncio.sleep(0)
    assert router.queue_length() == 1 and router.pending_prefill_tokens("a") == 50
    router.release("a", "first")
    assert (await wait).replica_id == "a"
    assert router.pending_prefill_tokens("a") == 300
    assert router.first_token("a", "queued") == 300


async def test_a_request_dispatched_as_its_queue_timeout_fires_keeps_its_slot_and_nothing_leaks(monkeypatch) -> None:
    async def wait_for_312(fut, timeout):  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):  # asyncio.wait_for as Python >= 3.12 has it
            return await fut

    monkeypatch.setattr(asyncio, "wait_for", wait_for_312)
    router = Router(replica_load="prefill-tokens", queue_timeout_s=0.05)
    router.add(replica("a", max_num_seqs=1))
    assert router.try_acquire(None, 60, prompt_tokens=50, request_id="first") is not None
    wait = asyncio.create_task(router.acquire_queued(None, 400, prompt_tokens=300, request_id="queued"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert router.queue_length() == 1
    # the slot frees (dispatching the waiter) and its timeout fires in one loop iteration
    asyncio.get_running_loop().call_later(0.01, router.release, "a", "first")
    time.sleep(0.1)  # the loop is blocked past both deadlines
    assert (await wait).replica_id == "a"
    assert router.queue_timeouts == 0 and router.pending_prefill_tokens("a") == 300
    router.release("a", "queued")
    assert router.outstanding() == 0 and router.pending_prefill_tokens() == 0


async def test_a_handler_cancelled_as_its_queued_request_is_dispatched_leaks_no_slot_or_tokens() -> None:
    class Connected:  # an HTTP request whose client never leaves
        async def receive(self) -> dict:
            await asyncio.Event().wait()
            return {}

    router = Router(replica_load="prefill-tokens")
    router.add(replica("a", max_num_seqs=1))
    assert router.try_acquire(None, 60, prompt_tokens=50, request_id="first") is not None
    handler = asyncio.create_task(acquire_watching(router, "c", 400, 300, "prompt", Connected(),  # type: ignore[arg-type]
                                                   request_id="queued"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert router.queue_length() == 1
    router.release("a", "first")  # dispatches the queued request to "a" ...
    handler.cancel()  # ... as its handler is cancelled
    with pytest.raises(asyncio.CancelledError):
        await handler
    for _ in range(5):
        await asyncio.sleep(0)
    assert router.outstanding() == 0 and router.pending_prefill_tokens() == 0


def test_bad_replica_load_names_the_field_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as e:
        Router(replica_load="tokens")
    assert e.value.field == "replica_load"
    assert all(v in str(e.value.allowed) for v in REPLICA_LOADS)


def test_server_config_replica_load_matches_the_policy_values() -> None:
    assert get_args(ServerConfig.model_fields["replica_load"].annotation) == REPLICA_LOADS
    assert ServerConfig().replica_load == "prefill-tokens"
    assert ServerConfig(replica_load="requests").replica_load == "requests"
    with pytest.raises(ValueError, match="replica_load"):
        ServerConfig(replica_load="tokens")


@pytest.mark.timeout(60)
async def test_the_stack_gives_the_router_the_configured_replica_load() -> None:
    config = ServeConfig.model_validate({
        "model": {"served_name": "m", "path": "unused"},
        "server": {"host": "127.0.0.1", "port": 0, "replica_load": "requests"},  # not the default
        "backend": {"kind": "fake"},
        "cluster": {"nodes": [{"name": "local", "device_type": "cpu", "devices": 1, "device_memory_bytes": 2**32}]},
        "variants": {"v": {}},
        "deployment": [{"variant": "v", "node": "local", "device_ids": [0]}],
    })
    stack = await start_stack(config, http=False)
    try:
        assert stack.router.replica_load == "requests"
    finally:
        await stack.stop()


async def _pending_reaches(srv, tokens: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(300):
        if srv.router.pending_prefill_tokens("r0") == tokens:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"pending prefill tokens stayed {srv.router.pending_prefill_tokens('r0')}, not {tokens}")


@pytest.mark.timeout(60)
async def test_the_first_streamed_token_clears_the_pending_prefill_tokens(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.05, prefill_delay_s=0.5, effective_max_model_len=1024)
    async with serve(n_replicas=1, options=opts) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        body = {"model": MODEL, "prompt": "w " * 40, "max_tokens": 20, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as r:
            await _pending_reaches(srv, 40)  # admitted, in prefill
            metrics = (await http.get("/metrics")).text
            assert 'oserve_router_pending_prefill_tokens{replica="r0"} 40.0' in metrics
            lines = r.aiter_lines()
            async for line in lines:
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # the first output token reached the client
            assert srv.router.pending_prefill_tokens() == 0 and srv.router.outstanding() == 1
            async for _ in lines:
                pass
        assert srv.router.pending_prefill_tokens() == 0 and srv.router.outstanding() == 0


@pytest.mark.timeout(60)
async def test_a_client_leaving_during_prefill_clears_its_pending_tokens(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.05, prefill_delay_s=5.0, effective_max_model_len=1024)
    async with serve(n_replicas=1, options=opts) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
            body = {"model": MODEL, "prompt": "w " * 40, "max_tokens": 20, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body):
                await _pending_reaches(srv, 40)
        for _ in range(300):
            if srv.router.outstanding() == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.router.outstanding() == 0 and srv.router.pending_prefill_tokens() == 0


@pytest.mark.timeout(60)
async def test_a_retry_before_the_first_token_moves_the_pending_tokens_to_the_new_replica(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.01, prefill_delay_s=1.0, effective_max_model_len=1024)
    async with serve(n_replicas=2, options=opts) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        task = asyncio.create_task(http.post("/v1/completions", json={
            "model": MODEL, "prompt": "w " * 40, "max_tokens": 5, "stream": True}))
        for _ in range(300):
            if srv.router.pending_prefill_tokens() == 40:
                break
            await asyncio.sleep(0.01)
        first, other = sorted(srv.replicas, key=lambda r: -srv.router.pending_prefill_tokens(r.replica_id))
        assert srv.router.pending_prefill_tokens(first.replica_id) == 40
        assert await first.drain(timeout_s=0.0) == 1  # aborted before its first token: retried on the other
        for _ in range(300):
            if srv.router.pending_prefill_tokens(other.replica_id) == 40:
                break
            await asyncio.sleep(0.01)
        assert srv.router.pending_prefill_tokens(other.replica_id) == 40
        assert srv.router.pending_prefill_tokens(first.replica_id) == 0
        r = await task
        events = [json.loads(e.removeprefix("data: ")) for e in r.text.split("\n\n") if e and "[DONE]" not in e]
        assert not any("error" in e for e in events), events
        assert len("".join(c["text"] for e in events for c in e["choices"]).split()) == 5
        assert srv.router.pending_prefill_tokens() == 0 and srv.router.outstanding() == 0
