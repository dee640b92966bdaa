"""Map oserve's exceptions to the OpenAI error envelope.

Mapping is by class, never by catching every ``ValueError``:

- :class:`~oserve.errors.ClientError` -> its ``status_code`` (400, 401, 404, 413), ``type``
  its ``error_type``, ``param`` and ``code`` from the exception;
- :class:`~oserve.errors.ServerError` -> its ``status_code`` (503 for
  :class:`~oserve.errors.NoReplicaReadyError`, with a ``Retry-After`` header in whole seconds);
- Starlette's ``HTTPException`` (unknown route 404, wrong method 405) -> that status;
- anything else -> 500 ``internal_error`` without internals in the message (logged with its trace).

The body is ``{"error": {"message": str, "type": str, "param": str | null, "code": str | null}}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oserve.errors import ClientError, NoReplicaReadyError, ServerError

from .protocol import ErrorInfo, ErrorResponse

__all__ = ["error_response", "install_exception_handlers"]

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


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal server error", "internal_error", code="internal_error")


def install_exception_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
