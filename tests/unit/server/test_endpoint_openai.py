"""Endpoint tests with the official ``openai`` client against a real uvicorn server on 127.0.0.1.

The replicas are FakeBackend replicas (no engine): output is deterministic fake tokens, one
whitespace-separated word per token, so usage counts can be checked exactly.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from oserve.clock import WallClock
from oserve.testing.fake_backend import FakeReplicaOptions
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

MODEL = "fake-model"
MSGS = [{"role": "user", "content": "What is the capital of France?"}]
# fake renderer output: "user: What is the capital of France?\nassistant:" -> 8 whitespace tokens
CHAT_PROMPT_TOKENS = 8


def client(srv, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key=api_key, max_retries=0, timeout=20)


async def test_chat_non_streaming_usage(serve) -> None:
    async with serve() as srv:
        r = await client(srv).chat.completions.create(model=MODEL, messages=MSGS, max_tokens=7)
        assert r.object == "chat.completion" and r.model == MODEL
        assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "length"
        assert len(r.choices[0].message.content.split()) == 7
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
            CHAT_PROMPT_TOKENS, 7, CHAT_PROMPT_TOKENS + 7)


async def test_chat_streaming_with_usage(serve) -> None:
    async with serve() as srv:
        stream = await client(srv).chat.completions.create(
            model=MODEL, messages=MSGS, max_tokens=5, stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) == 5
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == ["length"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
        assert chunks[-1].usage.prompt_tokens == CHAT_PROMPT_TOKENS
        assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_raw_sse_ends_with_done(serve) -> None:
    async with serve() as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": MSGS, "max_tokens": 3,
                                                          "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
        assert '"usage"' not in r.text  # no include_usage: no usage field


async def test_completion_non_streaming_and_streaming(serve) -> None:
    async with serve() as srv:
        c = client(srv)
        r = await c.completions.create(model=MODEL, prompt="one two three", max_tokens=4)
        assert r.object == "text_completion" and len(r.choices[0].text.split()) == 4
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 4, 7)
        stream = await c.completions.create(model="alias", prompt="one two three", max_tokens=4, stream=True,
                                            stream_options={"include_usage": True})
        chunks = [ch async for ch in stream]
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        assert text == r.choices[0].text  # same deterministic tokens
        assert chunks[-1].usage.total_tokens == 7
        echo = await c.completions.create(model=MODEL, prompt="one two", max_tokens=2, echo=True)
        assert echo.choices[0].text.startswith("one two ") and echo.usage.completion_tokens == 2
        ids = await c.completions.create(model=MODEL, prompt=[5, 6, 7, 8], max_tokens=2)
        assert ids.usage.prompt_tokens == 4


async def test_chat_without_max_tokens_fills_effective_context(serve) -> None:
    async with serve(options=FakeReplicaOptions(effective_max_model_len=1024)) as srv:
        # effective context 1024 tokens (the spec says 4096): output = 1024 - prompt tokens
        r = await client(srv).chat.completions.create(model=MODEL, messages=MSGS)
        assert r.usage.total_tokens == 1024 and r.choices[0].finish_reason == "length"


async def test_32_concurrent_requests_all_complete(serve) -> None:
    async with serve(n_replicas=2) as srv:
        c = client(srv)

        async def one(i: int) -> tuple[int, int]:
            if i % 2:
                stream = await c.chat.completions.create(
                    model=MODEL, messages=MSGS, max_tokens=10 + i, stream=True,
                    stream_options={"include_usage": True})
                usage = [ch.usage async for ch in stream][-1]
            else:
                usage = (await c.completions.create(model=MODEL, prompt="a b c d", max_tokens=10 + i)).usage
            return usage.completion_tokens, usage.prompt_tokens

        results = await asyncio.gather(*(one(i) for i in range(32)))
        for i, (out, prompt) in enumerate(results):
            assert out == 10 + i and prompt == (CHAT_PROMPT_TOKENS if i % 2 else 4)
        # both replicas served requests, and nothing is left outstanding
        assert all(r.requests_started > 0 for r in srv.replicas)
        assert srv.router.outstanding() == 0 and await srv.total_running() == 0


async def test_models_health_and_metrics(serve) -> None:
    async with serve() as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        models = await client(srv).models.list()
        assert [m.id for m in models.data] == [MODEL, "alias"]
        raw = (await http.get("/v1/models")).json()
        assert raw["data"][0]["max_model_len"] == 1024  # effective, read from the replicas at startup
        h = await http.get("/health")
        assert h.status_code == 200 and h.json()["ready_replicas"] == 2
        await client(srv).chat.completions.create(model=MODEL, messages=MSGS, max_tokens=3)
        await http.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
        assert 'oserve_requests_total{endpoint="/v1/completions",status="404"} 1.0' in text
        assert 'oserve_request_ttft_seconds_count{request_class="short-in/short-out"} 1.0' in text
        assert 'oserve_request_tpot_seconds_count{request_class="short-in/short-out"} 1.0' in text
        assert 'oserve_request_e2e_seconds_count{request_class="short-in/short-out"} 1.0' in text
        assert 'oserve_generation_tokens_total{request_class="short-in/short-out"} 3.0' in text
        assert "oserve_router_ready_replicas 2.0" in text
        for r in srv.replicas:
            srv.router.set_state(r.replica_id, "draining")
        h = await http.get("/health")
        assert h.status_code == 503 and "retry-after" in h.headers


class RecordingMonitor:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def record_admission(self, request_id, request_class, input_tokens, max_tokens) -> None:
        self.events.append(("admit", request_id, request_class, input_tokens, max_tokens))

    def record_first_token(self, request_id) -> None:
        self.events.append(("first", request_id))

    def record_completion(self, request_id, output_tokens, ok) -> None:
        self.events.append(("done", request_id, output_tokens, ok))


async def test_monitor_and_class_routing(serve) -> None:
    monitor = RecordingMonitor()
    async with serve(monitor=monitor, options=FakeReplicaOptions(effective_max_model_len=1024)) as srv:
        srv.router.set_routing({"short-in/long-out": {"v0": 1.0}})
        await client(srv).completions.create(model=MODEL, prompt="a b", max_tokens=300)
        await client(srv).completions.create(model=MODEL, prompt="a b", max_tokens=3)
        kinds = [e[0] for e in monitor.events]
        assert kinds == ["admit", "first", "done", "admit", "first", "done"]
        assert (monitor.events[0][2].name, *monitor.events[0][3:]) == ("short-in/long-out", 2, 300)
        assert monitor.events[2][2:] == (300, True)
        assert monitor.events[3][2].name == "short-in/short-out"
        assert srv.router.fallbacks == 1  # the second class has no assigned variant in the routing table
        with pytest.raises(openai.NotFoundError):
            await client(srv).completions.create(model="other", prompt="a b", max_tokens=3)
        assert len(monitor.events) == 6  # refused before admission: unknown model


async def test_real_workload_monitor_and_merged_metrics(serve) -> None:
    monitor = WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=5, history_s=60)
    def counter(p: str | list[int]) -> int:
        return len(p) if isinstance(p, list) else len(p.split())

    async with serve(monitor=monitor, metrics_registries=[monitor.registry], tokenizer_counter=counter) as srv, \
            httpx.AsyncClient(base_url=srv.base_url) as http:
        await client(srv).chat.completions.create(model=MODEL, messages=MSGS)  # no max_tokens
        for r in srv.replicas:
            srv.router.set_state(r.replica_id, "draining")
        refused = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a b", "max_tokens": 4})
        assert refused.status_code == 503
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_admitted_total{request_class="short-in/short-out"} 2.0' in text
        assert "oserve_router_ready_replicas 0.0" in text  # the endpoint's own metrics are there too
        assert monitor.in_flight.sum() == 0
        # one name per quantity: ends are the endpoint's finished counter, the refusal an HTTP 503
        assert ('oserve_requests_finished_total{endpoint="chat",finish_reason="length",'
                'request_class="short-in/short-out"} 1.0') in text
        assert 'oserve_requests_total{endpoint="/v1/completions",status="503"} 1.0' in text
        for duplicate in ("oserve_requests_completed_total", "oserve_input_tokens_total", "oserve_output_tokens_total"):
            assert duplicate not in text
