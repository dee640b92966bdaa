"""The request path's error answers: every sampling bound a 400 naming the field before any stream
starts, engine refusals, streams that fail after their headers, unexpected errors (500) on a
connection that stays usable, oversized bodies (413) and how each outcome is counted in ``/metrics``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from oserve_server_support import MODEL  # type: ignore[import-not-found]

from oserve.backends.base import SamplingParams, TokenChunk
from oserve.errors import InvalidRequestError
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions

MSGS = [{"role": "user", "content": "Tell me a story."}]
CHAT, CMPL = "/v1/chat/completions", "/v1/completions"

# (field, JSON text of the value, param expected): each just outside vLLM 0.32's own bound
# (vllm.SamplingParams._verify_args) or OpenAI's (logit_bias values), or not supported by oserve.
REFUSED = [
    ("temperature", "2.5", "temperature"),
    ("temperature", "-0.1", "temperature"),
    ("temperature", "1e999", "temperature"),
    ("temperature", "NaN", "temperature"),
    ("top_p", "0", "top_p"),
    ("top_p", "1.0001", "top_p"),
    ("top_k", "-2", "top_k"),
    ("top_k", str(2**31), "top_k"),
    ("min_p", "-0.1", "min_p"),
    ("min_p", "1.5", "min_p"),
    ("presence_penalty", "2.1", "presence_penalty"),
    ("presence_penalty", "-2.5", "presence_penalty"),
    ("frequency_penalty", "2.5", "frequency_penalty"),
    ("frequency_penalty", "-1e999", "frequency_penalty"),
    ("repetition_penalty", "0", "repetition_penalty"),
    ("repetition_penalty", "1e999", "repetition_penalty"),
    ("stop", '[""]', "stop"),
    ("stop", '""', "stop"),
    ("stop", '["ok", ""]', "stop"),
    ("seed", str(2**63), "seed"),
    ("n", "0", "n"),
    ("n", "2", "n"),
    ("max_tokens", "0", "max_tokens"),
    ("logit_bias", '{"abc": 1}', "logit_bias"),
    ("logit_bias", '{"5": 101}', "logit_bias"),
    ("logit_bias", '{"5000": 1}', "logit_bias"),  # beyond the (fake) engine's vocabulary: validate()
]

# Values on the bounds, which vLLM accepts: the endpoint must accept them too.
ACCEPTED = [
    ("temperature", "2.0"), ("temperature", "0"), ("top_p", "1.0"), ("top_k", "-1"), ("top_k", "0"),
    ("top_k", "50"), ("top_k", str(2**31 - 1)), ("min_p", "1.0"), ("min_p", "0"), ("presence_penalty", "2"), ("presence_penalty", "-2"),
    ("frequency_penalty", "-2"), ("frequency_penalty", "2"), ("repetition_penalty", "0.5"), ("stop", '["x"]'),
    ("seed", str(-(2**63))), ("seed", str(2**63 - 1)), ("logit_bias", '{"5": -100, "999": 100}'), ("n", "1"),
]


def _body(path: str, field: str, value: str, stream: bool) -> bytes:
    base = {"model": MODEL, "max_tokens": 3, "stream": stream}
    base.update({"messages": MSGS} if path == CHAT else {"prompt": "a b c"})
    text = json.dumps(base)
    return (text[:-1] + f', "{field}": {value}}}').encode()


def _check_envelope(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), "must answer before any stream starts"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param, err
    return err


@pytest.mark.parametrize("path", [CMPL, CHAT])
async def test_every_sampling_bound_is_a_400_naming_it_before_the_stream(serve, path: str) -> None:
    async with serve(n_replicas=1) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        for field, value, param in REFUSED:
            for stream in (False, True):
                r = await http.post(path, content=_body(path, field, value, stream),
                                    headers={"content-type": "application/json"})
                _check_envelope(r, 400, param)
        assert srv.router.outstanding() == 0 and await srv.total_running() == 0


@pytest.mark.parametrize("path", [CMPL, CHAT])
async def test_values_on_the_bounds_are_served(serve, path: str) -> None:
    async with serve(n_replicas=1) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        for field, value in ACCEPTED:
            r = await http.post(path, content=_body(path, field, value, False),
                                headers={"content-type": "application/json"})
            assert r.status_code == 200, (field, value, r.text)


async def test_unsupported_logprobs_are_a_400_naming_them(serve) -> None:
    async with serve(n_replicas=1) as srv, httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        for path, field, value in ((CMPL, "logprobs", "1"), (CHAT, "logprobs", "true"), (CHAT, "top_logprobs", "2")):
            r = await http.post(path, content=_body(path, field, value, True),
                                headers={"content-type": "application/json"})
            _check_envelope(r, 400, field)


class RefusingFakeReplica(FakeReplica):
    """A fake whose engine refuses every request once generation starts (as an engine's own input
    check would, for a limit ``validate`` does not know)."""

    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        async def refuse() -> AsyncIterator[TokenChunk]:
            raise InvalidRequestError("the engine refused the request: top_k too large", param="top_k",
                                      code="invalid_value")
            yield  # pragma: no cover - makes this an async generator

        return refuse()


class CrashingFakeReplica(FakeReplica):
    """A fake that emits one token, then fails with an unexpected (non-oserve) exception."""

    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        async def crash() -> AsyncIterator[TokenChunk]:
            yield TokenChunk(text=" t1", token_ids=(1,), finished=False, finish_reason=None, prompt_tokens=3,
                             completion_tokens=1)
            raise RuntimeError("boom")

        return crash()


def _events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("path", [CMPL, CHAT])
async def test_engine_refusal_is_a_400_or_an_error_event_and_counted_as_refused(serve, path: str) -> None:
    async with serve(n_replicas=1, replica_class=RefusingFakeReplica) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        r = await http.post(path, content=_body(path, "top_k", "5", False), headers={"content-type": "application/json"})
        _check_envelope(r, 400, "top_k")
        r = await http.post(path, content=_body(path, "top_k", "5", True), headers={"content-type": "application/json"})
        assert r.status_code == 200
        events = _events(r.text)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["param"] == "top_k"
        m = srv.app.state.metrics
        endpoint = "chat" if path == CHAT else "completions"
        assert m.finished_total(endpoint, "refused") == 2
        assert m.finished_total(endpoint, "abort") == 0
        assert srv.router.outstanding() == 0


async def test_stream_failing_after_headers_ends_with_error_event_and_done(serve) -> None:
    async with serve(n_replicas=1, replica_class=CrashingFakeReplica) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        r = await http.post(CHAT, content=_body(CHAT, "top_k", "5", True), headers={"content-type": "application/json"})
        assert r.status_code == 200
        events = _events(r.text)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["type"] == "internal_error"
        # the connection is still usable, and the fault is counted as a fault
        port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
        r2 = await http.get("/health")
        assert r2.extensions["network_stream"].get_extra_info("client_addr")[1] == port
        r3 = await http.post(CHAT, content=_body(CHAT, "top_k", "5", False), headers={"content-type": "application/json"})
        _check_envelope(r3, 500, None)
        m = srv.app.state.metrics
        assert m.finished_total("chat", "error") == 2
        assert m.finished_total("chat", "abort") == 0
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_total{endpoint="/v1/chat/completions",status="500"} 1.0' in text


def _broken_counter(prompt: str | list[int]) -> int:
    raise RuntimeError("tokenizer exploded")


async def test_unexpected_500_is_counted_and_keeps_the_connection(serve) -> None:
    async with serve(n_replicas=1, tokenizer_counter=_broken_counter) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        ports = set()
        for _ in range(5):
            r = await http.post(CMPL, json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
            err = _check_envelope(r, 500, None)
            assert err["type"] == "internal_error" and "exploded" not in err["message"]
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
        assert len(ports) == 1, "the keep-alive connection must survive a 500"
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_total{endpoint="/v1/completions",status="500"} 5.0' in text


async def test_client_disconnect_refusal_and_fault_are_counted_apart(serve) -> None:
    async with serve(n_replicas=1, options=FakeReplicaOptions(token_delay_s=0.01)) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=20) as http:
        # a refusal at validation (before generation) is a 400, not a generation outcome
        r = await http.post(CMPL, json={"model": MODEL, "prompt": "hi", "logit_bias": {"5000": 1}})
        _check_envelope(r, 400, "logit_bias")

        async def long_request() -> None:
            async with httpx.AsyncClient(base_url=srv.base_url) as c2, \
                    c2.stream("POST", CMPL, json={"model": MODEL, "prompt": "hi", "max_tokens": 500}) as resp:
                async for _ in resp.aiter_bytes():
                    pass

        task = asyncio.create_task(long_request())
        for _ in range(300):
            if await srv.total_running() == 1:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(300):
            if srv.router.outstanding() == 0:
                break
            await asyncio.sleep(0.01)
        m = srv.app.state.metrics
        assert m.finished_total("completions", "abort") == 1
        assert m.finished_total("completions", "refused") == 0
        assert m.finished_total("completions", "error") == 0
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_total{endpoint="/v1/completions",status="400"} 1.0' in text


@pytest.mark.parametrize("chunked", [False, True])
async def test_slow_oversized_body_gets_413_naming_the_limit_on_a_usable_connection(serve, chunked: bool) -> None:
    from oserve_server_support import MAX_BODY_BYTES  # type: ignore[import-not-found]

    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}).encode()

    async def parts() -> AsyncIterator[bytes]:
        # a slow upload: 2 s in all, longer than the server's keep-alive timeout of 1 s
        for i in range(0, len(big), 512 * 1024):
            await asyncio.sleep(0.1)
            yield big[i:i + 512 * 1024]

    async with serve(n_replicas=1, timeout_keep_alive_s=1) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        headers = {"content-type": "application/json"}
        if not chunked:
            headers["content-length"] = str(len(big))  # the limit is known before reading a byte
        r = await http.post(CHAT, content=parts(), headers=headers)
        err = _check_envelope(r, 413, "body")
        assert str(MAX_BODY_BYTES) in err["message"] and err["code"] == "body_too_large"
        port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
        r2 = await http.post(CHAT, json={"model": MODEL, "messages": MSGS, "max_tokens": 2})
        assert r2.status_code == 200
        assert r2.extensions["network_stream"].get_extra_info("client_addr")[1] == port
        text = (await http.get("/metrics")).text
        assert 'oserve_requests_total{endpoint="/v1/chat/completions",status="413"} 1.0' in text
