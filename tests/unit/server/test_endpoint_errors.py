"""Bad input, auth, no replica, disconnects and replica failures at the endpoint (FakeBackend replicas)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from fastapi import APIRouter, Depends
from oserve_server_support import (  # type: ignore[import-not-found]
    EFFECTIVE_MAX_MODEL_LEN,
    MAX_BODY_BYTES,
    MODEL,
    make_spec,
)

from oserve.server import create_app
from oserve.server.router import Router
from oserve.testing.bad_requests import bad_request_cases, check_error_response
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions

MSGS = [{"role": "user", "content": "Tell me a story."}]
CASES = bad_request_cases(MODEL, max_model_len=EFFECTIVE_MAX_MODEL_LEN, max_body_bytes=MAX_BODY_BYTES,
                          api_key="sk-test")


def test_cases_cover_the_required_inputs() -> None:
    names = {c.name for c in CASES}
    for required in ("malformed_json", "not_utf8", "wrong_content_type", "unknown_model_chat", "empty_prompt",
                     "empty_messages", "max_tokens_zero", "temperature_negative", "top_p_zero", "top_p_above_one",
                     "top_k_below_minus_one", "n_too_large", "context_overflow_completion", "oversized_body"):
        assert required in names


async def test_bad_requests_while_streams_run(serve) -> None:
    """Every bad input gets its 4xx envelope; streams in flight meanwhile complete unaffected."""
    opts = FakeReplicaOptions(token_delay_s=0.01, effective_max_model_len=EFFECTIVE_MAX_MODEL_LEN)
    async with serve(api_key="sk-test", options=opts) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        c = openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="sk-test", max_retries=0)

        async def stream(i: int) -> int:
            s = await c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=100, stream=True,
                                                stream_options={"include_usage": True})
            return [ch.usage async for ch in s][-1].completion_tokens

        streams = [asyncio.create_task(stream(i)) for i in range(6)]
        for _ in range(300):
            if await srv.total_running() == 6:
                break
            await asyncio.sleep(0.01)
        assert await srv.total_running() == 6
        failures = []
        for case in CASES:
            r = await http.request(case.method, case.path, headers=dict(case.headers), content=case.body)
            try:
                check_error_response(case, r.status_code, r.json())
            except AssertionError as e:
                failures.append(str(e))
        assert not failures, "\n".join(failures)
        assert await srv.total_running() == 6  # the streams were in flight throughout
        assert await asyncio.gather(*streams) == [100] * 6
        assert srv.router.outstanding() == 0 and await srv.total_running() == 0
        # refused requests never reached an engine
        assert sum(r.requests_started for r in srv.replicas) == 6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_request_case(case) -> None:
    """Each case alone, in-process through httpx's ASGI transport (no server, no lifespan)."""
    backend = FakeBackend(FakeReplicaOptions(effective_max_model_len=EFFECTIVE_MAX_MODEL_LEN))
    router = Router()
    router.add(await backend.start_replica(make_spec(), "r0"))
    await router.refresh()  # what the app's lifespan does at startup
    app = create_app(router, served_model_names=[MODEL], api_key="sk-test", max_body_bytes=MAX_BODY_BYTES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        r = await http.request(case.method, case.path, headers=dict(case.headers), content=case.body)
    check_error_response(case, r.status_code, r.json())
    assert backend.replicas["r0"].requests_started == 0


async def test_api_key(serve) -> None:
    async with serve(api_key="sk-right") as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        body = {"model": MODEL, "prompt": "a", "max_tokens": 2}
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-right"}):
            r = await http.post("/v1/completions", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        for path in ("/v1/models", "/metrics"):
            assert (await http.get(path)).status_code == 401
            assert (await http.get(path, headers={"Authorization": "Bearer sk-right"})).status_code == 200
        assert (await http.get("/health")).status_code == 200  # no key needed
        ok = await http.post("/v1/completions", json=body, headers={"Authorization": "Bearer sk-right"})
        assert ok.status_code == 200
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="bad", max_retries=0).models.list()


async def test_no_ready_replica_gives_503_with_retry_after(serve) -> None:
    async with serve() as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        for r in srv.replicas:
            srv.router.set_state(r.replica_id, "draining")
        for path, body in (("/v1/completions", {"model": MODEL, "prompt": "a b"}),
                           ("/v1/chat/completions", {"model": MODEL, "messages": MSGS, "stream": True})):
            r = await http.post(path, json=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
            assert r.json()["error"]["code"] == "no_replica_ready"


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_aborts_engine_request(serve, stream: bool) -> None:
    async with serve(n_replicas=1, options=FakeReplicaOptions(token_delay_s=0.01)) as srv:
        body = {"model": MODEL, "messages": MSGS, "max_tokens": 900, "stream": stream}

        async def request() -> None:
            async with httpx.AsyncClient(base_url=srv.base_url) as http:
                async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_bytes():
                        pass

        task = asyncio.create_task(request())
        for _ in range(200):
            if await srv.total_running() == 1:
                break
            await asyncio.sleep(0.01)
        assert await srv.total_running() == 1
        await asyncio.sleep(0.05)
        task.cancel()  # closes the connection mid-request
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(200):
            if await srv.total_running() == 0:
                break
            await asyncio.sleep(0.01)
        rep = srv.replicas[0]
        assert await srv.total_running() == 0
        assert srv.router.outstanding() == 0
        assert rep.tokens_emitted < 900
        metrics = srv.app.state.metrics
        assert metrics.finished_total("chat", "abort") == 1
        assert metrics.finished_total("chat", "error") == 0 and metrics.finished_total("chat", "refused") == 0


async def test_replica_death_before_first_token_is_retried(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.002, prefill_delay_s=0.2)
    async with serve(n_replicas=2, options=opts) as srv:
        c = openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        task = asyncio.create_task(c.completions.create(model=MODEL, prompt="a b", max_tokens=5))
        for _ in range(100):
            if await srv.total_running():
                break
            await asyncio.sleep(0.01)
        victim = [r for r in srv.replicas if (await r.stats()).running][0]
        victim.kill()
        r = await task
        assert r.usage.completion_tokens == 5
        assert srv.app.state.metrics.retried._value.get() == 1
        assert srv.router.outstanding() == 0


async def test_replica_death_mid_stream_sends_error_event(serve) -> None:
    opts = FakeReplicaOptions(token_delay_s=0.005, die_after_tokens=10)
    async with serve(n_replicas=1, options=opts) as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 50,
                                                     "stream": True})
        events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["code"] == "replica_died" and err["type"] == "server_error"
        assert srv.router.outstanding() == 0
        # the dead replica left the candidate set: the next request gets 503 at once
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a"})
        assert r.status_code == 503


async def test_drain_timeout_non_streaming_gets_503_envelope(serve) -> None:
    async with serve(n_replicas=1, options=FakeReplicaOptions(token_delay_s=0.01)) as srv:
        c = openai.AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        task = asyncio.create_task(c.completions.create(model=MODEL, prompt="a", max_tokens=500))
        await asyncio.sleep(0.1)
        assert await srv.replicas[0].drain(timeout_s=0.05) == 1
        with pytest.raises(openai.InternalServerError) as ei:
            await task
        assert ei.value.status_code == 503 and ei.value.body["code"] == "drain_timeout"


async def test_unknown_route_and_method_use_envelope(serve) -> None:
    async with serve() as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.get("/v1/nothing")
        assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = await http.get("/v1/completions")
        assert r.status_code == 405 and "error" in r.json()


async def test_auth_dependency_protects_added_routes() -> None:
    router = Router()
    app = create_app(router, served_model_names=[MODEL], api_key="sk-a")
    extra = APIRouter(dependencies=[Depends(app.state.auth)])

    @extra.get("/admin/ping")
    async def ping() -> dict:
        return {"pong": True}

    app.include_router(extra)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        r = await http.get("/admin/ping")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert (await http.get("/admin/ping", headers={"Authorization": "Bearer sk-a"})).json() == {"pong": True}
        assert (await http.get("/health")).status_code == 503  # no replica at all


async def test_long_prompt_tokenized_off_loop_and_refused(serve) -> None:
    async with serve() as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a " * 9000, "max_tokens": 4})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert "9000 tokens" in r.json()["error"]["message"]
