"""The live orchestrator: every control interval, snapshot -> forecast -> plan -> switch.

:class:`Orchestrator` runs the parts it is given: the workload monitor (what arrives; e.g.
:class:`~oserve.workload.monitor.WorkloadMonitor`), the :class:`~oserve.control.controller.Controller`
(the pure decision: forecaster + planner), the :class:`~oserve.control.switcher.Switcher` (the
effects on the backend and the router) and health checks (a dead or hung replica leaves the router
at once and is replaced). :meth:`Orchestrator.build` builds the controller and switcher from a
backend, a forecaster, a planner, the cluster and the profile table. Time comes only from the
switcher's ``clock``; the decision step is :meth:`Orchestrator.step`, which the control loop calls
and which a test may call directly.

Requests do not pass through the orchestrator: the endpoint (:mod:`oserve.server.serving`) routes
and retries them, and reports a replica error it sees to :meth:`Orchestrator.report_replica_error`
(a callback the composition passes to ``create_app``), which health-checks that replica at once.
The Prometheus metrics are listed in :mod:`oserve.control.metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry

from oserve.backends.base import Backend, ReplicaStats
from oserve.clock import Clock, WallClock
from oserve.control.controller import Controller, Decision, bin_history
from oserve.control.health import ProgressTracker
from oserve.control.metrics import OrchestratorMetrics
from oserve.control.options import OrchestratorOptions
from oserve.control.records import StepRecord, SwitchResult
from oserve.control.resources import ResourceModel
from oserve.control.rules import backed_off_starts, planning_base, relocate_plan
from oserve.control.specs import SpecFactory
from oserve.control.surge import FlooredSnapshot, QuietAfter, check_surge, window_rates
from oserve.control.switcher import RouterPort, Switcher
from oserve.control.targets import TargetTracker
from oserve.control.tracked_backend import TrackedBackend
from oserve.errors import ConfigError, EngineStartError, RequestAbortedError
from oserve.profiles.table import ProfileTable
from oserve.types import ClassScheme, ClusterSpec, NodeSpec, Plan

__all__ = ["Orchestrator", "OrchestratorOptions"]

log = logging.getLogger(__name__)


class MonitorPort(Protocol):
    """What the orchestrator needs from the workload monitor (``WorkloadMonitor`` provides it)."""

    scheme: ClassScheme

    def snapshot(self) -> Any: ...

    def rate_history(self) -> tuple[np.ndarray, np.ndarray]: ...

    def update_replica_stats(self, replica_id: str, stats: ReplicaStats | None) -> None: ...

    def forget_replica(self, replica_id: str) -> None: ...


class Orchestrator:
    """Runs the control loop: monitor -> controller -> switcher, plus health checks.

    Args:
        controller: the pure decision step (forecaster + planner).
        switcher: the executor on the backend and the router; its ``clock`` is the loop's clock.
        monitor: the workload monitor the endpoint records into.
        options: the loop's knobs (see :class:`OrchestratorOptions`); defaults when None.
        initial_plan: the plan :meth:`start` deploys; None: the controller's first decision.
        metrics: where to export metrics; None: :class:`OrchestratorMetrics` in a fresh registry.

    No side effects: nothing starts until :meth:`start`.
    """

    def __init__(self, controller: Controller, switcher: Switcher, monitor: MonitorPort, *,
                 options: OrchestratorOptions | None = None, initial_plan: Plan | None = None,
                 metrics: OrchestratorMetrics | None = None, progress: ProgressTracker | None = None) -> None:
        self.options = opt = options or OrchestratorOptions()
        # Fed by every request through the replicas when the switcher's backend is a TrackedBackend
        # (what :meth:`build` makes); its verdicts take a replica out without waiting for a health round.
        self.progress = progress or ProgressTracker(opt.health_policy)
        self.controller = controller
        self.switcher = switcher
        self.monitor = monitor
        self.clock: Clock = switcher.clock
        self.router = switcher.router
        self.backend = switcher.backend
        self.resources = switcher.resources
        self.control_interval_s = opt.control_interval_s
        self.health_interval_s = opt.health_interval_s
        self.health_timeout_s = opt.health_timeout_s
        self.drain_timeout_s = opt.drain_timeout_s
        self.history_bin_s = opt.history_bin_s
        self.initial_plan = initial_plan
        self.metrics = metrics or OrchestratorMetrics()
        self.targets = TargetTracker(on_close=[self.metrics.observe_target])  # switch decisions to their end
        self.switcher.on_result.append(self._switch_done)
        self.switcher.on_step.append(self._step_done)
        self._tasks: list[asyncio.Task[None]] = []
        self._checking: set[str] = set()
        self._checks: set[asyncio.Task[bool]] = set()
        self._last_target: Plan | None = None
        self._start_failed_until_s: dict[tuple[str, str], float] = {}  # (variant, node) -> back-off end
        self._started = False
        self._last_decision_s = -float("inf")
        self._surge_quiet: QuietAfter | None = None  # after a surge decision that changed no replica
        self._deciding = asyncio.Lock()

    @classmethod
    def build(cls, backend: Backend, forecaster: Any, planner: Any, cluster: ClusterSpec, table: ProfileTable, *,
              router: RouterPort, monitor: MonitorPort, spec_factory: SpecFactory, clock: Clock | None = None,
              options: OrchestratorOptions | None = None, initial_plan: Plan | None = None,
              scheme: ClassScheme | None = None, registry: CollectorRegistry | None = None,
              resources: ResourceModel | None = None) -> Orchestrator:
        """Build the controller and the switcher, then the orchestrator (the usual path).

        Args:
            backend: starts replicas (vLLM, TensorRT-LLM, a simulated or fake backend).
            forecaster: an ``oserve.forecast`` forecaster (a fresh instance; the controller fits it).
            planner: an ``oserve.policies`` planner.
            cluster: nodes and devices.
            table: the profile table (memory and per-class capacity per variant).
            router: the request router the endpoint uses (``oserve.server.router.Router``).
            monitor: the workload monitor the endpoint records into.
            spec_factory: ``(placement, replica_id) -> ReplicaSpec`` (from the YAML config).
            clock: time source (:class:`~oserve.clock.WallClock` by default).
            options: every knob (:class:`OrchestratorOptions`).
            initial_plan: the plan :meth:`start` deploys; None: the first decision's plan.
            scheme: request classes; defaults to ``monitor.scheme``.
            registry: Prometheus registry for the metrics; None: a fresh one.
            resources: memory accounting; None builds ``ResourceModel(cluster, table,
                share_cpu_cores=options.share_cpu_cores)``.

        Raises:
            ConfigError: a knob out of range.
        """
        opt = options or OrchestratorOptions()
        controller = Controller(forecaster, planner, cluster, table, scheme if scheme is not None else monitor.scheme,
                                horizon_s=opt.horizon_s, min_history=opt.min_history, history_len=opt.history_len,
                                scale_down_window_s=opt.scale_down_window_s)
        resources = resources or ResourceModel(cluster, table, share_cpu_cores=opt.share_cpu_cores)
        clock = clock or WallClock()
        progress = ProgressTracker(opt.health_policy)
        tracked = TrackedBackend(backend, progress, clock)
        switcher = Switcher(tracked, router, spec_factory, resources, clock=clock,
                            drain_timeout_s=opt.drain_timeout_s, start_timeout_s=opt.start_timeout_s,
                            warmup_requests=opt.warmup_requests, migrate_on_drain=opt.migrate_on_drain,
                            migration_grace_s=opt.migration_grace_s)
        orch = cls(controller, switcher, monitor, options=opt, initial_plan=initial_plan,
                   metrics=OrchestratorMetrics(registry), progress=progress)
        tracked.on_verdict = orch._check_one
        return orch

    # ----------------------------------------------------------------- hooks for subclasses
    def on_decision(self, decision: Decision) -> None:
        """Called after each control decision (before its plan is applied). Override to observe."""

    def on_switch(self, result: SwitchResult) -> None:
        """Called after each transition finishes (whatever its status). Override to observe."""

    def on_replica_failed(self, replica_id: str, reason: str) -> None:
        """Called when a health check takes a replica out. Override to observe."""

    # ----------------------------------------------------------------- views
    @property
    def current_plan(self) -> Plan:
        """The real deployment now: ready replicas and the routing in force."""
        return self.switcher.actual_plan()

    @property
    def target_plan(self) -> Plan | None:
        """The plan being applied or queued, else the last one applied, else None."""
        return self.switcher.target or self._last_target

    @property
    def history(self) -> list[Decision]:
        """Decisions with their inputs, forecast, plan, reason and outcome, oldest first."""
        return self.controller.history

    @property
    def switches(self) -> list[SwitchResult]:
        """Transitions so far, oldest first."""
        return list(self.switcher.results)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    def status(self, last: int = 10) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /admin/plan``: plans, replicas, last decisions and switches."""
        return {
            "time_s": self.clock.now(),
            "running": self._started,
            "busy": self.switcher.busy,
            "pinned": self.controller.pinned is not None,
            "current_plan": self.current_plan.model_dump(mode="json"),
            "target_plan": None if self.target_plan is None else self.target_plan.model_dump(mode="json"),
            "replicas": [
                {"replica_id": m.replica_id, "variant": m.placement.variant, "node": m.placement.node,
                 "device_ids": list(m.placement.device_ids), "state": m.state}
                for m in sorted(self.switcher.replicas.values(), key=lambda m: m.replica_id)
            ],
            "decisions": [d.to_dict() for d in self.history[-last:]],
            "switches": [r.to_dict() for r in self.switches[-last:]],
            "targets": [t.to_dict() for t in self.targets.records[-last:]],
        }

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Deploy the initial plan, then run the control loop and the health checks.

        Raises:
            ConfigError: no ``initial_plan`` and the first decision's plan has no replica.
            EngineStartError: no replica of the initial plan could start.
        """
        if self._started:
            return
        plan = self.initial_plan
        decision: Decision | None = None
        if plan is None:
            decision = await self._decide()
            plan = decision.plan
            if not plan.replicas:
                raise ConfigError("the first plan has no replica; pass initial_plan", field="initial_plan",
                                  allowed="a plan with at least one replica")
        result = await self.switcher.apply(plan)
        self._last_target = plan
        if decision is not None:
            self.controller.record_outcome(decision, _outcome(result))
        if not any(m.state == "ready" for m in self.switcher.replicas.values()):
            causes = "; ".join(s.detail for s in result.failed_steps) or result.status
            raise EngineStartError(f"no replica of the initial plan started: {causes}", cause="engine_error")
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._control_loop(), name="oserve-control"),
                       loop.create_task(self._health_loop(), name="oserve-health")]
        if self.options.surge is not None:
            self._tasks.append(loop.create_task(self._surge_loop(self.options.surge.check_interval_s),
                                                name="oserve-surge"))

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop the loops, then drain and stop every replica (in-flight requests finish up to the
        drain timeout). Idempotent."""
        tasks, self._tasks = self._tasks + list(self._checks), []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.switcher.shutdown(self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s)
        self._started = False
        self.metrics.observe_replicas(self.switcher.replicas.values())

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- control
    def _planning_base(self) -> Plan:
        """The plan the controller compares with: the target in progress, else the last target if the
        real replicas match it, else the real deployment (after a failure)."""
        return planning_base(self.switcher.target, self._last_target, self.switcher.actual_plan())

    async def _decide(self, floor_rps: dict[str, float] | None = None, note: str = "") -> Decision:
        async with self._deciding:  # one decision at a time: ticks, surge checks and pins share the controller
            snap = self.monitor.snapshot()
            if floor_rps:
                snap = FlooredSnapshot(snap, floor_rps)
            ts, rates = bin_history(*self.monitor.rate_history(), self.history_bin_s)
            current = self._planning_base() if (self._started or self.switcher.replicas) else None
            self._last_decision_s = now = self.clock.now()
            # Off the event loop: on the loop a decision stalls every stream the endpoint serves while it runs
            # (MILP solve p99 0.09-0.47 s, first solve up to 0.19 s: bench/results/planner.json; the demo's
            # whole tick measured 20-50 ms), and surge checks now decide at any second, not only on ticks.
            return await asyncio.to_thread(self.controller.tick, now, snap, ts, rates, current, note=note)

    async def step(self, floor_rps: dict[str, float] | None = None, note: str = "") -> Decision:
        """One control step: decide, then hand a changed plan to the switcher (without waiting).

        Args:
            floor_rps: per-class req/s the observed arrival rates are raised to (a surge check's
                short window, :meth:`check_surge`); None: the monitor's window as it is.
            note: prefixed to the decision's reason.

        A changed plan that would start a variant on a node where its start failed less than
        ``options.start_backoff_s`` ago is not submitted (outcome ``backed off: ...``); the current
        deployment stays (:func:`~oserve.control.rules.backed_off_starts`).

        Returns:
            The decision; its ``outcome`` is filled in :attr:`history` when the switch ends.
        """
        decision = await self._decide(floor_rps, note)
        self.metrics.observe_decision(decision)
        self._call_hook(self.on_decision, decision)
        if decision.changed:
            blocked = backed_off_starts(decision.plan, self.switcher.actual_plan(), self._start_failed_until_s,
                                        self.clock.now())
            if blocked:
                names = ", ".join(f"{v} on {n}" for v, n in blocked)
                log.info("plan %s not submitted: %s failed to start recently (back-off)",
                         decision.plan.replica_counts(), names)
                self.controller.record_outcome(decision, f"backed off: {names} failed to start recently")
                return decision
            log.info("new plan %s: %s", decision.plan.replica_counts(), decision.reason[:200])
            try:
                fut = self.switcher.submit(decision.plan)
            except ConfigError as exc:
                log.error("the decided plan is invalid for this cluster; the current plan stays: %s", exc)
                self.controller.record_outcome(decision, f"failed: invalid plan ({exc}; field {exc.field})")
                return decision
            self._last_target = decision.plan
            if decision.replicas_changed:
                self.targets.decided(decision.time_s, decision.plan, self.switcher.actual_plan())
            fut.add_done_callback(lambda f, d=decision: self._record_outcome(d, f))
        else:
            self.controller.record_outcome(decision, "unchanged")
        return decision

    async def pin(self, plan: Plan) -> Decision:
        """Pin ``plan`` (it overrides the planner until :meth:`unpin`) and apply it now.

        Side effects: clears the start back-off (see ``OrchestratorOptions.start_backoff_s``).

        Raises:
            ConfigError: the plan places a replica (active or parked) on an unknown node/device or
                variant; ``field`` names ``plan.replicas...`` or ``plan.parked...``.
        """
        for p in plan.replicas:
            self.resources.check(p)
        for p in plan.parked:
            self.resources.check(p, field="plan.parked")
        self._start_failed_until_s.clear()  # an admin's explicit plan is tried at once
        self.controller.pin(plan)
        return await self.step()

    async def unpin(self) -> Decision:
        """Give control back to the planner and decide now."""
        self.controller.unpin()
        return await self.step()

    async def check_surge(self) -> Decision | None:
        """One surge check (:mod:`oserve.control.surge`): decide now when the last seconds' arrivals
        overload the current plan; skipped while pinned, without a rule, or within ``min_gap_s`` of the
        previous decision.

        Returns:
            The decision made, or None when no surge fired.
        """
        rule = self.options.surge
        if rule is None or not self._started or self.controller.pinned is not None:
            return None
        if self.clock.now() - self._last_decision_s < rule.min_gap_s:
            return None
        names = list(self.monitor.scheme.names)
        rates, recent, arrivals = window_rates(*self.monitor.rate_history(), rule.window_s)
        check = check_surge(rule, self._planning_base(), self.controller.cluster, self.controller.table,
                            dict(zip(names, rates.tolist(), strict=True)), arrivals,
                            dict(zip(names, recent.tolist(), strict=True)))
        if not check.surge or (self._surge_quiet is not None and self._surge_quiet.skips(check, self.clock.now())):
            return None
        log.info("%s: deciding now", check.reason)
        decision = await self.step(check.rates_rps, check.reason)
        self._surge_quiet = None if decision.replicas_changed else \
            QuietAfter(decision.time_s + self.control_interval_s, check.utilization)
        return decision

    async def _surge_loop(self, interval_s: float) -> None:
        while True:
            await self.clock.sleep(interval_s)
            try:
                await self.check_surge()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed check must not end the surge checks
                log.exception("surge check failed")

    async def _control_loop(self) -> None:
        while True:
            await self.clock.sleep(self.control_interval_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed decision must not end the control loop
                log.exception("control step failed; the current plan stays")

    def _record_outcome(self, decision: Decision, fut: asyncio.Future[SwitchResult]) -> None:
        if fut.cancelled():
            self.controller.record_outcome(decision, "cancelled")
            return
        self.controller.record_outcome(decision, _outcome(fut.result()))

    def _step_done(self, step: StepRecord) -> None:
        if step.kind in ("start", "warm") and not step.ok and self.options.start_backoff_s > 0:
            self._start_failed_until_s[(step.variant, step.node)] = self.clock.now() + self.options.start_backoff_s
        if step.kind == "stop" and step.ok and step.replica_id:
            self.monitor.forget_replica(step.replica_id)
        self.targets.observe(step.finished_s, self.switcher.actual_plan())
        self.metrics.observe_replicas(self.switcher.replicas.values())

    def _switch_done(self, result: SwitchResult) -> None:
        self.targets.transition_ended(result.finished_s, result.target, result.actual, result.status)
        if result.replicas_changed:
            log.info("switch %s in %.1f s: now %s (%s)", result.status, result.duration_s,
                     result.actual.replica_counts(), "make-before-break" if result.make_before_break else "rolling")
            self.metrics.transitions.labels(result.status).inc()
            if result.status != "superseded":
                self.metrics.transition_duration.observe(result.duration_s)
        elif result.status != "unchanged":
            self.metrics.routing_updates.inc()
        if result.aborted_requests:
            self.metrics.aborted.inc(result.aborted_requests)
        self.metrics.observe_replicas(self.switcher.replicas.values())
        self._call_hook(self.on_switch, result)

    def _call_hook(self, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 - a user's hook must not break the control loop
            log.exception("hook %s raised", getattr(hook, "__name__", hook))

    # ----------------------------------------------------------------- health
    async def _health_loop(self) -> None:
        while True:
            await self.clock.sleep(self.health_interval_s)
            try:
                await self.check_health()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep checking
                log.exception("health check round failed")

    async def check_health(self) -> list[str]:
        """Check every ready replica once; take out and replace the dead or hung ones.

        A replica still starting is never checked (so never removed for idleness or slowness).
        Stats read on the way are passed to the monitor (None when unreadable).

        Returns:
            Ids of the replicas taken out.
        """
        ready = [m for m in self.switcher.replicas.values() if m.state == "ready" and m.replica is not None]
        results = await asyncio.gather(*(self._check_one(m.replica_id) for m in ready))
        return [rid for rid, ok in zip([m.replica_id for m in ready], results, strict=True) if not ok]

    async def _check_one(self, replica_id: str) -> bool:
        m = self.switcher.replicas.get(replica_id)
        if m is None or m.replica is None or m.state != "ready" or replica_id in self._checking:
            return True
        self._checking.add(replica_id)
        try:
            reason = self.progress.verdict(replica_id, self.clock.now()) or ""
            try:
                ok = reason == "" and await self.clock.wait_for(m.replica.health(), self.health_timeout_s)
                if not ok and not reason:
                    reason = "health check failed"
            except TimeoutError:
                reason = f"health check hung for {self.health_timeout_s} s"
            except Exception as exc:  # noqa: BLE001 - any error from a health probe means unhealthy
                reason = f"health check raised {exc!r}"
            if not reason:
                try:
                    stats: ReplicaStats | None = await self.clock.wait_for(m.replica.stats(), self.health_timeout_s)
                except Exception:  # noqa: BLE001 - unreadable stats are 'unknown', not a failure
                    stats = None
                self.monitor.update_replica_stats(replica_id, stats)
                return True
            await self._take_out(replica_id, m.placement.variant, reason)
            return False
        finally:
            self._checking.discard(replica_id)

    async def _take_out(self, replica_id: str, variant: str, reason: str, *, replace: bool = True) -> None:
        log.warning("replica %s (%s) is taken out: %s", replica_id, variant, reason)
        await self.switcher.replica_failed(replica_id, reason)
        self.monitor.forget_replica(replica_id)
        self.progress.forget(replica_id)
        self.metrics.replica_failures.labels(variant).inc()
        self.metrics.observe_replicas(self.switcher.replicas.values())
        self._call_hook(self.on_replica_failed, replica_id, reason)
        target = self.switcher.target or self._last_target
        if replace and target is not None and self._started:
            # (moved off nodes that left the cluster, if any did since the target was set)
            fut = self.switcher.submit(relocate_plan(target, self.resources).plan, merge=False)
            fut.add_done_callback(lambda f: None if f.cancelled() else log.info("replacement: %s", f.result().status))

    async def update_cluster(self, cluster: ClusterSpec) -> list[str]:
        """The cluster changed (nodes joined or left): plan on ``cluster`` from now on.

        The controller and the switcher's resource model take the new cluster; the pinned plan and
        the last target move their replicas off nodes that are gone
        (:func:`~oserve.control.rules.relocate_plan`); replicas running on those nodes are taken out
        (as a failed health check would); then, if the loop runs, a control step re-plans at once
        (:meth:`step`), so the replacements start on the remaining nodes. Requests that had no
        first token on a replica taken out are retried by the endpoint; the others end with an error.
        The target in force (moved off the gone nodes) is submitted first, so capacity comes back
        even when the planner keeps its plan.

        Args:
            cluster: the nodes now (e.g. ``ClusterSource.cluster``); at least one node.

        Returns:
            Ids of the replicas taken out (those on nodes that left).

        Raises:
            ConfigError: ``cluster`` has no node.

        Side effects: controller, switcher and resource model state; stops replicas; may submit a plan.
        """
        if not cluster.nodes:
            raise ConfigError("the cluster has no node left to plan on", field="cluster.nodes",
                              allowed="at least one node")
        if _node_set(cluster) == _node_set(self.controller.cluster):
            return []
        old = {n.name for n in self.controller.cluster.nodes}
        now = {n.name for n in cluster.nodes}
        log.warning("cluster changed: nodes joined %s, left %s", sorted(now - old) or "none", sorted(old - now) or "none")
        # Synchronous part first, so that a replacement submitted meanwhile already sees the new cluster.
        self.resources = self.resources.with_cluster(cluster)
        self.switcher.resources = self.resources
        self.controller.cluster = cluster
        if self.controller.pinned is not None:
            moved = relocate_plan(self.controller.pinned, self.resources)
            if moved.changed:
                log.warning("pinned plan: %s", moved.plan.reason)
                self.controller.pin(moved.plan)
        target = self.switcher.target or self._last_target
        relocated = None if target is None else relocate_plan(target, self.resources)
        if relocated is not None and relocated.changed:
            log.warning("target plan: %s", relocated.plan.reason)
            self._last_target = relocated.plan
        gone = [m for m in self.switcher.replicas.values() if m.placement.node not in now]
        for m in gone:
            await self._take_out(m.replica_id, m.placement.variant, f"node {m.placement.node} left the cluster",
                                 replace=False)
        if self._started:
            if relocated is not None and (gone or relocated.changed):
                # a fresh transition from the real state to the target on the remaining nodes
                fut = self.switcher.submit(relocated.plan, merge=False)
                fut.add_done_callback(lambda f: None if f.cancelled() else log.info("re-placement: %s",
                                                                                      f.result().status))
            await self.step()  # and let the planner re-plan on the new cluster at once
        return [m.replica_id for m in gone]

    def report_replica_error(self, replica_id: str, error: Exception) -> None:
        """A request saw ``replica_id`` fail: health-check it now, without waiting for the next round.

        The endpoint's request path calls this (``create_app(on_replica_error=...)``); a dead or hung
        replica is taken out and replaced at once, a healthy one stays. Errors that a drain causes
        (:class:`~oserve.errors.RequestAbortedError`) say nothing about the replica and are ignored.

        Side effects: schedules the check as a task of this orchestrator (cancelled by :meth:`stop`).
        """
        if isinstance(error, RequestAbortedError) or not self._started:
            return
        task = asyncio.get_running_loop().create_task(self._check_one(replica_id), name=f"oserve-check-{replica_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)


def _node_set(cluster: ClusterSpec) -> frozenset[NodeSpec]:
    return frozenset(cluster.nodes)


def _outcome(result: SwitchResult) -> str:
    failed = [f"{s.kind} {s.replica_id or s.variant}: {s.detail}" for s in result.failed_steps]
    return result.status + (f" ({'; '.join(failed)})" if failed else "")

