"""The edge that feeds :class:`~oserve.control.health.ProgressTracker`: replicas whose requests are observed.

:class:`TrackedBackend` wraps a backend; every replica it starts is a :class:`TrackedReplica`, a
transparent proxy whose :meth:`~TrackedReplica.generate` reports each request's start, tokens and
end to the tracker, whoever calls it (the OpenAI endpoint, the orchestrator's retrying path, the
switcher's warm-up requests). When a replica-side failure gives the tracker a verdict, the
``on_verdict`` callback (the orchestrator's health check of that replica) is scheduled at once,
without delaying the failing request's own retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.clock import Clock
from oserve.control.health import ProgressTracker
from oserve.errors import ReplicaError, RequestAbortedError

__all__ = ["TrackedBackend", "TrackedReplica"]

log = logging.getLogger(__name__)


class TrackedReplica(Replica):
    """A replica whose requests feed a progress tracker; everything else is the wrapped replica's.

    Args:
        inner: the replica.
        tracker: the progress tracker.
        clock: time source for the tracker (seconds).
        on_verdict: called with the replica id when a failure gives the tracker a verdict.
    """

    def __init__(self, inner: Replica, tracker: ProgressTracker, clock: Clock,
                 on_verdict: Callable[[str], Awaitable[object] | None] | None = None) -> None:
        self.inner = inner
        self.replica_id = inner.replica_id
        self.spec: ReplicaSpec = inner.spec
        self._tracker = tracker
        self._clock = clock
        self._on_verdict = on_verdict
        self._tasks: set[asyncio.Task[Any]] = set()

    def __getattr__(self, name: str) -> Any:  # backend-specific extras (tokenizer, render_chat, kill...)
        return getattr(self.inner, name)

    @property
    def state(self) -> ReplicaState:
        return self.inner.state

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams
                       ) -> AsyncIterator[TokenChunk]:
        rid, tracker, clock = self.replica_id, self._tracker, self._clock
        tracker.started(rid, request_id, clock.now())
        failed: ReplicaError | None = None
        try:
            async for chunk in self.inner.generate(request_id, prompt, params):
                if chunk.token_ids:
                    tracker.advanced(rid, request_id, clock.now())
                yield chunk
        except ReplicaError as exc:
            if not isinstance(exc, RequestAbortedError):  # an abort is oserve's own doing, not a fault
                failed = exc
            raise
        finally:
            tracker.finished(rid, request_id, clock.now(), failed=failed is not None,
                             reason="" if failed is None else str(failed)[:200])
            if failed is not None and tracker.verdict(rid, clock.now()) is not None:
                self._notify()

    def _notify(self) -> None:
        if self._on_verdict is None:
            return
        result = self._on_verdict(self.replica_id)
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def stats(self) -> ReplicaStats:
        return await self.inner.stats()

    async def health(self) -> bool:
        return await self.inner.health()

    async def drain(self, timeout_s: float) -> int:
        return await self.inner.drain(timeout_s)

    async def stop(self) -> None:
        await self.inner.stop()

    async def park(self) -> None:
        await self.inner.park()

    async def wake(self) -> None:
        await self.inner.wake()

    def count_tokens(self, prompt: str | list[int]) -> int:
        return self.inner.count_tokens(prompt)


class TrackedBackend(Backend):
    """A backend whose replicas are :class:`TrackedReplica` proxies (see the module docstring).

    Args:
        inner: the backend that starts the engines.
        tracker: the progress tracker.
        clock: time source for the tracker.
        on_verdict: called with a replica id when a failure gives the tracker a verdict (may be
            set after construction, before the first replica starts).
    """

    def __init__(self, inner: Backend, tracker: ProgressTracker, clock: Clock,
                 on_verdict: Callable[[str], Awaitable[object] | None] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._tracker = tracker
        self._clock = clock
        self.on_verdict = on_verdict

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        replica = await self.inner.start_replica(spec, replica_id)
        return TrackedReplica(replica, self._tracker, self._clock, self.on_verdict)
