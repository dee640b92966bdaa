"""A fake engine for tests: :class:`FakeBackend` starts :class:`FakeReplica` objects.

Named *Fake* on purpose: it generates no real text. It implements the
:class:`oserve.backends.base.Backend` / :class:`~oserve.backends.base.Replica` contract exactly,
so the endpoint, the router, the orchestrator and the switcher can be tested without engines:

- deterministic output: the ``i``-th output token of a prompt is the word ``" t<k>"`` with
  ``k = (crc32(prompt) + i) % 1000`` (token id ``k``), each after ``token_delay_s`` seconds
  (the first after ``prefill_delay_s + token_delay_s``);
- a configurable *effective* context length (``effective_max_model_len``, reported by
  :meth:`FakeReplica.stats`), smaller than or equal to the spec's ``max_model_len``;
- whitespace- or character-level :meth:`FakeReplica.count_tokens`;
- ``max_num_seqs`` running slots; requests beyond wait (``stats().waiting``);
- :meth:`FakeReplica.abort` frees the slot at once (``stats().running`` drops) and ends the
  request's stream with ``finish_reason="abort"``;
- :meth:`FakeReplica.drain` stops taking requests, waits up to the timeout and aborts the rest,
  whose streams raise :class:`~oserve.errors.RequestAbortedError`;
- failure injection: a variant whose start fails (:class:`~oserve.errors.EngineStartError`), a
  replica that dies after emitting N tokens in total, or :meth:`FakeReplica.kill` at any time
  (in-flight streams raise :class:`~oserve.errors.ReplicaError`, ``health()`` turns False).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from oserve.backends.base import (
    Backend,
    Replica,
    ReplicaSpec,
    ReplicaState,
    ReplicaStats,
    SamplingParams,
    TokenChunk,
)
from oserve.errors import ConfigError, EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError

__all__ = ["FakeReplicaOptions", "FakeReplica", "FakeBackend"]


@dataclass(frozen=True)
class FakeReplicaOptions:
    """Behaviour of a :class:`FakeReplica`.

    Attributes:
        token_delay_s: seconds between two output tokens (and before the first one).
        prefill_delay_s: extra seconds before the first output token.
        effective_max_model_len: context length (prompt + output tokens) the fake engine "fitted";
            None uses ``spec.max_model_len``. Capped at ``spec.max_model_len``.
        tokenization: ``"whitespace"`` (a token per whitespace-separated word) or ``"char"``
            (a token per character).
        eos_after_tokens: the fake model emits end-of-sequence after this many output tokens
            (``finish_reason="stop"``) unless the request sets ``ignore_eos``; None: never.
        die_after_tokens: the replica dies (state ``"failed"``) once it has emitted this many
            output tokens over all requests; None: never.
        wake_delay_s: seconds :meth:`FakeReplica.wake` takes (a parked replica's wake-up).
        vocab_size: token ids the fake model knows (its output ids are ``k % 1000``);
            :meth:`FakeReplica.validate` refuses a ``logit_bias`` id outside ``[0, vocab_size)``,
            as vLLM does for its model's vocabulary.
    """

    token_delay_s: float = 0.0
    prefill_delay_s: float = 0.0
    effective_max_model_len: int | None = None
    tokenization: Literal["whitespace", "char"] = "whitespace"
    eos_after_tokens: int | None = None
    die_after_tokens: int | None = None
    vocab_size: int = 1000
    wake_delay_s: float = 0.0


@dataclass
class _FakeRequest:
    request_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = False
    aborted: bool = False
    error: ReplicaError | None = None
    tokens: int = 0


class FakeReplica(Replica):
    """A fake engine replica (see the module docstring for its behaviour).

    Args:
        spec: the replica's spec (``variant``, ``max_model_len``, ``max_num_seqs`` are used).
        replica_id: unique id.
        options: behaviour knobs.

    Attributes:
        tokens_emitted: output tokens emitted over all requests.
        requests_started: requests accepted by :meth:`generate`.
        aborted_ids: ids of requests aborted (by :meth:`abort`, drain, stop or death), in order.
    """

    def __init__(self, spec: ReplicaSpec, replica_id: str, options: FakeReplicaOptions | None = None) -> None:
        self.spec = spec
        self.replica_id = replica_id
        self.options = options or FakeReplicaOptions()
        limit = self.options.effective_max_model_len
        self._max_model_len = spec.max_model_len if limit is None else min(limit, spec.max_model_len)
        self._state: ReplicaState = "ready"
        self._requests: dict[str, _FakeRequest] = {}
        self._queue: list[_FakeRequest] = []
        self.tokens_emitted = 0
        self.requests_started = 0
        self.aborted_ids: list[str] = []
        self.parks = 0
        self.wakes = 0

    # -- Replica contract -------------------------------------------------------------------
    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def max_model_len(self) -> int:
        """Effective context length in tokens (prompt + output)."""
        return self._max_model_len

    def count_tokens(self, prompt: str | list[int]) -> int:
        if isinstance(prompt, list):
            return len(prompt)
        if self.options.tokenization == "char":
            return len(prompt)
        return len(prompt.split())

    def validate(self, params: SamplingParams) -> None:
        """Refuse ``logit_bias`` token ids outside the fake vocabulary (400 ``param="logit_bias"``)."""
        bad = sorted(t for t in params.logit_bias or {} if not 0 <= t < self.options.vocab_size)
        if bad:
            raise InvalidRequestError(
                f"token id(s) {bad} in logit_bias are outside the vocabulary of {self.options.vocab_size} tokens",
                param="logit_bias", code="invalid_value")

    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        return self._generate(request_id, prompt, params)

    async def _generate(self, request_id: str, prompt: str | list[int], params: SamplingParams
                        ) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise ReplicaError(
                f"replica {self.replica_id} is {self._state}, not accepting requests",
                replica_id=self.replica_id, code="replica_not_ready",
            )
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already running", param="request_id")
        prompt_tokens = self.count_tokens(prompt)
        if prompt_tokens + params.max_tokens > self._max_model_len:
            raise InvalidRequestError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({params.max_tokens}) exceeds this replica's "
                f"context length of {self._max_model_len} tokens",
                param="max_tokens", code="context_length_exceeded",
            )
        req = _FakeRequest(request_id)
        self._requests[request_id] = req
        self.requests_started += 1
        self._queue.append(req)
        self._schedule()
        try:
            while not req.running:
                self._raise_if_ended(req)
                if req.aborted:
                    yield TokenChunk(text="", token_ids=(), finished=True, finish_reason="abort",
                                     prompt_tokens=prompt_tokens, completion_tokens=0)
                    return
                await req.wake.wait()
                req.wake.clear()
            seed = zlib.crc32(str(prompt).encode())
            first = True
            for i in range(params.max_tokens):
                await asyncio.sleep(self.options.token_delay_s + (self.options.prefill_delay_s if first else 0.0))
                first = False
                if req.aborted or req.error is not None:
                    break
                k = (seed + i) % 1000
                req.tokens += 1
                self.tokens_emitted += 1
                eos = (self.options.eos_after_tokens is not None and not params.ignore_eos
                       and req.tokens >= self.options.eos_after_tokens)
                last = eos or req.tokens >= params.max_tokens
                self._maybe_die()
                if req.error is not None:
                    break
                if last:
                    self._finish(req)
                yield TokenChunk(
                    text=f" t{k}", token_ids=(k,), finished=last,
                    finish_reason=("stop" if eos else "length") if last else None,
                    prompt_tokens=prompt_tokens, completion_tokens=req.tokens,
                )
                if last:
                    return
            self._raise_if_ended(req)
            if req.aborted:
                yield TokenChunk(text="", token_ids=(), finished=True, finish_reason="abort",
                                 prompt_tokens=prompt_tokens, completion_tokens=req.tokens)
        finally:
            self._finish(req)

    async def abort(self, request_id: str) -> None:
        req = self._requests.get(request_id)
        if req is None:
            return
        req.aborted = True
        self.aborted_ids.append(request_id)
        self._finish(req)

    async def stats(self) -> ReplicaStats:
        if self._state in ("stopped", "failed"):
            return ReplicaStats(max_model_len=self._max_model_len)
        running = sum(1 for r in self._requests.values() if r.running)
        return ReplicaStats(
            running=running,
            waiting=len(self._queue),
            kv_cache_usage=running / self.spec.max_num_seqs,
            max_model_len=self._max_model_len,
        )

    async def health(self) -> bool:
        return self._state in ("ready", "draining", "parked")

    async def drain(self, timeout_s: float) -> int:
        if self._state == "ready":
            self._state = "draining"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while self._requests and loop.time() < deadline:
            await asyncio.sleep(min(0.005, max(0.0, deadline - loop.time())))
        return self._fail_all(lambda: RequestAbortedError(
            f"request aborted: replica {self.replica_id} drained after {timeout_s} s", replica_id=self.replica_id,
            code="drain_timeout"))

    async def stop(self) -> None:
        if self._state == "stopped":
            return
        if self._state != "failed":
            self._state = "stopped"
        self._fail_all(lambda: RequestAbortedError(
            f"request aborted: replica {self.replica_id} stopped", replica_id=self.replica_id, code="replica_stopped"))
        self._state = "stopped"

    async def park(self) -> None:
        """Park a drained (or idle ready) replica: it keeps running but takes no request.

        Raises:
            ReplicaError: the replica is stopped or failed (code ``replica_not_ready``).
        """
        if self._state not in ("ready", "draining", "parked"):
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, cannot park",
                               replica_id=self.replica_id, code="replica_not_ready")
        self._state = "parked"
        self.parks += 1

    async def wake(self) -> None:
        """Wake a parked replica after ``options.wake_delay_s``.

        Raises:
            ReplicaError: the replica is not parked (code ``replica_not_ready``).
        """
        if self._state != "parked":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not parked",
                               replica_id=self.replica_id, code="replica_not_ready")
        await asyncio.sleep(self.options.wake_delay_s)
        if self._state == "parked":
            self._state = "ready"
            self.wakes += 1

    # -- failure injection ------------------------------------------------------------------
    def kill(self) -> int:
        """Make the replica die now: state ``"failed"``; in-flight streams raise ReplicaError.

        Returns:
            The number of in-flight requests that failed.
        """
        self._state = "failed"
        return self._fail_all(lambda: ReplicaError(
            f"replica {self.replica_id} died", replica_id=self.replica_id, code="replica_died"))

    # -- internals --------------------------------------------------------------------------
    def _maybe_die(self) -> None:
        limit = self.options.die_after_tokens
        if limit is not None and self.tokens_emitted >= limit and self._state != "failed":
            self.kill()

    def _raise_if_ended(self, req: _FakeRequest) -> None:
        if req.error is not None:
            raise req.error

    def _fail_all(self, make_error: Callable[[], ReplicaError]) -> int:
        reqs = list(self._requests.values())
        for req in reqs:
            req.error = make_error()
            self.aborted_ids.append(req.request_id)
            self._finish(req)
            req.wake.set()
        return len(reqs)

    def _finish(self, req: _FakeRequest) -> None:
        if self._requests.get(req.request_id) is req:
            del self._requests[req.request_id]
        if req in self._queue:
            self._queue.remove(req)
        req.running = False
        req.wake.set()
        self._schedule()

    def _schedule(self) -> None:
        running = sum(1 for r in self._requests.values() if r.running)
        while self._queue and running < self.spec.max_num_seqs:
            nxt = self._queue.pop(0)
            nxt.running = True
            nxt.wake.set()
            running += 1


def _as_options(options: FakeReplicaOptions | Mapping[str, Any] | None) -> FakeReplicaOptions:
    if options is None:
        return FakeReplicaOptions()
    if isinstance(options, FakeReplicaOptions):
        return options
    try:
        return FakeReplicaOptions(**dict(options))
    except TypeError as exc:
        raise ConfigError(f"invalid fake replica options {dict(options)!r}: {exc}", field="backend.params.options",
                          allowed=", ".join(FakeReplicaOptions.__dataclass_fields__)) from exc


class FakeBackend(Backend):
    """Starts :class:`FakeReplica` objects.

    Args:
        options: default behaviour of the replicas, or a mapping of :class:`FakeReplicaOptions` fields
            (as given in a YAML config: ``backend: {kind: fake, params: {options: {token_delay_s: 0.01}}}``).
        variant_options: per-variant behaviour, overriding ``options`` (options or mappings).
        fail_start_variants: variants whose start raises :class:`EngineStartError`.
        fail_start_cause: the ``cause`` of that error (``"out_of_memory"``, ``"bad_model_path"``, ...).
        start_delay_s: seconds :meth:`start_replica` takes.

    Raises:
        ConfigError: an options mapping with an unknown field.

    Attributes:
        replicas: every replica started, by id (stopped ones included).
        starts: number of :meth:`start_replica` calls (failed ones included).
    """

    name = "fake"
    needs_checkpoint = False

    def __init__(
        self,
        options: FakeReplicaOptions | Mapping[str, Any] | None = None,
        *,
        variant_options: Mapping[str, FakeReplicaOptions | Mapping[str, Any]] | None = None,
        fail_start_variants: Iterable[str] = (),
        fail_start_cause: str = "engine_error",
        start_delay_s: float = 0.0,
    ) -> None:
        self.options = _as_options(options)
        self.variant_options = {v: _as_options(o) for v, o in (variant_options or {}).items()}
        self.fail_start_variants = set(fail_start_variants)
        self.fail_start_cause = fail_start_cause
        self.start_delay_s = start_delay_s
        self.replicas: dict[str, FakeReplica] = {}
        self.starts = 0

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> FakeReplica:
        """Start a fake replica after ``start_delay_s``.

        Raises:
            EngineStartError: the variant is in ``fail_start_variants`` or the id is taken
                (cause ``"resource_busy"``).
        """
        self.starts += 1
        await asyncio.sleep(self.start_delay_s)
        if spec.variant in self.fail_start_variants:
            raise EngineStartError(f"fake engine for variant {spec.variant!r} failed to start",
                                   cause=self.fail_start_cause, replica_id=replica_id)
        old = self.replicas.get(replica_id)
        if old is not None and old.state not in ("stopped", "failed"):
            raise EngineStartError(f"replica id {replica_id!r} is already running", cause="resource_busy",
                                   replica_id=replica_id)
        replica = FakeReplica(spec, replica_id, self.variant_options.get(spec.variant, self.options))
        self.replicas[replica_id] = replica
        return replica
