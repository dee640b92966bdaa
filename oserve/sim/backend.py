"""A simulated :class:`~oserve.backends.base.Backend` whose replicas are the simulator's replica model.

The simulator drives the real :class:`~oserve.control.switcher.Switcher` (the same object and rules
as live) against :class:`SimBackend`; engine starts, drains and stops take simulated time:

* ``start_replica``: the variant's ``start_time_s`` plus ``warmup_s`` (engine start, weight load and
  warm-up; the switcher's own warm-up requests are off in the simulator), then the replica is ready.
  In ``instant`` mode (the initial deployment) it is ready at once.
* ``drain(timeout_s)``: the replica takes no new request at once; its in-flight requests finish up
  to ``timeout_s`` and the rest are aborted (the engine's ``on_abort``); returns how many.
* ``stop()``: the engine stops in ``stop_time_s``; then its memory is free.
* ``park()``: a drained replica keeps its memory and takes no request; ``wake()`` makes it ready
  again after the variant's ``wake_time_s`` (:class:`~oserve.sim.replica.ReplicaParams`).

The switcher's router port is :class:`SimRouterPort`: it tells the engine which replicas serve
and the routing weights in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.clock import Clock
from oserve.errors import ConfigError, ReplicaError
from oserve.sim.events import EventKind, EventQueue, Priority
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.types import ReplicaPlacement

__all__ = ["SimBackend", "SimReplicaHandle", "SimRouterPort"]

_STATE: dict[str, ReplicaState] = {"pending": "starting", "starting": "starting", "ready": "ready",
                                   "draining": "draining", "stopping": "draining", "stopped": "stopped",
                                   "parked": "parked"}


class SimReplicaHandle(Replica):
    """The :class:`~oserve.backends.base.Replica` handle of one :class:`SimReplica`.

    Requests reach a simulated replica through the simulator's event loop, not through
    :meth:`generate`.

    Attributes:
        sim: the replica model.
    """

    def __init__(self, backend: SimBackend, sim: SimReplica, spec: ReplicaSpec) -> None:
        self.replica_id = sim.replica_id
        self.spec = spec
        self.sim = sim
        self._backend = backend
        self._waiter: asyncio.Future[int] | None = None

    @property
    def state(self) -> ReplicaState:
        return _STATE[self.sim.state]

    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        """Not available: the simulator routes requests itself. Raises NotImplementedError."""
        raise NotImplementedError("requests reach a simulated replica through oserve.sim.engine; "
                                  "run the switcher with warmup_requests=0 in the simulator")

    async def abort(self, request_id: str) -> None:
        """Requests have no id on this interface in the simulator: nothing to abort (ignored)."""

    async def stats(self) -> ReplicaStats:
        r = self.sim
        total = r.params.total_blocks
        return ReplicaStats(running=len(r.running), waiting=len(r.waiting),
                            kv_cache_usage=(total - r.free_blocks) / total if total else None,
                            max_model_len=r.max_tokens)

    async def health(self) -> bool:
        return self.sim.state in ("starting", "ready", "draining")

    async def drain(self, timeout_s: float) -> int:
        """Take no new request; wait for the in-flight ones up to ``timeout_s`` simulated seconds.

        Returns:
            Requests aborted at the timeout.
        """
        r = self.sim
        if r.state not in ("ready", "draining"):
            return 0
        now = self._backend.clock.now()
        r.state = "draining"
        r.drain_start_s = now
        self._backend.changed()
        self._backend.on_drain(r, now)
        self._waiter = asyncio.get_running_loop().create_future()
        self._backend.events.push(now + max(0.0, timeout_s), Priority.STOP, EventKind.DRAIN_TIMEOUT, self)
        self.idle()
        return await self._waiter

    def idle(self) -> None:
        """The engine saw this replica without work: a drain in progress ends (nothing aborted)."""
        r = self.sim
        if r.state == "draining" and r.outstanding == 0 and not r.busy:
            self._resolve(0)

    def drain_timeout(self) -> None:
        """The drain limit passed: abort what is left (the engine's ``on_abort``)."""
        if self.sim.state == "draining" and self._waiter is not None and not self._waiter.done():
            self._resolve(self._backend.on_abort(self.sim, self._backend.clock.now()))

    def _resolve(self, value: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(value)
            self._backend.woke()

    async def stop(self) -> None:
        """Stop the engine: ``stop_time_s`` simulated seconds, then its memory is free. Idempotent."""
        r = self.sim
        if r.state in ("stopping", "stopped"):
            return
        r.state = "stopping"
        self._backend.changed()
        self._waiter = asyncio.get_running_loop().create_future()
        self._backend.events.push(self._backend.clock.now() + self._backend.stop_time_s, Priority.STOP,
                                  EventKind.STOPPED, self)
        await self._waiter

    async def park(self) -> None:
        """Keep the drained replica (and its memory) but take no request. Raises ReplicaError when it
        is not ready, draining or parked."""
        r = self.sim
        if r.state not in ("ready", "draining", "parked") or r.outstanding:
            raise ReplicaError(f"simulated replica {self.replica_id} is {r.state} with {r.outstanding} requests, "
                               "cannot park", replica_id=self.replica_id, code="replica_not_ready")
        r.state = "parked"
        self._backend.changed()

    async def wake(self) -> None:
        """Serve again after ``wake_time_s`` simulated seconds. Raises ReplicaError when not parked."""
        r = self.sim
        if r.state != "parked":
            raise ReplicaError(f"simulated replica {self.replica_id} is {r.state}, not parked",
                               replica_id=self.replica_id, code="replica_not_ready")
        r.state = "starting"
        self._waiter = asyncio.get_running_loop().create_future()
        self._backend.events.push(self._backend.clock.now() + r.params.wake_time_s, Priority.READY,
                                  EventKind.READY, self)
        self._backend.changed()
        await self._waiter

    def stopped(self) -> None:
        """The engine is gone: free its memory and wake :meth:`stop`."""
        if self.sim.state != "stopping":
            return
        self.sim.state = "stopped"
        self._backend.free(self.sim)
        self._resolve(0)

    def ready(self) -> None:
        """The engine is up and warmed: wake ``start_replica``."""
        if self.sim.state == "starting":
            self.sim.state = "ready"
            self.sim.ready_s = self._backend.clock.now()
            self._backend.changed()
            self._resolve(0)

    def count_tokens(self, prompt: str | list[int]) -> int:
        """Token ids count as given; text counts one token per whitespace-separated word."""
        return len(prompt) if isinstance(prompt, list) else len(prompt.split())


class SimBackend(Backend):
    """Starts simulated replicas on simulated time (see the module docstring).

    Args:
        params: :class:`ReplicaParams` per variant name.
        events: the simulator's event queue.
        clock: the simulator's clock.
        on_drain: ``on_drain(replica, now_s)``: a replica starts draining.
        on_abort: ``on_abort(replica, now_s) -> int``: abort what is left on a replica; how many.
        on_wake: called whenever a waiting coroutine is woken (the engine then runs the event loop).
        stop_time_s: engine stop time before its memory is free, seconds.
        warmup_s: warm-up time added to each variant's ``start_time_s``, seconds.
        fast_forward: passed to each :class:`SimReplica`.

    Attributes:
        replicas: every replica not yet stopped, in creation order.
        handles: their handles, by id.
        memory_in_use_bytes: memory reserved by those replicas, bytes.
        instant: starts take no time (set for the initial deployment).
    """

    name = "sim"

    def __init__(self, params: dict[str, ReplicaParams], events: EventQueue, clock: Clock,
                 on_drain: Callable[[SimReplica, float], None], on_abort: Callable[[SimReplica, float], int],
                 on_wake: Callable[[], None], *, stop_time_s: float = 5.0, warmup_s: float = 0.0,
                 fast_forward: bool = True) -> None:
        self.params = params
        self.events = events
        self.clock = clock
        self.on_drain = on_drain
        self.on_abort = on_abort
        self.woke = on_wake
        self.stop_time_s = float(stop_time_s)
        self.warmup_s = float(warmup_s)
        self.fast_forward = fast_forward
        self.replicas: dict[str, SimReplica] = {}
        self.handles: dict[str, SimReplicaHandle] = {}
        self.memory_in_use_bytes = 0
        self.instant = False
        self.on_change: Callable[[], None] = lambda: None
        self._placements: dict[str, ReplicaPlacement] = {}

    def spec_for(self, placement: ReplicaPlacement, replica_id: str) -> ReplicaSpec:
        """The switcher's ``SpecFactory``: a spec naming the variant and devices.

        Raises:
            ConfigError: the variant has no iteration model in the table.
        """
        if placement.variant not in self.params:
            raise ConfigError(f"variant {placement.variant!r} has no simulation parameters",
                              field="plan.replicas.variant", allowed=", ".join(sorted(self.params)))
        self._placements[replica_id] = placement
        return ReplicaSpec(variant=placement.variant, model=placement.variant, served_model_name=placement.variant,
                           max_model_len=max(16, self.params[placement.variant].max_request_tokens),
                           devices=tuple(placement.device_ids))

    def changed(self) -> None:
        """A replica's state changed (the engine's cached views are stale)."""
        self.on_change()

    def free(self, r: SimReplica) -> None:
        """Release a stopped replica's memory and forget it."""
        self.memory_in_use_bytes -= r.params.memory_per_device_bytes * len(r.device_ids)
        self.replicas.pop(r.replica_id, None)
        self.handles.pop(r.replica_id, None)
        self.changed()

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> SimReplicaHandle:
        """Start one replica; returns when it is ready (simulated start and warm-up time)."""
        placement = self._placements.pop(replica_id, None)
        node = placement.node if placement is not None else "node0"
        devices = tuple(spec.devices or spec.cpu_cores or ())
        r = SimReplica(replica_id, self.params[spec.variant], node, devices, fast_forward=self.fast_forward)
        self.replicas[replica_id] = r
        self.memory_in_use_bytes += r.params.memory_per_device_bytes * len(devices)
        handle = SimReplicaHandle(self, r, spec)
        self.handles[replica_id] = handle
        r.state = "starting"
        if self.instant:
            handle.ready()
            return handle
        handle._waiter = asyncio.get_running_loop().create_future()
        self.events.push(self.clock.now() + r.params.start_time_s + self.warmup_s, Priority.READY,
                         EventKind.READY, handle)
        self.changed()
        await handle._waiter
        return handle


class SimRouterPort:
    """The switcher's router in the simulator: which replicas serve, and the routing in force.

    Args:
        on_ready: ``on_ready()``: a replica joined the serving set (held requests may go).
        on_change: the serving set or the routing changed.

    Attributes:
        routing: class -> variant -> weight in force.
        serving_ids: ids of the replicas the switcher set ``ready``.
    """

    def __init__(self, on_ready: Callable[[], None], on_change: Callable[[], None]) -> None:
        self.routing: dict[str, dict[str, float]] = {}
        self.serving_ids: set[str] = set()
        self._on_ready = on_ready
        self._on_change = on_change

    def add(self, replica: Replica) -> None:
        """Known from ``start_replica``; it serves from ``set_state(ready)``."""

    def remove(self, replica_id: str) -> None:
        if replica_id in self.serving_ids:
            self.serving_ids.discard(replica_id)
            self._on_change()

    def set_state(self, replica_id: str, state: ReplicaState) -> None:
        if state == "ready":
            self.serving_ids.add(replica_id)
            self._on_change()
            self._on_ready()
        else:
            self.remove(replica_id)

    def set_routing(self, routing: dict[str, dict[str, float]]) -> None:
        self.routing = routing
        self._on_change()
