"""The request router: which replica serves a request (the stateful part).

The choice itself is the pure function :func:`oserve.policies.routing.choose_replica`.
:class:`Router` keeps the mutable state around it (the replicas, their router-side state,
outstanding counts, the per-class smooth weighted round-robin credits, the fallback counter) and
counts each request from :meth:`Router.acquire` to :meth:`Router.release`.

Candidates are replicas whose router-side state is ``"ready"`` *and* whose own ``state`` is
``"ready"`` (a draining, failed or stopped replica leaves the candidate set at once) and that are not
excluded (e.g. a replica a retried request already failed on); the choice among them follows the
policy of :mod:`oserve.policies.routing` (context fit, smooth weighted round-robin over the class's
variants, least loaded within a variant (see ``replica_load`` below), counted fallbacks).

Replica load (``replica_load``): ``"prefill-tokens"`` (the default) ranks replicas within a variant
by *pending prefill tokens* first: the prompt tokens of requests routed to the replica whose first
output token has not arrived yet, then by outstanding requests; ``"requests"`` by outstanding requests
only. A long prompt in prefill counts as one request but holds every request queued behind it: on the
simulated 70B conv trace pending prefill tokens carried 2-4 points more of the requests within the SLO
than outstanding requests at equal load (``bench/results/replica_load.json``). A request counts its
``prompt_tokens`` there when it is acquired with a ``request_id``; :meth:`Router.first_token` or
:meth:`Router.release` with the same id takes them off once (both are idempotent per request, so the
count never goes below 0). The count is kept under either setting (:meth:`Router.pending_prefill_tokens`).

Router-side queue (:meth:`Router.acquire_queued`): each replica takes at most its in-flight limit
(``spec.max_ongoing_requests`` where its variant sets one, else its batch limit ``spec.max_num_seqs``)
of requests at once. A request whose every
suitable ready replica is at its limit (or that arrives while no replica is ready but one is
starting) waits in a bounded FIFO (:class:`~oserve.server.wait_queue.WaitQueue`); when a replica
frees a slot (:meth:`Router.release`) or becomes ready (:meth:`Router.add`,
:meth:`Router.set_state`), the oldest waiting requests it can serve are dispatched to it at once.
A request never waits silently forever: past ``queue_timeout_s`` it fails with
:class:`~oserve.errors.QueueTimeoutError` (503), and a full queue refuses it with
:class:`~oserve.errors.QueueFullError` (429); both are counted (:attr:`Router.queue_timeouts`,
:attr:`Router.queue_rejected`), and so are requests whose client left while queued
(:attr:`Router.queue_abandoned`). ``queue_max=0`` turns the queue off: limits are ignored and
requests pile into the engines' own queues, as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from oserve.backends.base import Replica, ReplicaState
from oserve.errors import ConfigError, InvalidRequestError, NoReplicaReadyError, QueueFullError, QueueTimeoutError
from oserve.policies.routing import REPLICA_LOADS, Candidate, choose_replica, open_candidates
from oserve.server.wait_queue import Waiter, WaitQueue

__all__ = ["Router", "Lease"]

log = logging.getLogger(__name__)

_STATES: tuple[str, ...] = ("starting", "ready", "draining", "stopped", "failed")


def _spec_limit(spec: object) -> int | None:
    """A replica spec's router-side in-flight limit: ``max_ongoing_requests``, else ``max_num_seqs``
    (None when the spec has neither)."""
    limit = getattr(spec, "max_ongoing_requests", None)
    return limit if limit is not None else getattr(spec, "max_num_seqs", None)


@dataclass
class _Entry:
    replica: Replica
    state: ReplicaState
    cand: Candidate
    outstanding: int = 0
    served: int = 0
    limit: int | None = None
    pending: dict[str, int] = field(default_factory=dict)  # request id -> prompt tokens not yet prefilled
    pending_tokens: int = 0  # sum of ``pending``

    def clear_pending(self, request_id: str) -> int:
        tokens = self.pending.pop(request_id, 0)
        self.pending_tokens -= tokens
        return tokens

    @property
    def max_model_len(self) -> int:
        return self.cand.max_model_len

    @max_model_len.setter
    def max_model_len(self, value: int) -> None:
        self.cand = self.cand._replace(max_model_len=int(value))


class Lease:
    """One request's hold on a replica; releases it exactly once.

    Use as ``async with router.lease(...) as replica:`` or call :meth:`release`.

    Attributes:
        replica: the chosen replica.
    """

    __slots__ = ("_router", "replica", "_released", "_request_id")

    def __init__(self, router: Router, replica: Replica, request_id: str | None = None) -> None:
        self._router = router
        self.replica = replica
        self._released = False
        self._request_id = request_id

    def release(self) -> None:
        """Stop counting the request against the replica. Idempotent."""
        if not self._released:
            self._released = True
            self._router.release(self.replica.replica_id, self._request_id)

    async def __aenter__(self) -> Replica:
        return self.replica

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Router:
    """Routes requests over replicas: least loaded (pending prefill tokens, then outstanding), following routing weights.

    Args:
        retry_after_s: the ``retry_after_s`` of :class:`NoReplicaReadyError`, seconds.
        queue_max: most requests waiting in the router-side queue (>= 0; 0 turns the queue and
            the per-replica in-flight limits off).
        queue_timeout_s: longest wait in the queue before a 503, seconds (> 0).
        replica_load: how replicas within a variant are ranked: ``"prefill-tokens"`` (default: least
            pending prefill tokens, then least outstanding) or ``"requests"`` (least outstanding requests).
        now: the clock of queue ages, seconds (``time.monotonic`` by default).

    Attributes:
        fallbacks: requests routed outside their class's assigned variants.
        fallbacks_by_class: the same, per class name.
        picks: requests routed (successful :meth:`pick` calls).
        queued_total: requests that waited in the queue.
        queue_timeouts / queue_rejected / queue_abandoned: queued requests that timed out, were
            refused by a full queue, or whose client left while they waited.

    Raises:
        ConfigError: ``queue_max`` < 0, ``queue_timeout_s`` <= 0 or an unknown ``replica_load`` (names
            the field).
    """

    def __init__(self, *, retry_after_s: float = 1.0, queue_max: int = 1024, queue_timeout_s: float = 60.0,
                 replica_load: str = "prefill-tokens", now: Callable[[], float] = time.monotonic) -> None:
        if queue_max < 0:
            raise ConfigError(f"queue_max must be >= 0, got {queue_max}", field="queue_max",
                              allowed=">= 0 requests (0 turns the queue off)")
        if not (math.isfinite(queue_timeout_s) and queue_timeout_s > 0):
            raise ConfigError(f"queue_timeout_s must be > 0, got {queue_timeout_s}", field="queue_timeout_s",
                              allowed="> 0 seconds")
        if replica_load not in REPLICA_LOADS:
            raise ConfigError(f"unknown replica_load {replica_load!r}", field="replica_load",
                              allowed=", ".join(REPLICA_LOADS))
        self.replica_load = replica_load
        self.retry_after_s = retry_after_s
        self.queue_timeout_s = float(queue_timeout_s)
        self._now = now
        self._queue = WaitQueue(queue_max)
        self.queued_total = 0
        self.queue_timeouts = 0
        self.queue_rejected = 0
        self.queue_abandoned = 0
        self._entries: dict[str, _Entry] = {}
        self._routing: dict[str, dict[str, float]] = {}
        self._credit: dict[str, dict[str, float]] = {}
        self.fallbacks = 0
        self.fallbacks_by_class: dict[str, int] = {}
        self.picks = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- membership and state ---------------------------------------------------------------
    def add(self, replica: Replica, *, state: ReplicaState | None = None, max_model_len: int | None = None,
            max_in_flight: int | None = None) -> None:
        """Add a replica; when it is ready, queued requests it can serve are dispatched to it at once.

        Args:
            replica: the replica handle.
            state: router-side state; None takes ``replica.state``. Use ``"starting"`` to add a
                replica that must not get traffic yet (warm-up), then :meth:`set_state`.
            max_model_len: its effective context length, tokens; None takes
                ``replica.spec.max_model_len`` until the engine's value is read from
                ``replica.stats()``: at once in the background when an event loop is running,
                else at the next :meth:`refresh`.
            max_in_flight: most requests it takes at once (requests); None takes
                ``replica.spec.max_ongoing_requests``, else ``replica.spec.max_num_seqs`` (its batch limit).

        Raises:
            ConfigError: the id is already present, ``state`` is not a replica state, or
                ``max_in_flight`` < 1.
        """
        if replica.replica_id in self._entries:
            raise ConfigError(f"replica {replica.replica_id!r} is already in the router", field="replica_id",
                              allowed="a unique replica id")
        st = replica.state if state is None else state
        self._check_state(st)
        mml = replica.spec.max_model_len if max_model_len is None else int(max_model_len)
        limit = _spec_limit(replica.spec) if max_in_flight is None else int(max_in_flight)
        if limit is not None and limit < 1:
            raise ConfigError(f"max_in_flight of replica {replica.replica_id!r} is {limit}", field="max_in_flight",
                              allowed=">= 1 requests")
        cand = Candidate(replica.replica_id, replica.spec.variant, mml)
        self._entries[replica.replica_id] = _Entry(replica, st, cand, limit=limit)
        self.dispatch()
        if max_model_len is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            task = loop.create_task(self._refresh_one(replica.replica_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def remove(self, replica_id: str) -> Replica | None:
        """Remove a replica (in-flight leases release harmlessly). Returns it, or None if unknown."""
        entry = self._entries.pop(replica_id, None)
        return entry.replica if entry else None

    def set_state(self, replica_id: str, state: ReplicaState) -> None:
        """Set the router-side state; only ``"ready"`` replicas get requests.

        Raises:
            KeyError: unknown replica id.
            ConfigError: ``state`` is not one of starting, ready, draining, stopped, failed.
        """
        self._check_state(state)
        self._entries[replica_id].state = state
        if state == "ready":
            self.dispatch()

    def set_max_model_len(self, replica_id: str, max_model_len: int) -> None:
        """Set a replica's effective context length, tokens. Raises KeyError for an unknown id."""
        self._entries[replica_id].max_model_len = int(max_model_len)
        self.dispatch()

    async def refresh(self) -> None:
        """Read each replica's effective context length from ``stats().max_model_len`` (when known).

        Side effects: updates the router's per-replica context lengths.
        """
        for rid in list(self._entries):
            await self._refresh_one(rid)

    async def _refresh_one(self, replica_id: str) -> None:
        entry = self._entries.get(replica_id)
        if entry is None:
            return
        try:
            stats = await entry.replica.stats()
        except Exception:  # noqa: BLE001 - a replica whose stats fail keeps its last known value
            log.warning("could not read stats of replica %s; keeping max_model_len=%d", replica_id,
                        entry.max_model_len)
            return
        if stats.max_model_len is not None and self._entries.get(replica_id) is entry:
            entry.max_model_len = int(stats.max_model_len)
            self.dispatch()

    def set_routing(self, routing: Mapping[str, Mapping[str, float]]) -> None:
        """Set the plan's routing weights: class name -> variant -> weight.

        Args:
            routing: weights >= 0 (any scale; only ratios matter). An empty mapping turns routing
                off (plain least outstanding, no fallbacks counted).

        Raises:
            ConfigError: a weight is negative or not finite (names the class and variant).
        """
        new: dict[str, dict[str, float]] = {}
        for cls, per_variant in routing.items():
            row: dict[str, float] = {}
            for variant, w in per_variant.items():
                w = float(w)
                if not math.isfinite(w) or w < 0:
                    raise ConfigError(f"routing weight of class {cls!r}, variant {variant!r} is {w}",
                                      field=f"routing.{cls}.{variant}", allowed="a finite number >= 0")
                row[variant] = w
            new[str(cls)] = row
        self._routing = new
        self._credit = {c: v for c, v in self._credit.items() if c in new}
        self.dispatch()

    @property
    def routing(self) -> dict[str, dict[str, float]]:
        """A copy of the routing weights."""
        return {c: dict(v) for c, v in self._routing.items()}

    # -- queries ----------------------------------------------------------------------------
    def replicas(self) -> list[Replica]:
        """All replicas, in the order added."""
        return [e.replica for e in self._entries.values()]

    def get(self, replica_id: str) -> Replica | None:
        """The replica with this id, or None."""
        entry = self._entries.get(replica_id)
        return entry.replica if entry else None

    def state_of(self, replica_id: str) -> ReplicaState:
        """Router-side state of a replica. Raises KeyError for an unknown id."""
        return self._entries[replica_id].state

    def ready_replicas(self) -> list[Replica]:
        """Replicas that may get requests now."""
        return [e.replica for e in self._entries.values() if e.state == "ready" and e.replica.state == "ready"]

    def ready_count(self) -> int:
        """Number of replicas that may get requests now."""
        return sum(1 for e in self._entries.values() if e.state == "ready" and e.replica.state == "ready")

    def outstanding(self, replica_id: str | None = None) -> int:
        """Requests in flight on one replica, or on all when ``replica_id`` is None."""
        if replica_id is None:
            return sum(e.outstanding for e in self._entries.values())
        entry = self._entries.get(replica_id)
        return entry.outstanding if entry else 0

    def pending_prefill_tokens(self, replica_id: str | None = None) -> int:
        """Prompt tokens of requests on one replica (or on all) whose first output token has not arrived, tokens."""
        if replica_id is None:
            return sum(e.pending_tokens for e in self._entries.values())
        entry = self._entries.get(replica_id)
        return entry.pending_tokens if entry else 0

    def max_model_len(self, replica_id: str | None = None) -> int | None:
        """Effective context length of one replica, or the largest over ready replicas (None if none)."""
        if replica_id is not None:
            return self._entries[replica_id].max_model_len
        lens = [e.max_model_len for e in self._entries.values() if e.state == "ready" and e.replica.state == "ready"]
        return max(lens) if lens else None

    # -- routing ----------------------------------------------------------------------------
    def pick(
        self,
        request_class: str | None,
        needed_tokens: int,
        *,
        prompt_tokens: int | None = None,
        prompt_param: str = "prompt",
        exclude: Iterable[str] = (),
    ) -> Replica:
        """Choose a replica for a request (does not count it; see :meth:`acquire`).

        Args:
            request_class: the request's class name (see :mod:`oserve.types`), or None.
            needed_tokens: prompt tokens + ``max_tokens``.
            prompt_tokens: the prompt's tokens, to name the right field when it alone does not fit.
            prompt_param: the request field holding the prompt (``"prompt"`` or ``"messages"``).
            exclude: replica ids not to use (e.g. where a retried request already failed).

        Returns:
            The chosen replica.

        Raises:
            NoReplicaReadyError: no replica is ready (503, ``retry_after_s``).
            InvalidRequestError: replicas are ready but none has a context length that fits
                ``needed_tokens``; ``param`` is ``prompt_param`` when the prompt alone leaves no
                room for an output token, else ``"max_tokens"``.
        """
        replica = self._choose(request_class, needed_tokens, prompt_tokens, prompt_param, exclude, limited=False)
        assert replica is not None  # unlimited: a fitting ready replica always has room
        return replica

    def _choose(self, request_class: str | None, needed_tokens: int, prompt_tokens: int | None, prompt_param: str,
                exclude: Iterable[str], *, limited: bool) -> Replica | None:
        """:meth:`pick`'s body; with ``limited``, only replicas below their in-flight limit count and
        None means "wait": every fitting ready replica is full, or none is ready but one is starting."""
        entries = self._entries
        cands = [e.cand for e in entries.values() if e.state == "ready" and e.replica.state == "ready"]
        if exclude:
            excluded = set(exclude)
            cands = [c for c in cands if c.replica_id not in excluded]
        if not cands:
            if limited and any(e.state == "starting" or e.replica.state == "starting" for e in entries.values()):
                return None
            raise NoReplicaReadyError("no replica is ready to serve this request; retry later",
                                      retry_after_s=self.retry_after_s)
        outstanding = {rid: entries[rid].outstanding for rid, _, _ in cands}
        pool = open_candidates(cands, outstanding, {rid: entries[rid].limit for rid, _, _ in cands}) \
            if limited else cands
        weights = self._routing.get(request_class) if request_class is not None else None
        choice = choose_replica(
            pool,
            outstanding,
            needed_tokens=needed_tokens,
            weights=weights,
            credit=self._credit.get(request_class) if weights else None,
            served={rid: entries[rid].served for rid, _, _ in cands},
            routing_active=bool(self._routing),
            pending_prefill_tokens={rid: entries[rid].pending_tokens for rid, _, _ in cands}
            if self.replica_load == "prefill-tokens" else None,
        )
        if choice.replica_id is None:
            limit = max(c.max_model_len for c in cands)
            if limited and limit >= needed_tokens:
                return None  # a ready replica fits it once it has a free slot
            if prompt_tokens is not None and prompt_tokens >= limit:
                raise InvalidRequestError(
                    f"this model's maximum context length is {limit} tokens; the {prompt_param} has "
                    f"{prompt_tokens} tokens, leaving no room for output tokens",
                    param=prompt_param, code="context_length_exceeded")
            detail = "" if prompt_tokens is None else (
                f" ({prompt_tokens} in the {prompt_param} + {needed_tokens - prompt_tokens} for max_tokens)")
            raise InvalidRequestError(
                f"this model's maximum context length is {limit} tokens; you requested {needed_tokens} "
                f"tokens{detail}; lower max_tokens or shorten the {prompt_param}",
                param="max_tokens", code="context_length_exceeded")
        if choice.credit is not None and request_class is not None:
            self._credit[request_class] = choice.credit
        if choice.fallback:
            self.fallbacks += 1
            key = request_class or ""
            self.fallbacks_by_class[key] = self.fallbacks_by_class.get(key, 0) + 1
        self.picks += 1
        return entries[choice.replica_id].replica

    def acquire(self, request_class: str | None, needed_tokens: int, *, request_id: str | None = None,
                **kwargs: object) -> Replica:
        """:meth:`pick` a replica and count the request as outstanding on it until :meth:`release`.

        Takes :meth:`pick`'s arguments and raises its errors. With ``request_id`` and ``prompt_tokens``,
        the prompt's tokens count as pending prefill tokens on the replica until :meth:`first_token` or
        :meth:`release` with that id (without an id the request counts as outstanding only).
        """
        replica = self.pick(request_class, needed_tokens, **kwargs)  # type: ignore[arg-type]
        self._count(replica, request_id, kwargs.get("prompt_tokens"))  # type: ignore[arg-type]
        return replica

    def first_token(self, replica_id: str, request_id: str) -> int:
        """The request's first output token arrived: its prompt is prefilled on the replica.

        Returns:
            The prompt tokens taken off the replica's pending prefill tokens; 0 when there were none
            (already taken off, released, never counted, or the replica was removed).
        """
        entry = self._entries.get(replica_id)
        return entry.clear_pending(request_id) if entry is not None else 0

    def release(self, replica_id: str, request_id: str | None = None) -> None:
        """Stop counting one request against a replica; its freed slot serves the queue at once.

        Args:
            replica_id: the replica; unknown (removed) ids are ignored.
            request_id: the id it was acquired with; its prompt tokens still pending prefill (no
                first token yet: an error, abort or client gone) are taken off.
        """
        entry = self._entries.get(replica_id)
        if entry is not None and request_id is not None:
            entry.clear_pending(request_id)
        if entry is not None and entry.outstanding > 0:
            entry.outstanding -= 1
            if len(self._queue):
                self.dispatch()

    # -- router-side queue ------------------------------------------------------------------
    @property
    def queue_enabled(self) -> bool:
        """True when the router-side queue and the per-replica in-flight limits are on."""
        return self._queue.max_len > 0

    def try_acquire(self, request_class: str | None, needed_tokens: int, *, prompt_tokens: int | None = None,
                    prompt_param: str = "prompt", exclude: Iterable[str] = (),
                    request_id: str | None = None) -> Replica | None:
        """Acquire a replica with a free slot now, or None when the request must wait in the queue.

        With the queue off (``queue_max=0``) this is :meth:`acquire` (never None); ``request_id``
        as in :meth:`acquire`.

        Raises:
            NoReplicaReadyError: no replica is ready and none is starting (503).
            InvalidRequestError: no ready replica's context length fits ``needed_tokens`` (400).
        """
        replica = self._choose(request_class, needed_tokens, prompt_tokens, prompt_param, exclude,
                               limited=self.queue_enabled)
        if replica is not None:
            self._count(replica, request_id, prompt_tokens)
        return replica

    async def acquire_queued(self, request_class: str | None, needed_tokens: int, *,
                             prompt_tokens: int | None = None, prompt_param: str = "prompt",
                             exclude: Iterable[str] = (), request_id: str | None = None) -> Replica:
        """Acquire a replica, waiting in the router-side queue while every suitable one is full.

        Takes :meth:`try_acquire`'s arguments. Cancelling the call (the client left) removes the request
        from the queue (counted in :attr:`queue_abandoned`); a replica dispatched to it meanwhile
        is released.

        Raises:
            NoReplicaReadyError / InvalidRequestError: as :meth:`try_acquire`.
            QueueFullError: the queue holds ``queue_max`` requests already (429).
            QueueTimeoutError: it waited ``queue_timeout_s`` without a free slot (503).
        """
        replica = self.try_acquire(request_class, needed_tokens, prompt_tokens=prompt_tokens,
                                   prompt_param=prompt_param, exclude=exclude, request_id=request_id)
        if replica is not None:
            return replica
        if self._queue.full():
            self.queue_rejected += 1
            raise QueueFullError(f"the router queue is full ({self._queue.max_len} requests wait); retry later",
                                 retry_after_s=self.retry_after_s)
        fut: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        waiter = Waiter(request_class, needed_tokens, frozenset(exclude), self._now(), fut,
                        prompt_tokens=prompt_tokens, request_id=request_id)
        self._queue.push(waiter)
        self.queued_total += 1
        try:
            return await asyncio.wait_for(fut, self.queue_timeout_s)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                # dispatched (counted on the replica) in the loop iteration its timeout fired: since Python 3.12
                # wait_for raises TimeoutError then, and dropping the replica would leak its slot and pending tokens
                return fut.result()
            self._queue.remove(waiter)
            self.queue_timeouts += 1
            raise QueueTimeoutError(
                f"no replica had a free slot for {self.queue_timeout_s:g} s (router queue timeout); retry later",
                retry_after_s=self.retry_after_s) from None
        except asyncio.CancelledError:
            self._queue.remove(waiter)
            self.queue_abandoned += 1
            if fut.done() and not fut.cancelled():
                self.release(fut.result().replica_id, request_id)  # dispatched just as the client left
            raise

    def dispatch(self) -> int:
        """Hand free slots to queued requests, oldest first; returns how many were dispatched.

        Called on every release, on a replica becoming ready and on routing changes; an entry no
        replica can take now (full, or none fits) stays queued without blocking younger entries
        that other replicas can take.
        """
        if not len(self._queue):
            return 0
        n = 0
        for w in self._queue:
            if not self._any_free_slot():
                break  # O(replicas), not O(queue), per release while every replica is full
            if w.future.done():  # cancelled or timed out: its waiter removes it
                continue
            try:
                replica = self._choose(w.request_class, w.needed_tokens, None, "prompt", w.exclude, limited=True)
            except (NoReplicaReadyError, InvalidRequestError):
                continue  # nothing fits it now: it waits (bounded by its timeout)
            if replica is None:
                continue
            self._count(replica, w.request_id, w.prompt_tokens)
            self._queue.remove(w)
            w.future.set_result(replica)
            n += 1
        return n

    def queue_length(self, request_class: str | None = None) -> int:
        """Requests waiting in the router-side queue (of one class, or all)."""
        return self._queue.length(request_class)

    def queue_oldest_age_s(self) -> float:
        """Wait so far of the oldest queued request, seconds (0 when none waits)."""
        return self._queue.oldest_age_s(self._now())

    def queue_by_class(self) -> dict[str, tuple[int, float]]:
        """Per class name: ``(queued requests, oldest wait so far in seconds)``."""
        return self._queue.by_class(self._now())

    def in_flight_limit(self, replica_id: str) -> int | None:
        """A replica's in-flight limit, requests (None: unlimited). Raises KeyError for an unknown id."""
        return self._entries[replica_id].limit

    def _any_free_slot(self) -> bool:
        """True when some ready replica is below its in-flight limit."""
        for e in self._entries.values():
            if e.state == "ready" and e.replica.state == "ready" and (e.limit is None or e.outstanding < e.limit):
                return True
        return False

    def _count(self, replica: Replica, request_id: str | None = None, prompt_tokens: int | None = None) -> None:
        entry = self._entries[replica.replica_id]
        entry.outstanding += 1
        entry.served += 1
        if request_id is not None and prompt_tokens is not None and prompt_tokens > 0:
            entry.clear_pending(request_id)  # a request counted twice on one replica is counted once
            entry.pending[request_id] = int(prompt_tokens)
            entry.pending_tokens += int(prompt_tokens)

    def lease(self, request_class: str | None, needed_tokens: int, **kwargs: object) -> Lease:
        """:meth:`acquire` wrapped in a :class:`Lease` (an async context manager yielding the replica)."""
        request_id: str | None = kwargs.pop("request_id", None)  # type: ignore[assignment]
        return Lease(self, self.acquire(request_class, needed_tokens, request_id=request_id, **kwargs), request_id)

    @staticmethod
    def _check_state(state: str) -> None:
        if state not in _STATES:
            raise ConfigError(f"unknown replica state {state!r}", field="state", allowed=", ".join(_STATES))
