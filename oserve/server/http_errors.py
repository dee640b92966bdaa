"""Map oserve's exceptions to the OpenAI error envelope.

Mapping is by class, never by catching every ``ValueError``:

- :class:`~oserve.errors.ClientError` -> its ``status_code`` (400, 401, 404, 413), ``type``
  its ``error_type``, ``param`` and ``code`` from the exception;
- :class:`~oserve.errors.ServerError` -> its ``status_code`` (503 for
  :class:`~oserve.errors.NoReplicaReadyError`, with a ``Retry-After`` header in whole seconds);
- Starlette's ``HTTPException`` (unknown route 404, wrong method 405) -> that status;
- anything else -> 500 ``internal_error`` without internals in the message (logged with its trace),
  answered by :class:`OuterErrorGuard`, a middleware outside the routes: unlike Starlette's
  ``ServerErrorMiddleware`` it does not re-raise, so the 500 is counted in the metrics and the
  keep-alive connection that carried it stays open.

The body is ``{"error": {"message": str, "type": str, "param": str | null, "code": str | null}}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oserve.errors import ClientError, NoReplicaReadyError, ServerError

from .protocol import ErrorInfo, ErrorResponse

__all__ = ["error_response", "error_payload", "internal_error_payload", "install_exception_handlers",
           "OuterErrorGuard"]

log = logging.getLogger(__name__)


def error_response(status_code: int, message: str, err_type: str, *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """Build the JSON error envelope response."""
    body = ErrorResponse(error=ErrorInfo(message=message, type=err_type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def error_payload(exc: ClientError | ServerError) -> dict:
    """The envelope of an oserve error as a dict (used inside SSE streams)."""
    return ErrorResponse(error=ErrorInfo(message=exc.message, type=exc.error_type,
                                         param=getattr(exc, "param", None), code=exc.code)).model_dump()


def internal_error_payload() -> dict:
    """The envelope of an unexpected server fault (no internals in the message)."""
    return ErrorResponse(error=ErrorInfo(message="internal server error", type="internal_error",
                                         code="internal_error")).model_dump()


async def _client_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return error_response(exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code,
                          headers=headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    headers = None
    if isinstance(exc, NoReplicaReadyError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    else:
        log.warning("server error on %s: %s", request.url.path, exc.message)
    return error_response(exc.status_code, exc.message, exc.error_type, code=exc.code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    err_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), err_type, headers=getattr(exc, "headers", None))


class OuterErrorGuard:
    """ASGI middleware answering any unexpected exception with the 500 envelope, without re-raising.

    Install it just inside the status-counting middleware, so the 500 it sends is counted like any
    other answer. When the response had already started (a stream
    past its headers), nothing can be sent any more: the error is logged and the response ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: answer, never crash
            log.exception("unexpected error on %s", scope.get("path", ""), exc_info=exc)
            if not started:
                await JSONResponse(internal_error_payload(), status_code=500)(scope, receive, send)


def install_exception_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app`` (unexpected exceptions: :class:`OuterErrorGuard`)."""
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
