"""A request its replica aborts mid-stream (a drain) resumes on another replica (FakeBackend replicas)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from oserve_server_support import MODEL  # type: ignore[import-not-found]

from oserve.backends.base import SamplingParams, TokenChunk
from oserve.errors import RequestAbortedError
from oserve.server.resume import continuation, shift_chunk
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions

pytestmark = pytest.mark.timeout(60)


def test_continuation_appends_the_output_and_shortens_max_tokens():
    p = SamplingParams(max_tokens=10, temperature=0.5, stop=("END",))
    prompt, params = continuation([1, 2, 3], " a b", [7, 8], p)
    assert prompt == [1, 2, 3, 7, 8] and params.max_tokens == 8
    assert params.temperature == 0.5 and params.stop == ("END",)
    prompt, params = continuation("Hello", " a b", [7, 8], p)
    assert prompt == "Hello a b" and params.max_tokens == 8
    assert continuation("Hello", "x" * 10, list(range(10)), p) is None  # max_tokens reached: nothing left


def test_shift_chunk_counts_from_the_request_start():
    c = TokenChunk(text=" z", token_ids=(5,), finished=False, finish_reason=None, prompt_tokens=9,
                   completion_tokens=2)
    s = shift_chunk(c, 4, 3)
    assert s.completion_tokens == 6 and s.prompt_tokens == 3 and s.text == " z"
    assert shift_chunk(c, 0, 3) is c


async def _serving(srv) -> object:
    for _ in range(300):
        busy = [r for r in srv.replicas if (await r.stats()).running]
        if busy and busy[0].tokens_emitted >= 5:
            return busy[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no replica emitted tokens")


async def test_stream_resumes_on_another_replica_when_its_replica_drains_at_once(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.01, effective_max_model_len=1024)
    async with serve(n_replicas=2, options=opts) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        async def call() -> httpx.Response:
            return await http.post("/v1/completions", json={
                "model": MODEL, "prompt": "a b c", "max_tokens": 40, "stream": True,
                "stream_options": {"include_usage": True}})

        task = asyncio.create_task(call())
        victim = await _serving(srv)
        assert await victim.drain(timeout_s=0.0) == 1  # a migrating drain: abort at once
        r = await task
        events = [json.loads(e.removeprefix("data: ")) for e in r.text.split("\n\n") if e and "[DONE]" not in e]
        assert not any("error" in e for e in events)
        texts = [c["text"] for e in events for c in e["choices"]]
        assert len("".join(texts).split()) == 40  # every token, none lost or repeated at the seam
        assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "length"
        usage = events[-1]["usage"]
        assert usage["completion_tokens"] == 40 and usage["prompt_tokens"] == 3
        other = next(x for x in srv.replicas if x is not victim)
        assert 0 < victim.tokens_emitted < 40 and other.tokens_emitted == 40 - victim.tokens_emitted
        assert srv.app.state.metrics.resumed._value.get() == 1
        assert srv.app.state.metrics.retried._value.get() == 0
        assert srv.router.outstanding() == 0


async def test_non_streaming_request_resumes_too(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.01, effective_max_model_len=1024)
    async with serve(n_replicas=2, options=opts) as srv:
        c = openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        task = asyncio.create_task(c.completions.create(model=MODEL, prompt="a b c", max_tokens=30))
        victim = await _serving(srv)
        await victim.drain(timeout_s=0.0)
        r = await task
        assert r.usage.completion_tokens == 30 and r.choices[0].finish_reason == "length"
        assert len(r.choices[0].text.split()) == 30
        assert srv.app.state.metrics.resumed._value.get() == 1


class _AbortAfterLastToken(FakeReplica):
    """Streams every token of ``max_tokens`` without marking the last one finished, then is aborted
    (a drain that lands between the engine's last token and its finished output)."""

    async def _generate(self, request_id, prompt, params):
        for i in range(params.max_tokens):
            yield TokenChunk(text=f" t{i}", token_ids=(i,), finished=False, finish_reason=None, prompt_tokens=3,
                             completion_tokens=i + 1)
        raise RequestAbortedError("aborted: drain", replica_id=self.replica_id, code="drain_timeout")


async def test_an_abort_after_the_last_token_ends_the_request_normally(serve) -> None:
    async with serve(n_replicas=1, replica_class=_AbortAfterLastToken) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a b c", "max_tokens": 10,
                                                     "stream": True, "stream_options": {"include_usage": True}})
        events = [json.loads(e.removeprefix("data: ")) for e in r.text.split("\n\n") if e and "[DONE]" not in e]
        assert not any("error" in e for e in events)
        assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "length"
        assert events[-1]["usage"]["completion_tokens"] == 10
        assert srv.app.state.metrics.resumed._value.get() == 0 and srv.router.outstanding() == 0


async def test_a_request_drained_twice_before_its_first_token_is_served_by_a_third_replica(serve) -> None:
    # two switches 2 s apart drained both replicas a waiting request was sent to; it failed with the
    # drain's abort (max_retries 1 counted the drains as replica failures)
    opts = FakeReplicaOptions(token_delay_s=0.01, prefill_delay_s=5.0, effective_max_model_len=1024)
    async with serve(n_replicas=3, options=opts) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        task = asyncio.create_task(http.post("/v1/completions", json={
            "model": MODEL, "prompt": "a b c", "max_tokens": 5, "stream": True}))
        drained = []
        for _ in range(2):
            for _ in range(500):
                busy = [r for r in srv.replicas if r not in drained and (await r.stats()).running]
                if busy:
                    break
                await asyncio.sleep(0.01)
            assert busy, "the request reached no replica"
            assert await busy[0].drain(timeout_s=0.0) == 1  # a migrating drain, before the first token
            drained.append(busy[0])
            busy[0].options = FakeReplicaOptions(token_delay_s=0.01, effective_max_model_len=1024)
        for r in srv.replicas:
            r.options = FakeReplicaOptions(token_delay_s=0.01, effective_max_model_len=1024)
        r = await task
        events = [json.loads(e.removeprefix("data: ")) for e in r.text.split("\n\n") if e and "[DONE]" not in e]
        assert not any("error" in e for e in events), events
        assert len("".join(c["text"] for e in events for c in e["choices"]).split()) == 5
        assert srv.app.state.metrics.retried._value.get() == 2 and srv.router.outstanding() == 0
