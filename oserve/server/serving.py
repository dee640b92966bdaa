"""Serving logic of the OpenAI-compatible endpoint (kept on ``app.state.serving``).

One request goes through:

1. validation beyond the protocol model (model name, empty prompt/messages, unsupported fields);
2. prompt rendering (chat: the injected chat-template renderer) and prompt token counting;
3. classification with the :class:`~oserve.types.ClassScheme` (prompt tokens and ``max_tokens``) and
   ``monitor.record_admission`` (arrivals count at admission, refused ones too; they then complete with ``ok=False``);
4. :meth:`oserve.server.router.Router.acquire_queued`: 503 when no replica is ready (and none is starting), 400
   when the prompt plus ``max_tokens`` fits no ready replica's *effective* context length; when every suitable
   replica is at its batch limit the request waits in the router-side queue (429 when the queue is full, 503
   past its timeout); a client that disconnects while queued leaves the queue (finish reason ``abort``). The
   prompt counts as pending prefill tokens on its replica until the replica's first output token
   (:meth:`~oserve.server.router.Router.first_token`) or the request's release, whichever comes first;
4b. :meth:`~oserve.backends.base.Replica.validate` on the chosen replica: the engine's own checks of
   the sampling parameters (vLLM's ``SamplingParams``), so a value the engine refuses is a 400
   naming the parameter before any response (stream or not) starts;
5. generation on the replica. If the replica fails (:class:`~oserve.errors.ReplicaError`, e.g. it died or was
   drained) before the first token, the request is retried on another replica (up to ``max_retries`` times).
   After the first token, a request its replica aborted (:class:`~oserve.errors.RequestAbortedError`: a drain)
   resumes on another replica from its last token (:mod:`oserve.server.resume`); any other error reaches the
   client (a 503 envelope, or an SSE ``error`` event and ``data: [DONE]`` when streaming). Every replica error
   is reported at once to the ``on_replica_error`` hook (the orchestrator health-checks the replica);
6. a client that disconnects (streaming or not) gets its engine request aborted, freeing the slot.

A stream that fails after its headers, whatever the exception, ends with one SSE error event and ``data: [DONE]``.
Each admitted request ends counted once in ``oserve_requests_finished_total`` by outcome: ``stop``/``length``,
``abort`` (client disconnect), ``refused`` (engine refusal), ``error`` (server fault).

Latencies (TTFT, TPOT, E2E) are measured on the injected :class:`~oserve.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Protocol, runtime_checkable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from oserve.backends.base import SamplingParams, TokenChunk
from oserve.clock import Clock
from oserve.errors import (
    ClientError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReplicaReadyError,
    ReplicaError,
    RequestAbortedError,
    ServerError,
)
from oserve.server.job import Job as _Job
from oserve.server.resume import MAX_RESUMES, continuation, shift_chunk
from oserve.server.router import Router
from oserve.types import ClassScheme, RequestClass

from .http_errors import error_payload, internal_error_payload
from .metrics import ServerMetrics
from .protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatResponseMessage,
    ChatStreamChoice,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamChoice,
    CompletionStreamResponse,
    DeltaMessage,
    ModelCard,
    ModelList,
    UsageInfo,
    random_id,
)
from .queued_acquire import ClientGone, acquire_watching, disconnected

__all__ = ["AdmissionMonitor", "PromptRenderer", "TokenCounter", "OpenAIServing"]

log = logging.getLogger(__name__)

_THREAD_TOKENIZE_CHARS = 16_384
"""Prompts longer than this (characters) are tokenized in a worker thread."""

PromptRenderer = Callable[[list[dict[str, str]]], str]
"""Renders chat messages (``[{"role", "content"}]``) into the model's prompt text (its chat template)."""

TokenCounter = Callable[[str | list[int]], int]
"""Counts a prompt's tokens with the served model's tokenizer."""


@runtime_checkable
class AdmissionMonitor(Protocol):
    """What the endpoint tells a workload monitor (``oserve.workload.monitor.WorkloadMonitor`` fits)."""

    def record_admission(self, request_id: str, request_class: RequestClass, input_tokens: int,
                         max_tokens: int) -> None: ...

    def record_first_token(self, request_id: str) -> None: ...

    def record_completion(self, request_id: str, output_tokens: int, ok: bool) -> None: ...


class _ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``on_close`` (shielded), even on client disconnect."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], object], **kw: object) -> None:
        super().__init__(content, **kw)  # type: ignore[arg-type]
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()  # type: ignore[misc]


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class OpenAIServing:
    """Serves completions and chat completions over a :class:`~oserve.server.router.Router`.

    Args:
        router: the replicas' router.
        served_model_names: model names clients may ask for (the first is the default).
        token_counter: counts prompt tokens; None uses a ready replica's ``count_tokens``.
        prompt_renderer: renders chat messages into a prompt (the model's chat template).
        scheme: request classes for routing and the monitor.
        monitor: optional workload monitor (see :class:`AdmissionMonitor`).
        metrics: the app's Prometheus metrics.
        clock: time source for latencies.
        max_retries: retries on another replica when a replica fails before the first token.
        on_replica_error: ``on_replica_error(replica_id, error)``, called at once when a request sees
            its replica fail (any :class:`~oserve.errors.ReplicaError`), before the retry; the
            composition passes the orchestrator's ``report_replica_error`` so a failing replica is
            checked and taken out without waiting for the next health round. It must not block.
    """

    def __init__(
        self,
        router: Router,
        *,
        served_model_names: list[str],
        token_counter: TokenCounter | None,
        prompt_renderer: PromptRenderer,
        scheme: ClassScheme,
        monitor: AdmissionMonitor | None,
        metrics: ServerMetrics,
        clock: Clock,
        max_retries: int = 1,
        on_replica_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.router = router
        self.on_replica_error = on_replica_error
        self.served_model_names = list(served_model_names)
        self.token_counter = token_counter
        self.prompt_renderer = prompt_renderer
        self.scheme = scheme
        self.monitor = monitor
        self.metrics = metrics
        self.clock = clock
        self.max_retries = max_retries
        self._created = int(time.time())

    # -- /v1/models -------------------------------------------------------------------------
    def models(self) -> ModelList:
        """The served model names, with the largest ready context length."""
        mml = self.router.max_model_len()
        return ModelList(data=[ModelCard(id=name, created=self._created, root=self.served_model_names[0],
                                         max_model_len=mml) for name in self.served_model_names])

    # -- validation helpers -----------------------------------------------------------------
    def _check_model(self, model: str | None) -> str:
        if model is None:
            return self.served_model_names[0]
        if model not in self.served_model_names:
            raise ModelNotFoundError(
                f"the model {model!r} does not exist; served models: {', '.join(self.served_model_names)}",
                param="model", code="model_not_found")
        return model

    @staticmethod
    def _check_supported(fields: list[str]) -> None:
        if fields:
            raise InvalidRequestError(f"'{fields[0]}' is not supported by this server; omit it or use its default",
                                      param=fields[0], code="unsupported_parameter")

    async def _count(self, prompt: str | list[int]) -> int:
        counter = self.token_counter
        if counter is None:
            ready = self.router.ready_replicas()
            if not ready:
                raise NoReplicaReadyError("no replica is ready to serve this request; retry later",
                                          retry_after_s=self.router.retry_after_s)
            counter = ready[0].count_tokens
        if isinstance(prompt, str) and len(prompt) > _THREAD_TOKENIZE_CHARS:
            # A long prompt's tokenization would stall every stream on the event loop.
            return await asyncio.to_thread(counter, prompt)
        return counter(prompt)

    async def _admit(self, endpoint: str, prompt: str | list[int], prompt_param: str, max_tokens: int | None,
               req: CompletionRequest | ChatCompletionRequest, raw: Request | None = None) -> _Job:
        admitted = self.clock.now()
        prompt_tokens = await self._count(prompt)
        if prompt_tokens <= 0:
            raise InvalidRequestError(f"the {prompt_param} is empty (0 tokens)", param=prompt_param,
                                      code="empty_prompt")
        rclass = self.scheme.classify(prompt_tokens, max_tokens)
        request_class = rclass.name
        request_id = random_id("cmpl" if endpoint == "completions" else "chatcmpl")
        if self.monitor is not None:
            # Without max_tokens the class's expected output stands in for the (unknown) output length.
            self.monitor.record_admission(request_id, rclass, prompt_tokens,
                                          max_tokens if max_tokens is not None else rclass.expected_output_tokens)
        needed = prompt_tokens + (max_tokens if max_tokens is not None else 1)
        try:
            replica = await acquire_watching(self.router, request_class, needed, prompt_tokens, prompt_param, raw,
                                             request_id=request_id)
        except (ClientError, ServerError, ClientGone) as e:
            if self.monitor is not None:
                self.monitor.record_completion(request_id, 0, False)
            if isinstance(e, ClientGone):
                self.metrics.finished.labels(endpoint, request_class, "abort").inc()
            raise
        if max_tokens is None:
            max_tokens = max(1, self.router.max_model_len(replica.replica_id) - prompt_tokens)
            needed = prompt_tokens + max_tokens
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=req.top_k if req.top_k not in (None, 0) else -1,
            min_p=req.min_p or 0.0,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            seed=req.seed,
            stop=req.stop_tuple(),
            ignore_eos=req.ignore_eos,
            n=1,
            logit_bias=req.logit_bias_ids(),
        )
        try:
            replica.validate(params)  # the engine's own limits, before any response starts
        except ClientError:
            self.router.release(replica.replica_id, request_id)
            if self.monitor is not None:
                self.monitor.record_completion(request_id, 0, False)
            raise
        self.metrics.in_flight.inc()
        self.metrics.prompt_tokens.labels(request_class).inc(prompt_tokens)
        return _Job(request_id=request_id, endpoint=endpoint, prompt=prompt, prompt_param=prompt_param,
                    prompt_tokens=prompt_tokens, request_class=request_class, params=params,
                    needed_tokens=needed, admitted_s=admitted, replica=replica)

    # -- generation -------------------------------------------------------------------------
    async def _chunks(self, job: _Job) -> AsyncIterator[TokenChunk]:
        """The engine's chunks, retrying on another replica if one fails before the first token, and
        resuming on another one (:mod:`oserve.server.resume`) if a replica aborts it after.

        Side effects: sets ``job.outcome`` to ``"refused"`` (the engine refused the request, a
        :class:`~oserve.errors.ClientError`) or ``"error"`` (a server fault) before re-raising.
        """
        prompt, params, before = job.prompt, job.params, 0  # before: output tokens of earlier replicas
        while True:
            replica = job.replica
            assert replica is not None
            prefilling = True  # on this replica: its pending prefill tokens end with its first output token
            try:
                async with aclosing(replica.generate(job.request_id, prompt, params)) as stream:
                    async for chunk in stream:
                        if prefilling and chunk.completion_tokens > 0:
                            prefilling = False
                            self.router.first_token(replica.replica_id, job.request_id)
                        chunk = shift_chunk(chunk, before, job.prompt_tokens)
                        if job.first_token_s is None and chunk.completion_tokens > 0:
                            job.first_token_s = self.clock.now()
                            if self.monitor is not None:
                                self.monitor.record_first_token(job.request_id)
                        job.output_tokens = chunk.completion_tokens
                        job.output_ids.extend(chunk.token_ids)
                        job.output_text += chunk.text
                        if chunk.prompt_tokens > 0 and not before:
                            job.prompt_tokens = chunk.prompt_tokens  # the engine's own count wins in usage
                        if chunk.finished:
                            job.engine_done = True
                            job.finish_reason = chunk.finish_reason
                        yield chunk
                job.engine_done = True
                return
            except ClientError:
                job.engine_done = True  # the engine refused it: nothing runs there to abort
                job.outcome = "refused"
                raise
            except ReplicaError as e:
                job.engine_done = True
                self._report(replica.replica_id, e)
                nxt = None
                if job.first_token_s is None:
                    # a drain's abort is no fault of the replica: it does not spend the failure retries (two
                    # switches 2 s apart drained two replicas under one waiting request, which then failed),
                    # only the per-request cap on hand-overs
                    drained = isinstance(e, RequestAbortedError) and job.resumes < MAX_RESUMES
                    if not drained and len(job.tried) >= self.max_retries:
                        job.outcome = "error"
                        raise
                    if drained:
                        job.resumes += 1
                    log.warning("replica %s %s before the first token of %s (%s); retrying elsewhere",
                                replica.replica_id, "drained it" if drained else "failed", job.request_id, e.message)
                else:
                    aborted = isinstance(e, RequestAbortedError)
                    if aborted and len(job.output_ids) >= job.params.max_tokens:  # nothing left: it is done
                        job.finish_reason = "length"
                        yield TokenChunk(text="", token_ids=(), finished=True, finish_reason="length",
                                         prompt_tokens=job.prompt_tokens, completion_tokens=job.output_tokens)
                        return
                    nxt = continuation(job.prompt, job.output_text, job.output_ids, job.params) \
                        if aborted and job.resumes < MAX_RESUMES else None
                    if nxt is None:
                        job.outcome = "error"
                        raise
                    log.info("replica %s aborted %s after %d output tokens (%s); resuming elsewhere",
                             replica.replica_id, job.request_id, len(job.output_ids), e.message)
                try:
                    self._reacquire(job, replica.replica_id)
                except ServerError:
                    if nxt is not None:
                        raise e from None  # nowhere to resume: the abort itself is the error
                    raise
                if nxt is None:
                    self.metrics.retried.inc()
                else:
                    (prompt, params), before = nxt, len(job.output_ids)
                    job.resumes += 1
                    self.metrics.resumed.inc()
            except Exception:  # a fault of ours or the engine's (a client disconnect is no Exception)
                job.outcome = "error"
                raise

    def _reacquire(self, job: _Job, failed_id: str) -> None:
        """Move ``job`` from replica ``failed_id`` to another one (sets ``job.outcome`` on failure)."""
        job.tried.append(failed_id)
        self.router.release(failed_id, job.request_id)
        job.replica = None
        try:
            job.replica = self.router.acquire(job.request_class, job.needed_tokens, exclude=job.tried,
                                              prompt_tokens=job.prompt_tokens, prompt_param=job.prompt_param,
                                              request_id=job.request_id)
            job.replica.validate(job.params)
        except ClientError:
            job.outcome = "refused"
            raise
        except ServerError:
            job.outcome = "error"
            raise
        job.engine_done = False

    def _report(self, replica_id: str, error: ReplicaError) -> None:
        """Tell the composition's ``on_replica_error`` hook; a failing hook is logged, never raised."""
        if self.on_replica_error is None:
            return
        try:
            self.on_replica_error(replica_id, error)
        except Exception:  # noqa: BLE001 - the request's own error matters more than the observer's
            log.exception("on_replica_error hook raised")

    async def _close(self, job: _Job, *, ok: bool) -> None:
        """End a request once: abort it on the engine if still running, release it, record it."""
        if job.closed:
            return
        job.closed = True
        replica = job.replica
        if replica is not None and not job.engine_done:
            try:
                await replica.abort(job.request_id)
            except Exception:  # noqa: BLE001 - a failing abort must not hide the request's own outcome
                log.exception("abort of %s on replica %s failed", job.request_id, replica.replica_id)
            job.finish_reason = job.finish_reason or "abort"
        if replica is not None:
            self.router.release(replica.replica_id, job.request_id)  # with its pending prefill tokens, if any
        if job.outcome is not None:
            reason = job.outcome  # "refused" (engine refusal, 4xx) or "error" (server fault)
        elif job.finish_reason is not None:
            reason = job.finish_reason
        else:
            reason = "stop" if ok else "abort"  # ended without an error of ours: the client left
        ok = ok and reason in ("stop", "length")
        self.metrics.in_flight.dec()
        self.metrics.finished.labels(job.endpoint, job.request_class, reason).inc()
        self.metrics.generation_tokens.labels(job.request_class).inc(job.output_tokens)
        if ok:
            ttft = None if job.first_token_s is None else job.first_token_s - job.admitted_s
            self.metrics.observe_latency(job.request_class, ttft, self.clock.now() - job.admitted_s,
                                         job.output_tokens)
        if self.monitor is not None:
            self.monitor.record_completion(job.request_id, job.output_tokens, ok)

    async def _collect(self, job: _Job, raw: Request) -> str | None:
        """Run a non-streaming request to the end; abort it if the client disconnects first.

        Returns:
            The output text, or None when the client disconnected (the request was aborted).
        """

        async def generate() -> str:
            parts: list[str] = []
            async for chunk in self._chunks(job):
                parts.append(chunk.text)
            return "".join(parts)

        gen_task = asyncio.ensure_future(generate())
        watch_task = asyncio.ensure_future(disconnected(raw))
        try:
            await asyncio.wait({gen_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch_task.cancel()
            with anyio.CancelScope(shield=True):
                if not gen_task.done():
                    gen_task.cancel()
                    await asyncio.gather(gen_task, return_exceptions=True)
                failed = gen_task.cancelled() or gen_task.exception() is not None
                await self._close(job, ok=not failed)
        if gen_task.cancelled():
            return None
        exc = gen_task.exception()
        if exc is not None:
            raise exc
        return gen_task.result()

    def _stream(self, job: _Job, make_chunk: Callable[[TokenChunk | None, UsageInfo | None, bool], list[dict]],
                include_usage: bool, continuous_usage: bool) -> StreamingResponse:
        """An SSE response: ``make_chunk`` turns each engine chunk into the protocol's chunk dicts."""
        state = {"ok": False}

        def usage() -> UsageInfo:
            return UsageInfo(prompt_tokens=job.prompt_tokens, completion_tokens=job.output_tokens,
                             total_tokens=job.prompt_tokens + job.output_tokens)

        async def events() -> AsyncIterator[str]:
            try:
                for payload in make_chunk(None, usage() if continuous_usage else None, True):
                    yield _sse(payload)
                async with aclosing(self._chunks(job)) as chunks:
                    async for chunk in chunks:
                        for payload in make_chunk(chunk, usage() if continuous_usage else None, False):
                            yield _sse(payload)
                if include_usage:
                    for payload in make_chunk(None, usage(), False):
                        yield _sse(payload)
                state["ok"] = True
            except (ClientError, ServerError) as e:
                yield _sse(error_payload(e))
            except Exception:  # noqa: BLE001 - headers are gone: end the stream with an error event
                log.exception("stream %s failed", job.request_id)
                job.outcome = "error"
                yield _sse(internal_error_payload())
            yield "data: [DONE]\n\n"

        body = events()

        async def on_close() -> None:
            await body.aclose()
            await self._close(job, ok=state["ok"])

        return _ClosingStreamingResponse(body, on_close, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Request-Id": job.request_id})

    # -- endpoints --------------------------------------------------------------------------
    async def completions(self, req: CompletionRequest, raw: Request) -> Response:
        """Serve ``POST /v1/completions``.

        Raises:
            ClientError: bad input (see the module docstring); ServerError: no replica ready, or
                the replica failed after the first token (non-streaming).
        """
        model = self._check_model(req.model)
        self._check_supported(req.unsupported())
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise InvalidRequestError("batched prompts are not supported: send one prompt per request",
                                          param="prompt", code="unsupported_parameter")
            prompt = prompt[0]
        if isinstance(prompt, str) and not prompt or isinstance(prompt, list) and not prompt:
            raise InvalidRequestError("the prompt is empty", param="prompt", code="empty_prompt")
        if req.echo and not isinstance(prompt, str):
            raise InvalidRequestError("echo is only supported with a text prompt", param="echo",
                                      code="unsupported_parameter")
        try:
            job = await self._admit("completions", prompt, "prompt", req.max_tokens, req, raw)  # type: ignore[arg-type]
        except ClientGone:
            return Response(status_code=499)  # left while queued; nobody reads this
        echo = prompt if req.echo and isinstance(prompt, str) else ""
        created = int(time.time())
        if req.stream:
            opts = req.stream_options
            include_usage = bool(opts and opts.include_usage)
            continuous = bool(opts and opts.include_usage and opts.continuous_usage_stats)

            def make(chunk: TokenChunk | None, usage: UsageInfo | None, first: bool) -> list[dict]:
                if chunk is None and not first:
                    return [CompletionStreamResponse(id=job.request_id, created=created, model=model, choices=[],
                                                     usage=usage).model_dump()]
                if chunk is None:
                    if not echo:
                        return []
                    choice = CompletionStreamChoice(text=echo)
                else:
                    choice = CompletionStreamChoice(text=chunk.text,
                                                    finish_reason=chunk.finish_reason if chunk.finished else None)
                d = CompletionStreamResponse(id=job.request_id, created=created, model=model, choices=[choice],
                                             usage=usage).model_dump()
                if not include_usage:
                    d.pop("usage")
                return [d]

            return self._stream(job, make, include_usage, continuous)
        text = await self._collect(job, raw)
        if text is None:
            return Response(status_code=499)  # client closed the request; nobody reads this
        resp = CompletionResponse(
            id=job.request_id, created=created, model=model,
            choices=[CompletionChoice(text=echo + text, finish_reason=job.finish_reason)],
            usage=UsageInfo(prompt_tokens=job.prompt_tokens, completion_tokens=job.output_tokens,
                            total_tokens=job.prompt_tokens + job.output_tokens),
        )
        return JSONResponse(resp.model_dump())

    async def chat(self, req: ChatCompletionRequest, raw: Request) -> Response:
        """Serve ``POST /v1/chat/completions``.

        Raises:
            ClientError: bad input (see the module docstring); ServerError: no replica ready, or
                the replica failed after the first token (non-streaming).
        """
        model = self._check_model(req.model)
        self._check_supported(req.unsupported())
        if not req.messages:
            raise InvalidRequestError("messages is empty: send at least one message", param="messages",
                                      code="empty_messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            prompt = self.prompt_renderer(messages)
        except Exception as e:  # noqa: BLE001 - the chat template rejects the conversation (user input)
            raise InvalidRequestError(f"the chat template rejected the messages: {e}", param="messages",
                                      code="invalid_messages") from None
        try:
            job = await self._admit("chat", prompt, "messages", req.requested_max_tokens(), req, raw)
        except ClientGone:
            return Response(status_code=499)  # left while queued; nobody reads this
        created = int(time.time())
        if req.stream:
            opts = req.stream_options
            include_usage = bool(opts and opts.include_usage)
            continuous = bool(opts and opts.include_usage and opts.continuous_usage_stats)

            def make(chunk: TokenChunk | None, usage: UsageInfo | None, first: bool) -> list[dict]:
                def wrap(choices: list[ChatStreamChoice]) -> dict:
                    d = ChatCompletionStreamResponse(id=job.request_id, created=created, model=model,
                                                     choices=choices, usage=usage).model_dump()
                    if not include_usage:
                        d.pop("usage")
                    return d

                if chunk is None:
                    if first:
                        return [wrap([ChatStreamChoice(delta=DeltaMessage(role="assistant", content=""))])]
                    return [wrap([])]
                out = []
                if chunk.text:
                    out.append(wrap([ChatStreamChoice(delta=DeltaMessage(content=chunk.text))]))
                if chunk.finished:
                    out.append(wrap([ChatStreamChoice(delta=DeltaMessage(), finish_reason=chunk.finish_reason)]))
                return out

            return self._stream(job, make, include_usage, continuous)
        text = await self._collect(job, raw)
        if text is None:
            return Response(status_code=499)  # client closed the request; nobody reads this
        resp = ChatCompletionResponse(
            id=job.request_id, created=created, model=model,
            choices=[ChatChoice(message=ChatResponseMessage(content=text), finish_reason=job.finish_reason)],
            usage=UsageInfo(prompt_tokens=job.prompt_tokens, completion_tokens=job.output_tokens,
                            total_tokens=job.prompt_tokens + job.output_tokens),
        )
        return JSONResponse(resp.model_dump())
