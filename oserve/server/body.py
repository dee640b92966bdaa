"""Read a request body into a protocol model, with a 4xx naming the field for every bad input.

Checks, in order (each raises an :mod:`oserve.errors` client error):

1. ``Content-Type`` is ``application/json`` (any parameters, e.g. ``charset``, allowed); else
   400 ``param="content-type"``, as vLLM answers (its ``validate_json_request`` raises a request
   validation error, i.e. 400, not 415);
2. the body is at most ``max_body_bytes``: a larger ``Content-Length`` is refused before reading,
   and a chunked body is cut off as soon as it passes the limit; 413 ``param="body"``;
3. the bytes are valid UTF-8; else 400 ``param="body"`` with the byte offset;
4. the text is JSON (an object); else 400 ``param="body"`` with line and column;
5. the object validates against the model; else 400 whose ``param`` is the first bad field's path
   (``"temperature"``, ``"messages.0.role"``).

A body refused before it was read (too large, wrong content type, bad API key, unknown route) is
read and thrown away before the answer starts by :class:`BodyDrain`, up to
:data:`DISCARD_LIMIT_BYTES`: a server that closes a connection with unread bytes makes the kernel
send a TCP reset, and the client sees "connection reset" instead of the 4xx answer.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oserve.errors import InvalidRequestError, RequestTooLargeError

__all__ = ["read_model", "BodyDrain", "DISCARD_LIMIT_BYTES"]

DISCARD_LIMIT_BYTES = 256 * 1024 * 1024
"""Most bytes of an unread request body :class:`BodyDrain` reads and discards (256 MiB); past
that the connection is closed (the client may then see a reset)."""

M = TypeVar("M", bound=BaseModel)


async def _read_limited(request: Request, max_body_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise RequestTooLargeError(f"request body of {int(declared)} bytes exceeds the limit of {max_body_bytes} bytes",
                                   param="body", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise RequestTooLargeError(f"request body exceeds the limit of {max_body_bytes} bytes",
                                       param="body", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyDrain:
    """ASGI middleware reading and discarding what the app left unread of a request body before
    its answer starts.

    A server that answers early (413, a bad API key, a wrong content type) and then closes the
    connection (uvicorn does after its keep-alive timeout, counted from the answer) while the client
    is still sending makes the kernel reset the connection: the client sees "connection reset"
    instead of the answer. Reading the rest first lets the client finish sending and then read the
    answer, and the keep-alive connection stays usable. Stops after ``limit_bytes`` or when the
    client disconnects.

    Args:
        app: the wrapped ASGI app.
        limit_bytes: most bytes to discard per request.
    """

    def __init__(self, app: ASGIApp, limit_bytes: int = DISCARD_LIMIT_BYTES) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        done = False

        async def tracking_receive() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                discarded = 0
                while not done and discarded <= self.limit_bytes:
                    discarded += len((await tracking_receive()).get("body", b""))
            await send(message)

        await self.app(scope, tracking_receive, draining_send)


def _param_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


def _validation_message(model: type[BaseModel], exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    # Drop pydantic's union-branch labels (e.g. "str", "list[int]") from the location.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float"))))
    param = _param_of(loc)
    msg = err["msg"]
    field = model.model_fields.get(str(loc[0])) if loc else None
    hint = f" (allowed: {field.description})" if field is not None and field.description else ""
    got = f"; got {err['input']!r}" if err.get("type") != "missing" and not isinstance(err.get("input"), dict) else ""
    extra = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
    return f"invalid value for '{param}': {msg}{got}{hint}{extra}"[:2000], param


async def read_model(request: Request, model: type[M], max_body_bytes: int) -> M:
    """Read and validate the JSON body of ``request`` as ``model``.

    Args:
        request: the incoming request.
        model: the protocol model class.
        max_body_bytes: largest accepted body, bytes.

    Returns:
        The validated model instance.

    Raises:
        InvalidRequestError: wrong content type, bytes not UTF-8, malformed JSON, not an object, or a
            field that fails validation (``param`` names it).
        RequestTooLargeError: the body exceeds ``max_body_bytes`` (413).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise InvalidRequestError(
            f"unsupported content type {media_type or '(none)'!r}: only 'application/json' is allowed",
            param="content-type", code="unsupported_media_type")
    raw = await _read_limited(request, max_body_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"request body is not valid UTF-8 (invalid byte at offset {e.start})",
                                  param="body", code="invalid_encoding") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                                  param="body", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"request body must be a JSON object, got {type(data).__name__}",
                                  param="body", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        message, param = _validation_message(model, e)
        raise InvalidRequestError(message, param=param, code="invalid_value") from None
