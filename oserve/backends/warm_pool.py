"""A pool of running engines that replicas are handed out from (warm starts) and returned to.

:class:`WarmPoolBackend` wraps another backend. :meth:`WarmPoolBackend.prestart` starts engines
ahead of time (e.g. an fp32 and an int8 engine on each CPU core); afterwards
:meth:`~WarmPoolBackend.start_replica` of a spec equal to a pooled engine's spec hands that engine out
at once, wrapped in a :class:`PooledReplica` with the requested replica id, and ``stop()`` on the
replica returns the engine to the pool instead of shutting it down. A spec with no idle engine in the
pool is started cold on the wrapped backend (and joins the pool when stopped).

Uses: the demo (``oserve.cli.demo``) runs four deployments on the same engines, so that no static
run is charged engine starts; in its oserve run the replicas of the variant not routed to are
parked (``orchestrator.parking``; :meth:`PooledReplica.park` / :meth:`PooledReplica.wake` delegate
to the pooled engine), so a precision switch wakes the other precision's engine on the same core
(an idle vLLM-CPU engine holds memory, not CPU: its engine core blocks on its input queue).
:meth:`~WarmPoolBackend.shutdown` stops every engine.

The pool is bound to the event loop its engines were started on: use it from that loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.errors import ReplicaError, RequestAbortedError

__all__ = ["WarmPoolBackend", "PooledReplica"]

log = logging.getLogger(__name__)


def _key(spec: ReplicaSpec) -> str:
    """The engine a spec starts: its engine arguments (the router-side in-flight limit is not one)."""
    return spec.model_dump_json(exclude={"max_ongoing_requests"})


class PooledReplica(Replica):
    """A replica handle on a pooled engine; ``stop()`` gives the engine back to the pool.

    It keeps its own state and in-flight set, so a drained or stopped handle never affects the next
    handle of the same engine. :meth:`park` / :meth:`wake` delegate to the engine, so a pooled replica
    can be a parked replica of ``orchestrator.parking`` (a precision switch is then a wake, not a start).
    """

    def __init__(self, pool: WarmPoolBackend, engine: Replica, replica_id: str, spec: ReplicaSpec) -> None:
        self._pool = pool
        self._engine = engine
        self.replica_id = replica_id
        self.spec = spec
        self._state: ReplicaState = "ready"
        self._in_flight: set[str] = set()
        self._aborted: dict[str, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.max_model_len = getattr(engine, "max_model_len", spec.max_model_len)

    @property
    def engine(self) -> Replica:
        """The pooled engine's own replica handle."""
        return self._engine

    @property
    def state(self) -> ReplicaState:
        if self._state in ("ready", "draining", "parked") and self._engine.state == "failed":
            return "failed"
        return self._state

    def validate(self, params: SamplingParams) -> None:
        self._engine.validate(params)

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not taking requests",
                               replica_id=self.replica_id, code="replica_not_ready")
        self._in_flight.add(request_id)
        self._idle.clear()
        try:
            async for chunk in self._engine.generate(request_id, prompt, params):
                if chunk.finish_reason == "abort" and request_id in self._aborted:
                    break
                if chunk.finished:
                    self._pool.count_output(self.spec.variant, chunk.completion_tokens)
                yield chunk
            if request_id in self._aborted:
                raise RequestAbortedError(f"request {request_id} aborted: {self._aborted[request_id]}",
                                          replica_id=self.replica_id, code="aborted")
        finally:
            self._in_flight.discard(request_id)
            self._aborted.pop(request_id, None)
            if not self._in_flight:
                self._idle.set()

    async def abort(self, request_id: str) -> None:
        if request_id in self._in_flight:
            await self._engine.abort(request_id)

    async def stats(self) -> ReplicaStats:
        return await self._engine.stats()

    async def health(self) -> bool:
        return self._state not in ("stopped", "failed") and await self._engine.health()

    async def _abort_all(self, why: str) -> int:
        left = list(self._in_flight)
        for rid in left:
            self._aborted[rid] = why
            await self._engine.abort(rid)
        if left:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=5.0)
            except TimeoutError:
                log.warning("replica %s: %d aborted requests did not finish", self.replica_id, len(self._in_flight))
        return len(left)

    async def drain(self, timeout_s: float) -> int:
        """Stop taking requests; wait up to ``timeout_s`` for the in-flight ones and abort those still
        running. Returns the requests aborted.

        Requests beyond a replica's batch limit wait in the router-side queue
        (:mod:`oserve.server.router`), not in the engine, so a draining replica holds only requests
        it is already running; the queued ones go to the plan's new replicas."""
        if self._state == "ready":
            self._state = "draining"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
            return 0
        except TimeoutError:
            return await self._abort_all(f"replica {self.replica_id} drain timeout ({timeout_s:.1f} s)")

    async def park(self) -> None:
        """Keep the pooled engine started but route nothing to it (state ``parked``): delegates to the
        engine's :meth:`~oserve.backends.base.Replica.park` (vLLM-CPU: the engine just idles).

        Raises:
            ReplicaError: this handle is stopped or failed, still has requests in flight, or the
                engine cannot park.
        """
        if self.state in ("stopped", "failed", "starting"):
            raise ReplicaError(f"replica {self.replica_id} is {self.state}, cannot park",
                               replica_id=self.replica_id, code="replica_not_ready")
        if self._in_flight:
            raise ReplicaError(f"replica {self.replica_id} has {len(self._in_flight)} requests in flight; drain it "
                               "before parking", replica_id=self.replica_id, code="replica_busy")
        if self._engine.state != "parked":
            await self._engine.park()
        self._state = "parked"

    async def wake(self) -> None:
        """Take requests again after :meth:`park` (delegates to the engine's ``wake``).

        Raises:
            ReplicaError: this handle is not parked, or the engine failed to wake.
        """
        if self._state != "parked":
            raise ReplicaError(f"replica {self.replica_id} is {self.state}, not parked",
                               replica_id=self.replica_id, code="replica_not_parked")
        if self._engine.state == "parked":
            await self._engine.wake()
        self._state = "ready"

    async def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        await self._abort_all(f"replica {self.replica_id} stopped")
        if self._engine.state == "parked":  # the pool holds ready engines: the next handle takes requests
            try:
                await self._engine.wake()
            except ReplicaError as e:
                log.warning("replica %s: pooled engine did not wake on stop (%s); dropped", self.replica_id, e)
        self._pool.give_back(self._engine)

    def count_tokens(self, prompt: str | list[int]) -> int:
        return self._engine.count_tokens(prompt)


class WarmPoolBackend(Backend):
    """Hands out running engines of a wrapped backend (see the module docstring).

    Args:
        inner: the backend that starts engines (e.g. ``VLLMBackend(allow_core_sharing=True)``, so
            that engines of two precisions can be pinned to the same core).

    Attributes:
        warm_starts: replicas handed out from the pool.
        cold_starts: replicas the wrapped backend had to start.
        handouts: ``(monotonic time s, replica id, spec variant, warm)`` per start, in order.
        output_tokens: output tokens of finished requests per variant (what each variant served).
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = f"pool({inner.name})"
        self.needs_checkpoint = inner.needs_checkpoint  # type: ignore[misc]
        self._idle: dict[str, list[Replica]] = {}
        self._all: list[Replica] = []
        self.warm_starts = 0
        self.cold_starts = 0
        self.handouts: list[tuple[float, str, str, bool]] = []
        self.output_tokens: dict[str, int] = {}

    async def prestart(self, specs: list[ReplicaSpec], *, concurrency: int = 2) -> list[float]:
        """Start one engine per spec into the pool (``concurrency`` at a time).

        Returns:
            Each engine's start time, seconds, in the order of ``specs``.

        Raises:
            EngineStartError: an engine failed to start (the ones started stay in the pool).
        """
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(i: int, spec: ReplicaSpec) -> float:
            async with sem:
                t0 = time.monotonic()
                engine = await self.inner.start_replica(spec, f"pool-{i}-{spec.variant}")
                self._all.append(engine)
                self._idle.setdefault(_key(spec), []).append(engine)
                return time.monotonic() - t0

        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(specs))))

    def idle_count(self) -> int:
        """Engines in the pool not handed out."""
        return sum(len(v) for v in self._idle.values())

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        """An idle pooled engine of exactly ``spec`` (warm, no wait), else a cold start."""
        idle = self._idle.get(_key(spec))
        alive = [e for e in (idle or []) if e.state == "ready"]
        if idle is not None:
            idle[:] = alive
        if alive:
            engine = idle.pop(0)  # type: ignore[union-attr]
            self.warm_starts += 1
            warm = True
        else:
            engine = await self.inner.start_replica(spec, replica_id)
            self._all.append(engine)
            self.cold_starts += 1
            warm = False
        self.handouts.append((time.monotonic(), replica_id, spec.variant, warm))
        log.info("%s start of %s (%s)", "warm" if warm else "cold", replica_id, spec.variant)
        return PooledReplica(self, engine, replica_id, spec)

    def count_output(self, variant: str, tokens: int) -> None:
        """Add ``tokens`` output tokens served by ``variant`` (called by the replicas)."""
        self.output_tokens[variant] = self.output_tokens.get(variant, 0) + int(tokens)

    def reset_counters(self) -> None:
        """Zero the start and output-token counters (e.g. between demo runs)."""
        self.warm_starts = self.cold_starts = 0
        self.handouts = []
        self.output_tokens = {}

    def give_back(self, engine: Replica) -> None:
        """Return an engine to the pool (a failed engine is dropped)."""
        if engine.state == "ready":
            self._idle.setdefault(_key(engine.spec), []).append(engine)

    async def shutdown(self) -> None:
        """Stop every engine the pool started."""
        await asyncio.gather(*(e.stop() for e in self._all), return_exceptions=True)
        self._all.clear()
        self._idle.clear()
