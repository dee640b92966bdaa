"""Bad inputs oserve's OpenAI-compatible endpoint must refuse with a 4xx naming the field.

They describe oserve's endpoint (which, for example, does not support ``logprobs``), whatever
replicas stand behind it.

The same cases run against :class:`~oserve.testing.fake_backend.FakeBackend` replicas in the unit
tests and against real engines in the integration tests::

    for case in bad_request_cases("my-model", max_model_len=2048, max_body_bytes=4 << 20):
        r = await client.request(case.method, case.path, headers=dict(case.headers), content=case.body)
        check_error_response(case, r.status_code, r.json())
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

__all__ = ["BadRequestCase", "bad_request_cases", "check_error_response"]

_JSON = ("content-type", "application/json")


class BadRequestCase(NamedTuple):
    """One bad request and the answer expected.

    Attributes:
        name: short id (used as the pytest id).
        method: HTTP method.
        path: URL path, e.g. ``"/v1/chat/completions"``.
        headers: request headers as (name, value) pairs.
        body: raw body bytes.
        expected_status: HTTP status expected (400, 404, 413, ...).
        expected_param: the error envelope's ``param`` expected (None: not checked).
    """

    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    expected_status: int
    expected_param: str | None


def bad_request_cases(model: str, *, max_model_len: int, max_body_bytes: int,
                      api_key: str | None = None) -> list[BadRequestCase]:
    """Build the bad-request cases for a server.

    Args:
        model: a served model name.
        max_model_len: the replicas' largest effective context length, tokens.
        max_body_bytes: the server's body limit, bytes.
        api_key: the server's API key, if any (sent with every case).

    Returns:
        The cases; each answer must be the error envelope with the expected status and ``param``.
    """
    auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    chat, cmpl = "/v1/chat/completions", "/v1/completions"
    msgs = [{"role": "user", "content": "Say hello."}]

    def j(**body: Any) -> bytes:
        return json.dumps(body).encode()

    def case(name: str, path: str, body: bytes, status: int, param: str | None,
             headers: tuple[tuple[str, str], ...] = (_JSON,)) -> BadRequestCase:
        return BadRequestCase(name, "POST", path, headers + auth, body, status, param)

    long_prompt = "hi " * (max_model_len + 16)
    cases = [
        case("malformed_json", chat, b'{"model": "' + model.encode() + b'", "messages": [', 400, "body"),
        case("not_utf8", cmpl, b'{"model": "' + model.encode() + b'", "prompt": "caf\xe9 \xff"}', 400, "body"),
        case("not_an_object", cmpl, b"[1, 2, 3]", 400, "body"),
        case("wrong_content_type", chat, j(model=model, messages=msgs), 400, "content-type",
             headers=(("content-type", "text/plain"),)),
        case("form_content_type", cmpl, b"model=x&prompt=y", 400, "content-type",
             headers=(("content-type", "application/x-www-form-urlencoded"),)),
        case("unknown_model_chat", chat, j(model="no-such-model", messages=msgs), 404, "model"),
        case("unknown_model_completion", cmpl, j(model="no-such-model", prompt="Hello"), 404, "model"),
        case("missing_prompt", cmpl, j(model=model), 400, "prompt"),
        case("empty_prompt", cmpl, j(model=model, prompt=""), 400, "prompt"),
        case("empty_prompt_ids", cmpl, j(model=model, prompt=[]), 400, "prompt"),
        case("empty_messages", chat, j(model=model, messages=[]), 400, "messages"),
        case("bad_role", chat, j(model=model, messages=[{"role": "wizard", "content": "hi"}]), 400,
             "messages.0.role"),
        case("max_tokens_zero", cmpl, j(model=model, prompt="Hello", max_tokens=0), 400, "max_tokens"),
        case("max_tokens_negative", chat, j(model=model, messages=msgs, max_tokens=-5), 400, "max_tokens"),
        case("max_completion_tokens_zero", chat, j(model=model, messages=msgs, max_completion_tokens=0), 400,
             "max_completion_tokens"),
        case("max_tokens_not_int", cmpl, j(model=model, prompt="Hello", max_tokens="many"), 400, "max_tokens"),
        case("temperature_negative", chat, j(model=model, messages=msgs, temperature=-0.5), 400, "temperature"),
        case("top_p_zero", cmpl, j(model=model, prompt="Hello", top_p=0), 400, "top_p"),
        case("top_p_above_one", chat, j(model=model, messages=msgs, top_p=1.5), 400, "top_p"),
        case("top_k_below_minus_one", cmpl, j(model=model, prompt="Hello", top_k=-2), 400, "top_k"),
        case("n_too_large", chat, j(model=model, messages=msgs, n=2), 400, "n"),
        case("echo_prompt_logprobs_only", cmpl, j(model=model, prompt="Hello", echo=True, logprobs=1, max_tokens=0),
             400, None),
        case("logprobs_unsupported", cmpl, j(model=model, prompt="Hello", logprobs=1, max_tokens=2), 400, "logprobs"),
        case("context_overflow_completion", cmpl, j(model=model, prompt="Hello", max_tokens=max_model_len), 400,
             "max_tokens"),
        case("context_overflow_chat", chat, j(model=model, messages=msgs, max_tokens=max_model_len), 400,
             "max_tokens"),
        case("prompt_too_long", cmpl, j(model=model, prompt=long_prompt, max_tokens=1), 400, "prompt"),
        case("oversized_body", cmpl, j(model=model, prompt="x" * (max_body_bytes + 1)), 413, "body"),
    ]
    return cases


def check_error_response(case: BadRequestCase, status: int, body: Any) -> None:
    """Assert an answer matches ``case`` and is the error envelope.

    Raises:
        AssertionError: wrong status, not the envelope ``{"error": {"message", "type", "param",
            "code"}}``, an empty message, or a ``param`` other than expected.
    """
    assert status == case.expected_status, f"{case.name}: status {status}, expected {case.expected_status}: {body}"
    assert isinstance(body, dict) and set(body) == {"error"}, f"{case.name}: not an error envelope: {body}"
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, f"{case.name}: envelope keys {sorted(err)}"
    assert isinstance(err["message"], str) and err["message"], f"{case.name}: empty message"
    if case.expected_param is not None:
        assert err["param"] == case.expected_param, f"{case.name}: param {err['param']!r}, expected " \
                                                    f"{case.expected_param!r}: {err['message']}"
