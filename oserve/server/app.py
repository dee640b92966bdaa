"""The FastAPI app factory of the OpenAI-compatible endpoint.

Routes are thin: they check the API key, read the body into a protocol model
(:func:`oserve.server.body.read_model`) and hand it to :class:`~oserve.server.serving.OpenAIServing`
kept on ``app.state.serving``. Errors become the OpenAI envelope through the handlers in
:mod:`oserve.server.http_errors`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oserve.clock import Clock, WallClock
from oserve.errors import AuthenticationError, ConfigError
from oserve.server.router import Router
from oserve.types import DEFAULT_SCHEME, ClassScheme

from .body import BodyDrain, read_model
from .chat_template import render_plain_chat
from .http_errors import OuterErrorGuard, error_response, install_exception_handlers
from .metrics import ServerMetrics
from .protocol import ChatCompletionRequest, CompletionRequest
from .serving import AdmissionMonitor, OpenAIServing, PromptRenderer, TokenCounter

__all__ = ["create_app", "api_key_dependency", "DEFAULT_MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest accepted request body, bytes (4 MiB)."""

_ENDPOINTS = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"}


class _StatusCounter:
    """ASGI middleware counting answered HTTP requests by endpoint and status (the outermost one,
    so 500s from :class:`~oserve.server.http_errors.OuterErrorGuard` count too)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def api_key_dependency(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency checking ``Authorization: Bearer <api_key>`` (no check when None).

    Use it for routes added next to the endpoint's, e.g.
    ``app.include_router(make_admin_router(orch, auth=app.state.auth))``.

    Raises (from the dependency):
        AuthenticationError: header missing, not ``Bearer``, or a wrong key (401).
    """

    async def check(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'",
                                      param="authorization", code="invalid_api_key")
        if not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise AuthenticationError("invalid API key", param="authorization", code="invalid_api_key")

    return check


def _routes(auth: object) -> APIRouter:
    protected = APIRouter(dependencies=[Depends(auth)])

    @protected.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state = request.app.state
        req = await read_model(request, CompletionRequest, state.max_body_bytes)
        return await state.serving.completions(req, request)

    @protected.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state = request.app.state
        req = await read_model(request, ChatCompletionRequest, state.max_body_bytes)
        return await state.serving.chat(req, request)

    @protected.get("/v1/models")
    async def models(request: Request) -> Response:
        return JSONResponse(request.app.state.serving.models().model_dump())

    @protected.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = request.app.state
        text = b"".join(generate_latest(reg) for reg in (state.metrics.registry, *state.metrics_registries))
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return protected


def create_app(
    router: Router,
    *,
    served_model_names: list[str],
    tokenizer_counter: TokenCounter | None = None,
    prompt_renderer: PromptRenderer | None = None,
    monitor: AdmissionMonitor | None = None,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    scheme: ClassScheme = DEFAULT_SCHEME,
    clock: Clock | None = None,
    max_retries: int = 1,
    metrics_registries: Sequence[CollectorRegistry] = (),
    on_replica_error: Callable[[str, Exception], None] | None = None,
) -> FastAPI:
    """Build the OpenAI-compatible FastAPI app over a router's replicas.

    Constructing the app starts nothing; serve it with uvicorn. At startup (ASGI lifespan) the
    router reads each replica's effective context length (:meth:`Router.refresh`).

    Args:
        router: routes requests to replicas (the caller adds replicas and sets their states).
        served_model_names: model names clients may use in ``model`` (first: default and root).
        tokenizer_counter: counts a prompt's tokens (text or token ids) with the model's
            tokenizer; None uses a ready replica's ``count_tokens``.
        prompt_renderer: renders chat messages ``[{"role", "content"}]`` into the prompt text
            (the model's chat template, e.g. from ``tokenizer.apply_chat_template``); None uses
            :func:`oserve.server.chat_template.render_plain_chat` and logs a warning.
        monitor: optional workload monitor told of admissions, first tokens and completions.
        api_key: when set, every endpoint but ``/health`` needs ``Authorization: Bearer <key>``.
        max_body_bytes: largest accepted request body, bytes (larger: 413).
        scheme: request classes for routing and the monitor.
        clock: time source for TTFT/TPOT/E2E; None: :class:`~oserve.clock.WallClock`.
        max_retries: times a request is retried on another replica when its replica fails before
            the first token.
        metrics_registries: more Prometheus registries ``/metrics`` exports after the endpoint's
            own (e.g. the monitor's and the orchestrator's); metric names must not collide.
        on_replica_error: ``on_replica_error(replica_id, error)`` when a request sees its replica
            fail (e.g. the orchestrator's ``report_replica_error``); see :class:`OpenAIServing`.

    Returns:
        The app. ``app.state`` holds ``router``, ``serving`` (:class:`OpenAIServing`),
        ``metrics`` (:class:`ServerMetrics`, with its own ``registry``), ``metrics_registries``,
        ``max_body_bytes`` and ``auth`` (the API-key dependency, for routes added later).

    Raises:
        ConfigError: ``served_model_names`` empty, ``api_key`` empty, ``max_body_bytes`` < 1 or
            ``max_retries`` < 0.
    """
    if not served_model_names:
        raise ConfigError("served_model_names is empty", field="served_model_names", allowed="at least one name")
    if api_key is not None and not api_key:
        raise ConfigError("api_key is an empty string", field="api_key", allowed="a non-empty string or None")
    if max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes is {max_body_bytes}", field="max_body_bytes", allowed=">= 1")
    if max_retries < 0:
        raise ConfigError(f"max_retries is {max_retries}", field="max_retries", allowed=">= 0")
    if prompt_renderer is None:
        log.warning("no chat template given; chat prompts use the plain 'role: content' format")
        prompt_renderer = render_plain_chat

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.refresh()
        yield

    app = FastAPI(title="oserve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ServerMetrics(router)
    app.state.router = router
    app.state.metrics = metrics
    app.state.max_body_bytes = max_body_bytes
    app.state.metrics_registries = tuple(metrics_registries)
    app.state.serving = OpenAIServing(
        router, served_model_names=served_model_names, token_counter=tokenizer_counter,
        prompt_renderer=prompt_renderer, scheme=scheme, monitor=monitor, metrics=metrics,
        clock=clock or WallClock(), max_retries=max_retries, on_replica_error=on_replica_error,
    )
    install_exception_handlers(app)

    @app.get("/health")
    async def health(request: Request) -> Response:
        ready = request.app.state.router.ready_count()
        if ready == 0:
            return error_response(503, "no replica is ready", "service_unavailable", code="no_replica_ready",
                                  headers={"Retry-After": str(max(1, int(router.retry_after_s + 0.999)))})
        return JSONResponse({"status": "ok", "ready_replicas": ready})

    auth = api_key_dependency(api_key)
    app.state.auth = auth
    app.include_router(_routes(auth))
    app.add_middleware(OuterErrorGuard)  # answers unexpected errors with a 500 envelope ...
    app.add_middleware(BodyDrain)  # reads what an early answer left unread (no connection reset)
    app.add_middleware(_StatusCounter, metrics=metrics)  # ... that this outer one counts
    return app
