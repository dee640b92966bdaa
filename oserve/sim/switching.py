"""Simulated deployment: replicas on devices and the switcher's transitions on simulated time.

The order of work is the live switcher's, from the same pure function
:func:`oserve.switcher.plan_steps` (make-before-break where memory allows, rolling phases otherwise),
and the execution mirrors :class:`oserve.switcher.Switcher` step by step:

* One transition at a time. Each phase starts its replicas concurrently (engine start + weight
  load + warm-up: the variant's ``start_time_s`` plus ``warmup_s``), then the routing shifts
  (:func:`oserve.switcher.effective_routing`), then the phase's replicas drain and stop
  concurrently; a drain that would leave a class without capacity is skipped, as live.
* Draining: the replica takes no new requests at once; its in-flight requests finish up to
  ``drain_timeout_s``, the rest are aborted; the engine then stops (``stop_time_s``) and its memory
  is free for the next phase.
* A target arriving mid-transition replaces any queued one; the running transition stops at its
  next safe point (after the current phase's starts, cancelling those the queued target does not
  need, or after the current phase's drains) and the next transition starts from the real state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from oserve.controller import placement_counts, plans_equal
from oserve.profiles.table import ProfileTable
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.switcher import LiveReplica, ResourceModel, SwitchSteps, covered_classes, effective_routing, plan_steps
from oserve.types import ClusterSpec, Plan, ReplicaPlacement

__all__ = ["SimDeployment", "Transition"]


@dataclass
class Transition:
    """One transition (the simulated counterpart of :class:`oserve.switcher.SwitchResult`).

    Attributes:
        submitted_s: when the decision asked for it, seconds.
        started_s: when the switcher began it (later than ``submitted_s`` if it was queued).
        finished_s: when its last step finished (None while running).
        status: ``applied``, ``partial``, ``superseded`` or ``running``.
        make_before_break: as planned by ``plan_steps``.
        started / drained / cancelled / skipped: replicas started, drained, starts cancelled,
            drains skipped (they would have left a class without capacity).
        aborted_requests: requests aborted by drain timeouts.
    """

    submitted_s: float
    started_s: float
    finished_s: float | None = None
    status: str = "running"
    make_before_break: bool = True
    started: int = 0
    drained: int = 0
    cancelled: int = 0
    skipped: int = 0
    aborted_requests: int = 0

    @property
    def duration_s(self) -> float | None:
        """Decision to new configuration in place, seconds (None while running)."""
        return None if self.finished_s is None else self.finished_s - self.submitted_s

    def to_dict(self) -> dict:
        return {**self.__dict__, "duration_s": self.duration_s}


@dataclass
class _Running:
    target: Plan
    submitted_s: float
    steps: SwitchSteps
    record: Transition
    phase: int = 0
    stage: str = "starts"  # starts | drains
    waiting: set[str] = field(default_factory=set)


class SimDeployment:
    """The replicas of a simulated cluster and the switcher that moves them between plans.

    Args:
        cluster: the nodes.
        table: the profile table (memory per variant, classes each variant serves).
        params: :class:`ReplicaParams` per variant name.
        schedule: ``schedule(time_s, kind, replica)`` provided by the engine, for ``"ready"``,
            ``"stopped"`` and ``"drain_timeout"`` events.
        on_drain: ``on_drain(replica, now_s)``, called when a replica starts draining.
        on_abort: ``on_abort(replica, now_s) -> int``, called at a drain timeout; aborts what is
            left on the replica and returns how many requests it aborted.
        drain_timeout_s: drain time limit, seconds.
        stop_time_s: engine stop time before its memory is free, seconds.
        warmup_s: warm-up time added to each variant's ``start_time_s``, seconds.
        fast_forward: passed to each :class:`SimReplica`.
    """

    def __init__(self, cluster: ClusterSpec, table: ProfileTable, params: dict[str, ReplicaParams],
                 schedule: Callable[[float, str, SimReplica], None],
                 on_drain: Callable[[SimReplica, float], None],
                 on_abort: Callable[[SimReplica, float], int],
                 *, drain_timeout_s: float = 30.0, stop_time_s: float = 5.0, warmup_s: float = 0.0,
                 fast_forward: bool = True) -> None:
        self.cluster = cluster
        self.table = table
        self.params = params
        self.resources = ResourceModel(cluster, table)
        self._schedule = schedule
        self._on_drain = on_drain
        self._on_abort = on_abort
        self.drain_timeout_s = float(drain_timeout_s)
        self.stop_time_s = float(stop_time_s)
        self.warmup_s = float(warmup_s)
        self.fast_forward = fast_forward
        self.replicas: dict[str, SimReplica] = {}
        self.placements: dict[str, ReplicaPlacement] = {}
        self.routing: dict[str, dict[str, float]] = {}
        self._target_routing: dict[str, dict[str, float]] = {}
        self._seq = 0
        self._running: _Running | None = None
        self._queued: tuple[Plan, float] | None = None
        self.transitions: list[Transition] = []
        self.memory_in_use_bytes = 0
        self.on_routing: Callable[[dict[str, dict[str, float]]], None] | None = None
        self.on_ready: Callable[[SimReplica, float], None] | None = None
        self._serving: list[SimReplica] | None = None

    # ------------------------------------------------------------------ views
    def serving(self) -> list[SimReplica]:
        """Ready replicas (they take new requests), in creation order. Do not mutate the list."""
        if self._serving is None:
            self._serving = [r for r in self.replicas.values() if r.state == "ready"]
        return self._serving

    def _changed(self) -> None:
        self._serving = None

    def actual_plan(self) -> Plan:
        """The deployment as it is: ready replicas and the routing in force."""
        reps = [self.placements[r.replica_id] for r in sorted(self.serving(), key=lambda r: r.replica_id)]
        return Plan(replicas=reps, routing=self.routing, reason="actual")

    @property
    def target(self) -> Plan | None:
        """The newest plan asked for that is not yet finished (queued or running), else None."""
        if self._queued is not None:
            return self._queued[0]
        return self._running.target if self._running is not None else None

    @property
    def busy(self) -> bool:
        """True while a transition runs or is queued."""
        return self._running is not None or self._queued is not None

    @property
    def total_memory_bytes(self) -> int:
        return sum(n.devices * n.device_memory_bytes for n in self.cluster.nodes)

    def _live(self) -> list[LiveReplica]:
        return [LiveReplica(rid, self.placements[rid], r.state) for rid, r in self.replicas.items()
                if r.state in ("starting", "ready", "draining")]

    # ------------------------------------------------------------------ helpers
    def _new(self, p: ReplicaPlacement) -> SimReplica:
        rid = f"{p.variant}.{p.node}.{self._seq}"
        self._seq += 1
        r = SimReplica(rid, self.params[p.variant], p.node, tuple(p.device_ids), fast_forward=self.fast_forward)
        self.replicas[rid] = r
        self.placements[rid] = p
        self._changed()
        self.memory_in_use_bytes += r.params.memory_per_device_bytes * len(p.device_ids)
        return r

    def _free(self, r: SimReplica) -> None:
        self.memory_in_use_bytes -= r.params.memory_per_device_bytes * len(r.device_ids)
        self.replicas.pop(r.replica_id, None)
        self.placements.pop(r.replica_id, None)
        self._changed()

    def _refresh_routing(self) -> None:
        ready = {r.variant for r in self.serving()}
        new = effective_routing(self._target_routing, ready, self.routing)
        if new != self.routing:
            self.routing = new
            if self.on_routing is not None:
                self.on_routing(new)

    # ------------------------------------------------------------------ plans
    def deploy_ready(self, plan: Plan, now_s: float) -> None:
        """Place ``plan``'s replicas as already running (the initial deployment: no switch cost).

        Raises:
            ConfigError: a placement names an unknown node, device or variant.
        """
        placed = []
        for p in plan.replicas:
            if not self.resources.fits(placed, p):
                continue
            placed.append(p)
            r = self._new(p)
            r.state = "ready"
            r.ready_s = now_s
        self._changed()
        self._target_routing = {c: dict(w) for c, w in plan.routing.items()}
        self._refresh_routing()

    def submit(self, target: Plan, now_s: float) -> None:
        """Ask for a transition to ``target`` (queued if one runs; the latest queued target wins).

        Raises:
            ConfigError: the target places a replica on an unknown node/device or variant.
        """
        for p in target.replicas:
            self.resources.check(p)
        if self._running is not None:
            if plans_equal(self._running.target, target) and self._queued is None:
                return
            self._queued = (target, now_s)
            self.interrupt(now_s)
            return
        self._begin(target, now_s, now_s)

    def _begin(self, target: Plan, submitted_s: float, now_s: float) -> None:
        self._target_routing = {c: dict(w) for c, w in target.routing.items()}
        steps = plan_steps(self._live(), target, self.resources, self.table)
        if steps.empty:
            self._refresh_routing()
            return
        rec = Transition(submitted_s=submitted_s, started_s=now_s, make_before_break=steps.make_before_break)
        self.transitions.append(rec)
        self._running = _Running(target, submitted_s, steps, rec)
        self._run_phase(now_s)

    def _run_phase(self, now_s: float) -> None:
        run = self._running
        assert run is not None
        if run.phase >= len(run.steps.phases):
            self._finish(now_s, interrupted=False)
            return
        if self._queued is not None:
            self._finish(now_s, interrupted=True)
            return
        ph = run.steps.phases[run.phase]
        run.stage = "starts"
        run.waiting = set()
        for p in ph.starts:
            r = self._new(p)
            r.state = "starting"
            run.waiting.add(r.replica_id)
            run.record.started += 1
            self._schedule(now_s + r.params.start_time_s + self.warmup_s, "ready", r)
        if not run.waiting:
            self._after_starts(now_s)

    def _after_starts(self, now_s: float) -> None:
        run = self._running
        assert run is not None
        self._refresh_routing()
        if self._queued is not None:
            self._finish(now_s, interrupted=True)
            return
        ph = run.steps.phases[run.phase]
        run.stage = "drains"
        run.waiting = set()
        for rid in ph.drains:
            r = self.replicas.get(rid)
            if r is None:
                continue
            if self._drain_blocker(r, run.target, ph.forced):
                run.record.skipped += 1
                continue
            run.waiting.add(rid)
            run.record.drained += 1
            self._drain(r, now_s)
        if not run.waiting:
            self._after_drains(now_s)

    def _after_drains(self, now_s: float) -> None:
        run = self._running
        assert run is not None
        self._refresh_routing()
        run.phase += 1
        self._run_phase(now_s)

    def _finish(self, now_s: float, *, interrupted: bool) -> None:
        run = self._running
        assert run is not None
        self._refresh_routing()
        rec = run.record
        rec.finished_s = now_s
        actual = self.actual_plan()
        if interrupted:
            rec.status = "superseded"
        elif placement_counts(actual) == placement_counts(run.target) and not rec.skipped:
            rec.status = "applied"
        else:
            rec.status = "partial"
        self._running = None
        if self._queued is not None:
            target, submitted = self._queued
            self._queued = None
            self._begin(target, submitted, now_s)

    def _drain_blocker(self, r: SimReplica, target: Plan, forced: bool) -> str:
        """The live switcher's rule: skip a drain that leaves a protected class without capacity."""
        if forced:
            return ""
        ready_all = [x.variant for x in self.serving()]
        ready = list(ready_all)
        if r.state == "ready":
            ready.remove(r.variant)
        protected = covered_classes(ready_all, self.table) & covered_classes(
            (p.variant for p in target.replicas), self.table)
        lost = protected - covered_classes(ready, self.table)
        return f"classes {sorted(lost)} would have no capacity" if lost else ""

    def _unneeded_starts(self) -> list[SimReplica]:
        """Starting replicas the queued target does not need (the live rule, by replica id)."""
        assert self._queued is not None
        want = placement_counts(self._queued[0])
        have = Counter((r.variant, r.node) for r in self.serving())
        out = []
        for rid in sorted(self._running.waiting if self._running else ()):
            r = self.replicas.get(rid)
            if r is None or r.state != "starting":
                continue
            key = (r.variant, r.node)
            if have[key] < want[key]:
                have[key] += 1
            else:
                out.append(r)
        return out

    # ------------------------------------------------------------------ engine events
    def interrupt(self, now_s: float) -> None:
        """Apply a queued target at the running transition's safe point (cancel unneeded starts)."""
        run = self._running
        if run is None or self._queued is None or run.stage != "starts":
            return
        for r in self._unneeded_starts():
            r.state = "stopped"
            r.version += 1
            run.waiting.discard(r.replica_id)
            run.record.cancelled += 1
            self._free(r)
        if not run.waiting:
            self._after_starts(now_s)

    def replica_ready(self, r: SimReplica, now_s: float) -> None:
        """A starting replica is up and warmed. Side effects: it serves from now on."""
        if r.state != "starting":
            return
        r.state = "ready"
        r.ready_s = now_s
        self._changed()
        if self.on_ready is not None:
            self.on_ready(r, now_s)
        run = self._running
        if run is not None and run.stage == "starts" and r.replica_id in run.waiting:
            run.waiting.discard(r.replica_id)
            if not run.waiting:
                self._after_starts(now_s)
        else:
            self._refresh_routing()

    def _drain(self, r: SimReplica, now_s: float) -> None:
        r.state = "draining"
        r.drain_start_s = now_s
        self._changed()
        self._refresh_routing()
        self._on_drain(r, now_s)
        self._schedule(now_s + self.drain_timeout_s, "drain_timeout", r)
        self.maybe_stop(r, now_s)

    def maybe_stop(self, r: SimReplica, now_s: float) -> None:
        """Call when a draining replica may be empty: its engine begins to stop."""
        if r.state == "draining" and r.outstanding == 0 and not r.busy:
            r.state = "stopping"
            self._schedule(now_s + self.stop_time_s, "stopped", r)

    def drain_timeout(self, r: SimReplica, now_s: float) -> None:
        """The drain limit passed: abort what is left, then stop."""
        if r.state != "draining":
            return
        n = self._on_abort(r, now_s)
        if self._running is not None:
            self._running.record.aborted_requests += n
        self.maybe_stop(r, now_s)

    def replica_stopped(self, r: SimReplica, now_s: float) -> None:
        """A stopping replica's engine is gone. Side effects: its memory is free."""
        if r.state != "stopping":
            return
        r.state = "stopped"
        self._free(r)
        run = self._running
        if run is not None and run.stage == "drains" and r.replica_id in run.waiting:
            run.waiting.discard(r.replica_id)
            if not run.waiting:
                self._after_drains(now_s)
