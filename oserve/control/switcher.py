"""The switch executor: moves the running replicas from the current plan to a target plan without
losing requests.

:class:`Switcher` executes the phases of :func:`~oserve.control.rules.plan_steps` on a
:class:`~oserve.backends.base.Backend` and a router, one transition at a time. A target that arrives
mid-transition replaces any queued one (latest wins) and interrupts the running transition at its
next safe point: replicas still starting that the new target does not need are cancelled
(:func:`~oserve.control.rules.unneeded_starts`), running replicas are not drained, and the next
transition starts from the real state. Its registry of replicas is the truth about what runs.

The same object runs live (a wall clock, a vLLM or fake backend) and in the simulator (a simulated clock and
:class:`oserve.sim.backend.SimBackend`): every wait and timeout goes through its :class:`~oserve.clock.Clock`.

Draining a replica: the router marks it ``draining`` at once (no new requests), in-flight requests,
streams included, finish up to ``drain_timeout_s``, the rest are aborted by the replica with an
explicit error (``RequestAbortedError``), then the engine stops and its memory is released before any
replica of a later phase starts. A drain that would leave a class without capacity is skipped (`drain_blocker`).

Rollback: when a phase's starts fail after earlier phases drained replicas, the drained replicas some class
now lacks start again (:func:`~oserve.control.rules.rollback_starts`), the rest is skipped.
Parked replicas: activation is a wake plus a routing shift, deactivation a drain plus a park
(:mod:`oserve.control.switch_parking`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from oserve.backends.base import Backend, Replica, ReplicaState, SamplingParams
from oserve.clock import Clock, WallClock
from oserve.control.controller import same_replicas
from oserve.control.ports import RouterPort
from oserve.control.records import StepKind, StepRecord, SwitchResult, notify_observers
from oserve.control.resources import ResourceModel
from oserve.control.rules import (
    LiveReplica,
    drain_blocker,
    effective_routing,
    plan_steps,
    rollback_starts,
    switch_status,
    unneeded_starts,
)
from oserve.control.specs import SpecFactory
from oserve.control.switch_parking import ParkingSteps
from oserve.errors import ConfigError, EngineStartError
from oserve.types import Plan, ReplicaPlacement

__all__ = ["RouterPort", "ManagedReplica", "Switcher", "same_replicas"]

log = logging.getLogger(__name__)


@dataclass
class ManagedReplica:
    """The switcher's record of one replica.

    Attributes:
        replica_id: unique id.
        placement: where it runs (devices chosen).
        state: ``starting`` (engine starting, warming up or waking), ``ready``, ``draining``, ``parked``
            (warm, no traffic), ``failed``.
        replica: the backend's handle once started.
        started_s: clock time the start began, seconds.
        reaper: while the engine start is abandoned (cancelled or timed out), the task that waits
            for it and stops the engine; None otherwise.
    """

    replica_id: str
    placement: ReplicaPlacement
    state: ReplicaState
    replica: Replica | None = None
    started_s: float = 0.0
    reaper: asyncio.Task[None] | None = None


@dataclass
class _Request:
    target: Plan
    futures: list[asyncio.Future[SwitchResult]] = field(default_factory=list)


class Switcher(ParkingSteps):
    """Executes transitions between plans on a backend, one at a time.

    Args:
        backend: starts replicas.
        router: receives replicas (``add``/``remove``/``set_state``) and routing weights.
        spec_factory: ``(placement, replica_id) -> ReplicaSpec``.
        resources: memory accounting of the cluster.
        clock: for step timestamps (WallClock by default).
        drain_timeout_s: how long in-flight requests may take to finish when a replica drains, s.
        start_timeout_s: how long an engine may take to start, s; past it the start fails with
            ``EngineStartError(cause="timeout")``.
        warmup_requests: real requests sent to each new replica before it gets traffic (>= 0).
        warmup_max_tokens: output tokens of each warm-up request.
        warmup_prompt: the warm-up prompt.
        stop_timeout_s: how long ``Replica.stop`` may take before the replica is reported failed, s.
        migrate_on_drain: a replica a switch drains aborts its in-flight requests at once instead of
            letting them finish for up to ``drain_timeout_s``; the endpoint resumes each on another
            replica from its last token (:mod:`oserve.server.resume`). Shutdown drains, and drains of a
            switch to a plan that only restores quality (``Plan.quality_restore``), are unchanged.
        migration_grace_s: with ``migrate_on_drain``, in-flight requests may first finish for up to
            this long, s (0: all are handed over at once).

    Raises:
        ConfigError: a negative timeout or warm-up count.
    """

    def __init__(
        self,
        backend: Backend,
        router: RouterPort,
        spec_factory: SpecFactory,
        resources: ResourceModel,
        *,
        clock: Clock | None = None,
        drain_timeout_s: float = 30.0,
        start_timeout_s: float = 600.0,
        warmup_requests: int = 2,
        warmup_max_tokens: int = 4,
        warmup_prompt: str = "Hello, how are you?",
        stop_timeout_s: float = 60.0,
        migrate_on_drain: bool = False,
        migration_grace_s: float = 0.0,
    ) -> None:
        for name, val in (("drain_timeout_s", drain_timeout_s), ("start_timeout_s", start_timeout_s),
                          ("migration_grace_s", migration_grace_s), ("stop_timeout_s", stop_timeout_s),
                          ("warmup_requests", warmup_requests)):
            if val < 0:
                raise ConfigError(f"{name} must be >= 0, got {val}", field=name, allowed=">= 0")
        if warmup_max_tokens < 1:
            raise ConfigError(f"warmup_max_tokens must be >= 1, got {warmup_max_tokens}",
                              field="warmup_max_tokens", allowed=">= 1")
        self.backend = backend
        self.router = router
        self.spec_factory = spec_factory
        self.resources = resources
        self.table = resources.table
        self.clock = clock or WallClock()
        self.drain_timeout_s = float(drain_timeout_s)
        self.migrate_on_drain = bool(migrate_on_drain)
        self.migration_grace_s = float(migration_grace_s)
        self.start_timeout_s = float(start_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.warmup_requests = int(warmup_requests)
        self.warmup_max_tokens = int(warmup_max_tokens)
        self.warmup_prompt = warmup_prompt
        self._replicas: dict[str, ManagedReplica] = {}
        self._routing: dict[str, dict[str, float]] = {}
        self._target_routing: dict[str, dict[str, float]] = {}
        self._seq = itertools.count()
        self._pending: _Request | None = None
        self._running: _Request | None = None
        self._worker: asyncio.Task[None] | None = None
        self._interrupt = asyncio.Event()
        self._steps: list[StepRecord] = []
        self._aborted = self._migrated = 0
        self.results: list[SwitchResult] = []
        self.on_result: list[Callable[[SwitchResult], None]] = []
        self.on_step: list[Callable[[StepRecord], None]] = []

    # ----------------------------------------------------------------- views
    @property
    def replicas(self) -> dict[str, ManagedReplica]:
        """The replicas that exist now (a copy), by id."""
        return dict(self._replicas)

    @property
    def busy(self) -> bool:
        """True while a transition runs or one is queued."""
        return self._running is not None or self._pending is not None

    @property
    def target(self) -> Plan | None:
        """The newest plan asked for that is not yet finished (queued or running), else None."""
        if self._pending is not None:
            return self._pending.target
        return self._running.target if self._running is not None else None

    @property
    def routing(self) -> dict[str, dict[str, float]]:
        """Routing weights in force (restricted to ready variants)."""
        return {c: dict(w) for c, w in self._routing.items()}

    def actual_plan(self) -> Plan:
        """The real deployment: ready replicas, parked replicas and the routing in force."""
        ms = sorted(self._replicas.values(), key=lambda m: m.replica_id)
        return Plan(replicas=[m.placement for m in ms if m.state == "ready"],
                    parked=[m.placement for m in ms if m.state == "parked"], routing=self.routing, reason="actual")

    def live(self) -> list[LiveReplica]:
        """The replicas as :func:`plan_steps` sees them."""
        return [LiveReplica(m.replica_id, m.placement, m.state) for m in self._replicas.values()]

    # ----------------------------------------------------------------- submitting
    def submit(self, target: Plan, *, merge: bool = True) -> asyncio.Future[SwitchResult]:
        """Ask for a transition to ``target``; returns a future of its result.

        One transition runs at a time. If one is running, ``target`` is queued (replacing any
        queued target, whose future resolves ``superseded``) and the running one is interrupted at
        its next safe point, unless ``merge`` is True and the running (or queued) target deploys the
        same replicas per (variant, node) (:func:`same_replicas`): then only its routing is replaced,
        the transition goes on uninterrupted and the futures merge (a routing update never
        supersedes a transition). Use ``merge=False`` after a replica died, so that a fresh transition
        from the real state replaces it.

        Raises:
            ConfigError: the target places a replica on an unknown node/device or variant.
        """
        for p in target.replicas:
            self.resources.check(p)
        for p in target.parked:
            self.resources.check(p, field="plan.parked")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SwitchResult] = loop.create_future()
        had_pending = self._pending is not None
        if self._pending is not None:
            if merge and same_replicas(self._pending.target, target):
                self._pending.target = target  # the newest routing for the same replicas
                self._pending.futures.append(fut)
                return fut
            self._resolve(self._pending, self._superseded(self._pending.target))
            self._pending = None
        if merge and self._running is not None and not had_pending and same_replicas(self._running.target, target):
            # a routing-only change of the running target: adopt its routing, never interrupt the transition
            self._running.target = target
            self._target_routing = {c: dict(w) for c, w in target.routing.items()}
            self._refresh_routing(record=True)
            self._running.futures.append(fut)
            return fut
        self._pending = _Request(target, [fut])
        if self._running is not None:
            self._interrupt.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="oserve-switcher")
        return fut

    async def apply(self, target: Plan) -> SwitchResult:
        """Submit ``target`` and wait for its transition's result."""
        return await self.submit(target)

    async def idle(self) -> None:
        """Wait until no transition runs or is queued."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    # ----------------------------------------------------------------- failures and shutdown
    async def replica_failed(self, replica_id: str, reason: str) -> None:
        """Take a dead or hung replica out at once, stop it (best effort) and forget it.

        Side effects: router ``set_state(failed)`` then ``remove``; a ``stop`` step is recorded.
        The next transition to the target starts a replacement.
        """
        m = self._replicas.get(replica_id)
        if m is None:
            return
        t0 = self.clock.now()
        m.state = "failed"
        self._router_call("set_state", replica_id, "failed")
        self._router_call("remove", replica_id)
        ok, detail = True, f"replica failed: {reason}"
        if m.replica is not None:
            try:
                await self.clock.wait_for(m.replica.stop(), self.stop_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a dead engine may fail in any way while stopping
                ok, detail = False, f"{detail}; stop failed: {exc!r}"
        if ok:
            self._replicas.pop(replica_id, None)
        self._refresh_routing()
        self._record("stop", m, ok, detail, t0)

    async def shutdown(self, drain_timeout_s: float | None = None) -> None:
        """Cancel queued and running transitions, then drain and stop every replica."""
        if self._pending is not None:
            self._resolve(self._pending, self._superseded(self._pending.target))
            self._pending = None
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await asyncio.gather(*(self._drain_stop(rid, timeout) for rid in list(self._replicas)))

    # ----------------------------------------------------------------- the worker
    async def _work(self) -> None:
        while self._pending is not None:
            req, self._pending = self._pending, None
            self._running = req
            self._interrupt.clear()
            try:
                result = await self._transition(req.target)
                result = result if result.target is req.target else replace(result, target=req.target)
            except asyncio.CancelledError:
                self._resolve(req, self._superseded(req.target))
                self._running = None
                raise
            except Exception as exc:  # noqa: BLE001 - report any unexpected failure as a failed transition
                log.exception("transition failed")
                now = self.clock.now()
                result = SwitchResult(req.target, "failed", (StepRecord("skip", "", "", "", False, repr(exc), now, now),),
                                      now, now, self.actual_plan())
            self._running = None
            self.results.append(result)
            notify_observers(self.on_result, result)
            self._resolve(req, result)

    @staticmethod
    def _resolve(req: _Request, result: SwitchResult) -> None:
        for f in req.futures:
            if not f.done():
                f.set_result(result)

    def _superseded(self, target: Plan) -> SwitchResult:
        now = self.clock.now()
        return SwitchResult(target, "superseded", (), now, now, self.actual_plan())

    async def _transition(self, target: Plan) -> SwitchResult:
        t0 = self.clock.now()
        self._steps = []
        self._aborted = self._migrated = 0
        self._target_routing = {c: dict(w) for c, w in target.routing.items()}
        steps = plan_steps(self.live(), target, self.resources, self.table)
        for rid in steps.cleanup:
            await self._drain_stop(rid, 0.0)
        interrupted = False
        routed = False
        drained: list[ReplicaPlacement] = []
        for phase in steps.phases:
            if self._pending is not None:
                interrupted = True
                break
            failed_before = self._failed_starts()
            await asyncio.gather(self._run_starts(phase.starts, phase.park_starts), self._run_wakes(phase.wakes))
            if drained and self._failed_starts() > failed_before and await self._roll_back(drained):
                routed |= self._refresh_routing(record=True)
                break
            routed |= self._refresh_routing(record=True)
            if self._pending is not None:
                interrupted = True
                break
            drains, parks = [], []
            for rid in (*phase.drains, *phase.parks):
                reason = self._drain_blocker(rid, target, phase.forced)
                m = self._replicas.get(rid)
                if reason and m is not None:
                    self._record("skip", m, False, f"drain skipped: {reason}", self.clock.now())
                else:
                    (parks if rid in phase.parks else drains).append(rid)
            drained += [self._replicas[rid].placement for rid in drains if rid in self._replicas]
            mig = self.migrate_on_drain and not target.quality_restore  # a restore is not urgent: it waits,
            self._patient = self.migrate_on_drain and target.quality_restore  # unless a newer plan comes
            timeout = self.migration_grace_s if mig else self.drain_timeout_s
            await asyncio.gather(*(self._drain_stop(rid, timeout, mig) for rid in drains),
                                 *(self._drain_park(rid, timeout, mig) for rid in parks))
            self._patient = False
        routed |= self._refresh_routing(record=True)
        t1 = self.clock.now()
        actual = self.actual_plan()
        for p in steps.unplaceable:
            self._steps.append(StepRecord("skip", "", p.variant, p.node, False, "does not fit in memory", t1, t1))
        status = switch_status(interrupted=interrupted, steps=len(self._steps),
                               failed=sum(not s.ok for s in self._steps), routed=routed, actual=actual, target=target)
        return SwitchResult(target, status, tuple(self._steps), t0, t1, actual, steps.make_before_break,
                            steps.capacity_gap_classes, steps.unplaceable, self._aborted, self._migrated)

    def _failed_starts(self) -> int:
        """Start, warm-up and wake steps of this transition that failed."""
        return sum(not s.ok and s.kind in ("start", "warm", "wake") for s in self._steps)

    async def _roll_back(self, drained: Sequence[ReplicaPlacement]) -> bool:
        """Start again the drained replicas some class now lacks (see :func:`rollback_starts`).

        Returns:
            True when a rollback ran (the caller then skips the rest of the transition).

        Side effects: starts replicas; records one ``skip`` step (not ok) naming them.
        """
        ready = [m.placement.variant for m in self._replicas.values() if m.state == "ready"]
        occupied = [m.placement for m in self._replicas.values()]
        restart = rollback_starts(drained, ready, occupied, self.resources, self.table)
        if not restart:
            return False
        now = self.clock.now()
        names = ", ".join(f"{p.variant} on {p.node}" for p in restart)
        log.warning("new replicas failed to start after a rolling drain; rolling back: starting %s again", names)
        self._steps.append(StepRecord("skip", "", restart[0].variant, restart[0].node, False,
                                      f"rollback: a start failed after drains; starting {names} again, "
                                      "rest of the transition skipped", now, now))
        await self._run_starts(restart)
        return True

    def _drain_blocker(self, rid: str, target: Plan, forced: bool) -> str:
        """Why draining ``rid`` now would leave a class without capacity (see :func:`drain_blocker`)."""
        m = self._replicas.get(rid)
        if m is None:
            return ""
        ready = [x.placement.variant for x in self._replicas.values() if x.state == "ready"]
        return drain_blocker(m.placement.variant, m.state == "ready", ready, target, self.table, forced=forced)

    # ----------------------------------------------------------------- starts
    async def _run_starts(self, placements: Sequence[ReplicaPlacement],
                          park_after: Sequence[ReplicaPlacement] = ()) -> None:
        """Start ``placements`` (to serve) and ``park_after`` (to park once warm) concurrently."""
        tasks: dict[asyncio.Task[None], ManagedReplica] = {}
        to_park: set[asyncio.Task[None]] = set()
        for p, park in [*((p, False) for p in placements), *((p, True) for p in park_after)]:
            rid = f"{p.variant}.{p.node}.{next(self._seq)}"
            m = ManagedReplica(rid, p, "starting", None, self.clock.now())
            self._replicas[rid] = m
            t = asyncio.get_running_loop().create_task(self._start_one(m, park=park), name=f"start-{rid}")
            tasks[t] = m
            if park:
                to_park.add(t)
        pending = set(tasks)
        try:
            while pending:
                waiter = asyncio.ensure_future(self._interrupt.wait())
                try:
                    await asyncio.wait(pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                pending = {t for t in pending if not t.done()}
                if self._interrupt.is_set():
                    # a newer target is queued: cancel the starts it does not need, let the others finish
                    self._interrupt.clear()
                    for t in self._unneeded_starts({t: tasks[t] for t in pending
                                                    if not t.cancelling() and t not in to_park}):
                        t.cancel()
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _unneeded_starts(self, starting: dict[asyncio.Task[None], ManagedReplica]) -> list[asyncio.Task[None]]:
        """Start tasks the queued target does not need (see :func:`unneeded_starts`)."""
        nxt = self._pending.target if self._pending is not None else None
        by_id = {m.replica_id: t for t, m in starting.items()}
        ready = [m.placement for m in self._replicas.values() if m.state == "ready"]
        return [by_id[rid] for rid in unneeded_starts(((m.replica_id, m.placement) for m in starting.values()),
                                                      ready, nxt)]

    async def _start_one(self, m: ManagedReplica, *, park: bool = False) -> None:
        """Start, warm up and add one replica (or, with ``park``, park it); never raises (failures and
        cancels are recorded).

        The backend's ``start_replica`` runs in its own task and is never interrupted: an engine
        half-way through loading (e.g. in a worker thread) cannot be cancelled safely. A cancelled
        start waits for the engine to come up and stops it at once; a start past
        ``start_timeout_s`` is reported failed and the engine is stopped whenever it comes up (the
        replica stays in the registry, as ``failed``, until then).
        """
        t0 = self.clock.now()
        replica: Replica | None = None
        start: asyncio.Task[Replica] | None = None
        try:
            spec = self.spec_factory(m.placement, m.replica_id)
            start = asyncio.get_running_loop().create_task(self.backend.start_replica(spec, m.replica_id),
                                                           name=f"engine-start-{m.replica_id}")
            try:
                replica = await self.clock.wait_for(asyncio.shield(start), self.start_timeout_s or None)
            except TimeoutError:
                if start.done():  # the backend's own error, not this timeout
                    raise
                m.state = "failed"
                m.reaper = asyncio.get_running_loop().create_task(self._reap(m, start))
                raise EngineStartError(f"engine did not start within {self.start_timeout_s} s", cause="timeout",
                                       replica_id=m.replica_id) from None
            m.replica = replica
            self._record("start", m, True, "", t0)
            t1 = self.clock.now()
            await self._warm(replica)
            self._record("warm", m, True, f"{self.warmup_requests} requests", t1)
            if park:
                await self._park_new(m, replica)
                return
            m.state = "ready"
            self.router.add(replica)
            self._router_call("set_state", m.replica_id, "ready")
        except asyncio.CancelledError:
            m.state = "draining"
            if replica is None and start is not None:
                m.reaper = asyncio.get_running_loop().create_task(self._reap(m, start))
                await asyncio.shield(m.reaper)
            else:
                await self._discard(replica)
                self._replicas.pop(m.replica_id, None)
            self._record("cancel", m, True, "start cancelled: the new target does not need it", t0)
        except Exception as exc:  # noqa: BLE001 - any start/warm-up failure is reported, never raised
            if m.reaper is None:  # else the reaper stops the engine when its start ends
                await self._discard(replica)
                self._replicas.pop(m.replica_id, None)
            kind: StepKind = "warm" if replica is not None else "start"
            cause = getattr(exc, "cause", type(exc).__name__)
            self._record(kind, m, False, f"{cause}: {exc}", t0)
            log.warning("replica %s (%s on %s) failed to %s: %s", m.replica_id, m.placement.variant,
                        m.placement.node, kind, exc)

    async def _reap(self, m: ManagedReplica, start: asyncio.Task[Replica]) -> None:
        """Wait for an abandoned engine start to end, stop the engine, then forget the replica."""
        try:
            replica = await asyncio.shield(start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the abandoned start failed: nothing runs
            log.info("abandoned start of replica %s ended with %r", m.replica_id, exc)
        else:
            await self._discard(replica)
        if self._replicas.get(m.replica_id) is m:
            del self._replicas[m.replica_id]
        m.reaper = None

    async def _discard(self, replica: Replica | None) -> None:
        if replica is None:
            return
        try:
            await asyncio.shield(self.clock.wait_for(replica.stop(), self.stop_timeout_s))
        except Exception as exc:  # noqa: BLE001 - best effort on a replica that never served
            log.warning("stopping replica %s after a failed start failed: %s", replica.replica_id, exc)

    async def _warm(self, replica: Replica) -> None:
        params = SamplingParams(max_tokens=self.warmup_max_tokens, temperature=0.0, ignore_eos=True)

        async def one(i: int) -> None:
            got = 0
            async for chunk in replica.generate(f"warmup-{replica.replica_id}-{i}", self.warmup_prompt, params):
                got += len(chunk.token_ids)
            if got == 0:
                raise EngineStartError(f"warm-up request {i} produced no token", cause="engine_error",
                                       replica_id=replica.replica_id)

        await asyncio.gather(*(one(i) for i in range(self.warmup_requests)))

    # ----------------------------------------------------------------- drains
    async def _drain_stop(self, rid: str, timeout_s: float, migrate: bool = False) -> None:
        m = self._replicas.get(rid)
        if m is None:
            return
        t0 = self.clock.now()
        was_serving = m.state in ("ready", "draining")  # a drain cut short (cancelled) is drained again
        m.state = "draining"
        self._router_call("set_state", rid, "draining")
        self._refresh_routing()
        if m.replica is None:
            if m.reaper is not None:  # an abandoned engine start: wait until it is up and stopped
                await asyncio.shield(m.reaper)
            self._replicas.pop(rid, None)
            self._router_call("remove", rid)
            return
        if was_serving:
            await self._drain_in_flight(m, timeout_s, t0, migrate)
        await self._stop_managed(m, rid)

    async def _stop_managed(self, m: ManagedReplica, rid: str) -> None:
        """Stop ``m`` and forget it; a replica whose stop fails stays as failed (recorded)."""
        assert m.replica is not None
        t1 = self.clock.now()
        try:
            await self.clock.wait_for(m.replica.stop(), self.stop_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported; the replica stays as failed
            m.state = "failed"
            self._router_call("remove", rid)
            self._record("stop", m, False, repr(exc), t1)
            return
        self._replicas.pop(rid, None)
        self._router_call("remove", rid)
        self._record("stop", m, True, "", t1)

    # ----------------------------------------------------------------- routing and records
    def _refresh_routing(self, record: bool = False) -> bool:
        """Push the target routing restricted to ready variants; returns True if it changed."""
        ready = {m.placement.variant for m in self._replicas.values() if m.state == "ready"}
        new = effective_routing(self._target_routing, ready, self._routing)
        if new == self._routing:
            return False
        self._routing = new
        self._router_call("set_routing", new)
        if record:
            now = self.clock.now()
            self._steps.append(StepRecord("route", "", "", "", True, f"routing set for {len(new)} classes", now, now))
        return True

    def _router_call(self, name: str, *args: object) -> None:
        try:
            getattr(self.router, name)(*args)
        except KeyError:
            pass  # the router no longer knows the replica: nothing to do

    def _record(self, kind: StepKind, m: ManagedReplica, ok: bool, detail: str, t0: float) -> None:
        rec = StepRecord(kind, m.replica_id, m.placement.variant, m.placement.node, ok, detail, t0, self.clock.now())
        self._steps.append(rec)
        notify_observers(self.on_step, rec)
