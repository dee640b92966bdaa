"""A conformance suite every :class:`~oserve.backends.base.Backend` must pass.

``check_backend(factory, spec)`` starts one replica of a small variant and walks it through the
whole :class:`~oserve.backends.base.Replica` contract, in this order (each a named *step*):

1. ``start_failure``: a spec whose model path does not exist fails to start with
   :class:`~oserve.errors.EngineStartError` (a typed error with a ``cause``), nothing left running;
2. ``start``: the replica starts, is ``"ready"`` and healthy;
3. ``idle_stats``: running and waiting are 0 (or None: unknown), the context length is <= the spec's;
4. ``count_tokens``: a token-id list counts its length; text counts > 0 and grows with the text;
5. ``generate``: one request consumed whole (the non-streaming path): finish reason ``"length"``,
   exactly ``max_tokens`` output tokens, prompt tokens as counted, greedy output repeatable;
6. ``stream``: chunks arrive one by one before the request ends (streaming path);
7. ``busy``: with requests in flight, ``health()`` is True and ``stats()`` shows them
   (running + waiting >= 1 when known);
8. ``abort``: :meth:`abort` mid-stream ends that stream early (a last chunk with finish reason
   ``"abort"``, or :class:`~oserve.errors.RequestAbortedError`), and the engine slot is freed;
9. ``disconnect``: closing a stream (the client went away) frees the engine slot too;
10. ``bad_request``: a prompt longer than the context raises
    :class:`~oserve.errors.InvalidRequestError` (HTTP 400), and the replica keeps serving;
11. ``drain``: with streams in flight, ``drain(timeout_s)`` returns how many it aborted; exactly
    those streams raise :class:`~oserve.errors.RequestAbortedError`, the others finish; then new
    requests are refused with :class:`~oserve.errors.ReplicaError`;
12. ``stop``: ``stop()`` leaves the replica ``"stopped"``, unhealthy, refusing requests;
    a second ``stop()`` is a no-op;
13. ``release`` (optional, ``check_restart=True``): the same backend starts a new replica with the
    same id and spec, proving the first one released its cores, ports and id.

The model is scikit-learn's ``check_estimator``: implementers run it in their tests::

    from oserve.testing.backend_check import check_backend
    report = check_backend(lambda: MyBackend(), spec)

A failed check raises :class:`BackendCheckError` naming the step. Timings in the returned
:class:`BackendCheckReport` are informative only; no check depends on speed except the generous
``step_timeout_s`` bounds (a hung engine must fail the suite, not hang it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaStats, SamplingParams, TokenChunk
from oserve.errors import EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError

__all__ = ["BackendCheckError", "BackendCheckReport", "check_backend", "acheck_backend", "DEFAULT_PROMPT"]

DEFAULT_PROMPT = "The capital of France is Paris. The capital of Italy is"
"""A short prompt every tokenizer splits into a handful of tokens."""


class BackendCheckError(AssertionError):
    """A backend broke the contract.

    Attributes:
        step: the name of the failed step (see the module docstring).
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"check_backend step {step!r}: {message}")
        self.step = step


@dataclass
class BackendCheckReport:
    """What :func:`check_backend` observed.

    Attributes:
        backend: the backend's ``name``.
        steps: the steps passed, in order.
        start_s: seconds the successful start took.
        decode_tokens_per_s: output tokens per second of the single ``generate`` request.
        notes: observations that are allowed but worth knowing (e.g. stats unknown).
    """

    backend: str
    steps: list[str] = field(default_factory=list)
    start_s: float | None = None
    decode_tokens_per_s: float | None = None
    notes: list[str] = field(default_factory=list)


def _require(ok: bool, step: str, message: str) -> None:
    if not ok:
        raise BackendCheckError(step, message)


def _greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=0)


class _Stream:
    """Consumes one replica stream in a task; records chunks and how it ended."""

    def __init__(self, replica: Replica, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        self.request_id = request_id
        self.chunks: list[TokenChunk] = []
        self.error: BaseException | None = None
        self.first = asyncio.Event()
        self._gen: AsyncIterator[TokenChunk] = replica.generate(request_id, prompt, params)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for chunk in self._gen:
                self.chunks.append(chunk)
                self.first.set()
        except Exception as exc:  # recorded for the checks
            self.error = exc
        finally:
            self.first.set()

    @property
    def tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks) if self.chunks else 0

    @property
    def finish_reason(self) -> str | None:
        return self.chunks[-1].finish_reason if self.chunks and self.chunks[-1].finished else None

    async def close(self) -> None:
        """Close the stream as a disconnecting client does (cancel the consumer)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        aclose = getattr(self._gen, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _wait_for(pred: Callable[[], object], timeout_s: float, step: str, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = pred()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise BackendCheckError(step, f"{what} (waited {timeout_s:.0f} s)")
        await asyncio.sleep(0.05)


async def _idle(replica: Replica) -> bool:
    s: ReplicaStats = await replica.stats()
    return (s.running or 0) == 0 and (s.waiting or 0) == 0


async def acheck_backend(
    factory: Callable[[], Backend],
    spec: ReplicaSpec,
    *,
    failing_spec: ReplicaSpec | None = None,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 8,
    long_max_tokens: int | None = None,
    drain_timeout_s: float = 0.3,
    step_timeout_s: float = 120.0,
    start_timeout_s: float = 600.0,
    check_restart: bool = False,
    replica_id: str = "check-0",
) -> BackendCheckReport:
    """Run the conformance suite (the async form of :func:`check_backend`).

    Args:
        factory: builds the backend under test (called once, plus once for the start failure).
        spec: a small variant to start (the suite sends a few dozen short requests).
        failing_spec: a spec whose start must fail; default: ``spec`` with a model path that
            does not exist.
        prompt: the text prompt used throughout.
        max_tokens: output tokens of the short requests (>= 2).
        long_max_tokens: output tokens of the requests the suite aborts or drains, which must
            still be running ``drain_timeout_s`` after their first token; default: as many as the
            context allows, up to 1000.
        drain_timeout_s: the drain timeout, seconds.
        step_timeout_s: the longest any one wait may take (a hung engine fails the suite), seconds.
        start_timeout_s: the longest a start may take, seconds.
        check_restart: also start a second replica with the same id after stopping the first.
        replica_id: the id of the replica started.

    Returns:
        A :class:`BackendCheckReport`.

    Raises:
        BackendCheckError: naming the step at fault.
        ValueError: ``max_tokens`` < 2.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    backend = factory()
    report = BackendCheckReport(backend=getattr(backend, "name", type(backend).__name__))

    # 1. a start failure is typed
    step = "start_failure"
    bad = failing_spec or spec.model_copy(update={"model": "/nonexistent/oserve-check-model",
                                                  "variant": f"{spec.variant}-bad-start"})
    try:
        started = await asyncio.wait_for(factory().start_replica(bad, f"{replica_id}-bad"), timeout=start_timeout_s)
    except EngineStartError as exc:
        _require(isinstance(exc.cause, str) and bool(exc.cause), step, "EngineStartError without a cause")
    except TimeoutError:
        raise BackendCheckError(step, f"start of a failing spec neither failed nor finished in {start_timeout_s} s"
                                ) from None
    except Exception as exc:
        raise BackendCheckError(step, f"expected EngineStartError, got {type(exc).__name__}: {exc}") from exc
    else:
        await started.stop()
        raise BackendCheckError(step, f"a replica of model {bad.model!r} started")
    report.steps.append(step)

    # 2. start
    step = "start"
    t0 = time.monotonic()
    try:
        replica = await asyncio.wait_for(backend.start_replica(spec, replica_id), timeout=start_timeout_s)
    except Exception as exc:
        raise BackendCheckError(step, f"start failed: {type(exc).__name__}: {exc}") from exc
    report.start_s = time.monotonic() - t0
    try:
        await _check_replica(replica, spec, report, prompt=prompt, max_tokens=max_tokens,
                             long_max_tokens=long_max_tokens, drain_timeout_s=drain_timeout_s,
                             step_timeout_s=step_timeout_s)
    finally:
        with contextlib.suppress(Exception):
            await replica.stop()

    if check_restart:
        step = "release"
        try:
            again = await asyncio.wait_for(backend.start_replica(spec, replica_id), timeout=start_timeout_s)
        except Exception as exc:
            raise BackendCheckError(step, f"a replica with the same id and spec did not start after stop(): "
                                          f"{type(exc).__name__}: {exc}") from exc
        try:
            chunks = [c async for c in again.generate("release-0", prompt, _greedy(2))]
            _require(bool(chunks) and chunks[-1].finished, step, "the restarted replica did not serve")
        finally:
            await again.stop()
        report.steps.append(step)
    return report


async def _check_replica(replica: Replica, spec: ReplicaSpec, report: BackendCheckReport, *, prompt: str,
                         max_tokens: int, long_max_tokens: int | None, drain_timeout_s: float,
                         step_timeout_s: float) -> None:
    step = "start"
    _require(replica.state == "ready", step, f"state {replica.state!r} after start, expected 'ready'")
    _require(await replica.health(), step, "health() is False right after start")
    report.steps.append(step)

    # 3. idle stats
    step = "idle_stats"
    s = await replica.stats()
    _require(s.running in (0, None) and s.waiting in (0, None), step,
             f"idle replica reports running={s.running}, waiting={s.waiting}")
    if s.running is None:
        report.notes.append("stats().running is unknown (None)")
    _require(s.max_model_len is None or 16 <= s.max_model_len <= spec.max_model_len, step,
             f"max_model_len {s.max_model_len} outside 16..{spec.max_model_len}")
    context = s.max_model_len or spec.max_model_len
    report.steps.append(step)

    # 4. count_tokens
    step = "count_tokens"
    _require(replica.count_tokens([1, 2, 3, 4, 5]) == 5, step, "a list of 5 token ids does not count 5")
    n = replica.count_tokens(prompt)
    _require(n > 0, step, f"prompt counts {n} tokens")
    _require(replica.count_tokens(prompt + prompt) > n, step, "a doubled prompt does not count more tokens")
    report.steps.append(step)

    # 5. generate (consumed whole)
    step = "generate"
    t0 = time.monotonic()
    whole = _Stream(replica, "check-generate", prompt, _greedy(max_tokens))
    await _join(whole, step_timeout_s, step)
    elapsed = time.monotonic() - t0
    _require(whole.error is None, step, f"request failed: {whole.error!r}")
    _require(bool(whole.chunks) and whole.chunks[-1].finished, step, "the stream ended without a finished chunk")
    _require(sum(1 for c in whole.chunks if c.finished) == 1, step, "more than one finished chunk")
    _require(whole.finish_reason == "length", step, f"finish_reason {whole.finish_reason!r}, expected 'length' "
             "(ignore_eos=True)")
    last = whole.chunks[-1]
    _require(last.completion_tokens == max_tokens, step,
             f"completion_tokens {last.completion_tokens}, expected max_tokens={max_tokens}")
    _require(whole.tokens in (0, max_tokens), step, f"{whole.tokens} token ids streamed for {max_tokens} tokens")
    if whole.tokens == 0:
        report.notes.append("the backend streams no token ids")
    _require(abs(last.prompt_tokens - n) <= 1, step,
             f"prompt_tokens {last.prompt_tokens} but count_tokens says {n} (a BOS token may differ by 1)")
    text = "".join(c.text for c in whole.chunks)
    _require(bool(text), step, "no text generated")
    report.decode_tokens_per_s = max_tokens / elapsed if elapsed > 0 else None
    again = _Stream(replica, "check-generate-again", prompt, _greedy(max_tokens))
    await _join(again, step_timeout_s, step)
    _require(again.error is None and "".join(c.text for c in again.chunks) == text, step,
             "greedy decoding of the same prompt gave a different text")
    report.steps.append(step)

    # 6. streaming: chunks arrive before the end
    step = "stream"
    _require(len(whole.chunks) >= 2, step, f"{max_tokens} tokens arrived in {len(whole.chunks)} chunk(s)")
    counts = [c.completion_tokens for c in whole.chunks]
    _require(counts == sorted(counts) and counts[0] < max_tokens, step,
             f"completion_tokens do not grow chunk by chunk: {counts}")
    report.steps.append(step)

    long_tokens = long_max_tokens or max(max_tokens, min(1000, context - replica.count_tokens(prompt) - 8))

    # 7. busy: stats and health with requests in flight
    step = "busy"
    busy = [_Stream(replica, f"check-busy-{i}", prompt, _greedy(long_tokens)) for i in range(2)]
    await _first_chunks(busy, step_timeout_s, step)
    _require(await replica.health(), step, "health() is False while serving")
    s = await replica.stats()
    if s.running is not None or s.waiting is not None:
        _require((s.running or 0) + (s.waiting or 0) >= 1, step,
                 f"2 requests in flight but running={s.running}, waiting={s.waiting}")
    report.steps.append(step)

    # 8. abort mid-stream
    step = "abort"
    for st in busy:
        await replica.abort(st.request_id)
    for st in busy:
        await _join(st, step_timeout_s, step)
        aborted = isinstance(st.error, RequestAbortedError) or st.finish_reason == "abort"
        _require(aborted, step, f"after abort(), stream ended with finish_reason={st.finish_reason!r}, "
                                f"error={st.error!r}")
        _require(st.tokens < long_tokens or st.tokens == 0, step, "the aborted request ran to its end")
    await replica.abort("check-no-such-request")  # unknown ids are ignored
    await _wait_for(lambda: _idle(replica), step_timeout_s, step, "aborted requests still hold engine slots")
    report.steps.append(step)

    # 9. client disconnect
    step = "disconnect"
    gone = _Stream(replica, "check-disconnect", prompt, _greedy(long_tokens))
    await _first_chunks([gone], step_timeout_s, step)
    await gone.close()
    await _wait_for(lambda: _idle(replica), step_timeout_s, step, "a closed stream still holds its engine slot")
    report.steps.append(step)

    # 10. a bad request is a client error, and the replica keeps serving
    step = "bad_request"
    too_long = [42] * (context + 8)  # token id 42 exists in every vocabulary oserve serves
    bad = _Stream(replica, "check-bad", too_long, _greedy(max_tokens))
    await _join(bad, step_timeout_s, step)
    _require(isinstance(bad.error, InvalidRequestError), step,
             f"a prompt of {len(too_long)} tokens (context {context}) gave {bad.error!r}, expected InvalidRequestError")
    ok = _Stream(replica, "check-after-bad", prompt, _greedy(2))
    await _join(ok, step_timeout_s, step)
    _require(ok.error is None and ok.finish_reason == "length", step,
             f"the replica did not serve after a bad request: {ok.error!r}")
    report.steps.append(step)

    # 11. drain with streams in flight
    step = "drain"
    streams = [_Stream(replica, f"check-drain-{i}", prompt, _greedy(long_tokens)) for i in range(2)]
    await _first_chunks(streams, step_timeout_s, step)
    try:
        n_aborted = await asyncio.wait_for(replica.drain(drain_timeout_s), timeout=step_timeout_s)
    except TimeoutError:
        raise BackendCheckError(step, f"drain({drain_timeout_s}) did not return in {step_timeout_s} s") from None
    for st in streams:
        await _join(st, step_timeout_s, step)
    raised = [st for st in streams if isinstance(st.error, RequestAbortedError)]
    other = [st for st in streams if st.error is not None and not isinstance(st.error, RequestAbortedError)]
    if other:
        raise BackendCheckError(step, f"a drained stream raised {other[0].error!r}, expected RequestAbortedError")
    _require(n_aborted == len(raised), step, f"drain() returned {n_aborted} but {len(raised)} streams were aborted")
    _require(n_aborted >= 1, step, f"no stream of {long_tokens} tokens was still running {drain_timeout_s} s "
             "after its first token; pass a larger long_max_tokens")
    for st in streams:
        if st not in raised:
            _require(st.finish_reason == "length", step, "a stream not aborted by drain did not finish")
    _require(replica.state in ("draining", "stopped"), step, f"state {replica.state!r} after drain")
    refused = _Stream(replica, "check-after-drain", prompt, _greedy(2))
    await _join(refused, step_timeout_s, step)
    _require(isinstance(refused.error, ReplicaError), step,
             f"a drained replica took a new request (error={refused.error!r})")
    report.steps.append(step)

    # 12. stop
    step = "stop"
    await asyncio.wait_for(replica.stop(), timeout=step_timeout_s)
    _require(replica.state == "stopped", step, f"state {replica.state!r} after stop()")
    _require(not await replica.health(), step, "health() is True after stop()")
    await asyncio.wait_for(replica.stop(), timeout=step_timeout_s)
    after = _Stream(replica, "check-after-stop", prompt, _greedy(2))
    await _join(after, step_timeout_s, step)
    _require(isinstance(after.error, ReplicaError), step,
             f"a stopped replica took a new request (error={after.error!r})")
    report.steps.append(step)


async def _join(stream: _Stream, timeout_s: float, step: str) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(stream.task), timeout=timeout_s)
    except TimeoutError:
        await stream.close()
        raise BackendCheckError(step, f"request {stream.request_id} did not end in {timeout_s} s") from None


async def _first_chunks(streams: list[_Stream], timeout_s: float, step: str) -> None:
    for st in streams:
        try:
            await asyncio.wait_for(st.first.wait(), timeout=timeout_s)
        except TimeoutError:
            raise BackendCheckError(step, f"request {st.request_id}: no first token in {timeout_s} s") from None
        if st.error is not None or not st.chunks:
            raise BackendCheckError(step, f"request {st.request_id} failed before its first token: {st.error!r}")


def check_backend(factory: Callable[[], Backend], spec: ReplicaSpec, **kwargs: object) -> BackendCheckReport:
    """Run the conformance suite on a fresh event loop (see :func:`acheck_backend` for the arguments).

    Raises:
        BackendCheckError: naming the step at fault.
        RuntimeError: called from a running event loop (use ``await acheck_backend(...)`` there).
    """
    return asyncio.run(acheck_backend(factory, spec, **kwargs))  # type: ignore[arg-type]
