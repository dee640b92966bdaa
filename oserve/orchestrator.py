"""The live orchestrator: every control interval, snapshot -> forecast -> plan -> switch.

:class:`Orchestrator` assembles the parts: the :class:`~oserve.monitor.WorkloadMonitor` (what
arrives), the :class:`~oserve.controller.Controller` (the pure decision: forecaster + planner),
the :class:`~oserve.switcher.Switcher` (the effects on the backend and the router) and health
checks (a dead or hung replica leaves the router at once and is replaced). Time comes only from the
``clock``; the decision step is :meth:`Orchestrator.step`, which the control loop calls and which a
test or a simulator may call directly.

Requests go through :meth:`Orchestrator.generate` (or the free function :func:`generate_with_retry`):
a request whose replica fails before its first token is retried on another replica; one that fails
after is ended with :class:`~oserve.errors.RequestAbortedError` (an explicit error, never a hang).

Prometheus metrics (prefix ``oserve_``, in ``registry``; a fresh ``CollectorRegistry`` by default):

- ``oserve_replicas{variant, state}``: replicas the switcher manages, by state
  (``starting``, ``ready``, ``draining``, ``failed``).
- ``oserve_replicas_planned{variant}`` / ``oserve_replicas_actual{variant}``: replicas in the target
  plan vs ready replicas.
- ``oserve_observed_rate_rps{request_class}``, ``oserve_forecast_rate_rps{request_class}``,
  ``oserve_demand_rate_rps{request_class}``: the last decision's inputs, req/s.
- ``oserve_switches_total{status}`` and ``oserve_switch_duration_seconds``: transitions that started
  or stopped replicas; ``oserve_routing_updates_total``: plan changes of routing weights only.
- ``oserve_replica_failures_total{variant}``: replicas taken out by health checks.
- ``oserve_orchestrator_requests_retried_total``, ``..._aborted_total``, ``..._refused_total``:
  requests retried on another replica, aborted (failed after their first token or by a drain
  timeout), refused (no ready replica).
- ``oserve_orchestrator_ttft_seconds``, ``..._tpot_seconds``, ``..._e2e_seconds``
  ``{request_class, variant}`` and ``oserve_orchestrator_requests_slo_met_total{request_class,
  variant}`` for requests served through :meth:`Orchestrator.generate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from oserve.backends.base import Backend, ReplicaStats, SamplingParams, TokenChunk
from oserve.clock import Clock, WallClock
from oserve.controller import Controller, Decision, bin_history, placement_counts
from oserve.errors import ConfigError, EngineStartError, NoReplicaReadyError, ReplicaError, RequestAbortedError
from oserve.policies.plan import ClusterSpec, Plan
from oserve.profiles.table import SLO, ProfileTable
from oserve.replica_health import HealthPolicy, ProgressTracker
from oserve.switcher import ResourceModel, SpecFactory, StepRecord, Switcher, SwitchResult
from oserve.tracked_backend import TrackedBackend
from oserve.workload.classes import ClassScheme

__all__ = ["Orchestrator", "OrchestratorMetrics", "generate_with_retry"]

log = logging.getLogger(__name__)

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_SWITCH_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STATES = ("starting", "ready", "draining", "failed")


class _RouterLike(Protocol):
    def acquire(self, request_class: str | None, needed_tokens: int, **kwargs: Any) -> Any: ...

    def release(self, replica_id: str) -> None: ...

    def add(self, replica: Any) -> None: ...

    def remove(self, replica_id: str) -> Any: ...

    def set_state(self, replica_id: str, state: Any) -> None: ...

    def set_routing(self, routing: dict[str, dict[str, float]]) -> None: ...


class _MonitorLike(Protocol):
    scheme: ClassScheme

    def snapshot(self) -> Any: ...

    def rate_history(self) -> tuple[np.ndarray, np.ndarray]: ...

    def update_replica_stats(self, replica_id: str, stats: ReplicaStats | None) -> None: ...

    def forget_replica(self, replica_id: str) -> None: ...


class OrchestratorMetrics:
    """The orchestrator's Prometheus metrics (see the module docstring for the list).

    Args:
        registry: where to register; None creates a new ``CollectorRegistry``.
        namespace: metric name prefix.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "oserve") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, namespace
        self.replicas = Gauge("replicas", "Replicas managed by the switcher, by variant and state",
                              ["variant", "state"], namespace=ns, registry=r)
        self.planned = Gauge("replicas_planned", "Replicas per variant in the target plan", ["variant"],
                             namespace=ns, registry=r)
        self.actual = Gauge("replicas_actual", "Ready replicas per variant", ["variant"], namespace=ns, registry=r)
        self.observed = Gauge("observed_rate_rps", "Observed arrival rate at the last decision, req/s",
                              ["request_class"], namespace=ns, registry=r)
        self.forecast = Gauge("forecast_rate_rps", "Forecast arrival rate at the last decision, req/s",
                              ["request_class"], namespace=ns, registry=r)
        self.demand = Gauge("demand_rate_rps", "Demand planned for at the last decision, req/s",
                            ["request_class"], namespace=ns, registry=r)
        self.switches = Counter("switches", "Transitions that started or stopped replicas, by outcome", ["status"],
                                namespace=ns, registry=r)
        self.routing_updates = Counter("routing_updates", "Plan changes that only changed routing weights",
                                       namespace=ns, registry=r)
        self.switch_duration = Histogram("switch_duration_seconds", "Duration of transitions that changed replicas",
                                         namespace=ns, registry=r, buckets=_SWITCH_BUCKETS)
        self.replica_failures = Counter("replica_failures", "Replicas taken out by health checks", ["variant"],
                                        namespace=ns, registry=r)
        self.retried = Counter("orchestrator_requests_retried", "Requests retried on another replica before "
                               "their first token", namespace=ns, registry=r)
        self.aborted = Counter("orchestrator_requests_aborted", "Requests aborted after their first token or by "
                               "a drain timeout", namespace=ns, registry=r)
        self.refused = Counter("orchestrator_requests_refused", "Requests refused: no ready replica",
                               namespace=ns, registry=r)
        labels = ["request_class", "variant"]
        self.ttft = Histogram("orchestrator_ttft_seconds", "Time to first token, s", labels, namespace=ns,
                              registry=r, buckets=_TTFT_BUCKETS)
        self.tpot = Histogram("orchestrator_tpot_seconds", "Time per output token after the first, s", labels,
                              namespace=ns, registry=r, buckets=_TPOT_BUCKETS)
        self.e2e = Histogram("orchestrator_e2e_seconds", "End-to-end request latency, s", labels, namespace=ns,
                             registry=r, buckets=_E2E_BUCKETS)
        self._planned_variants: set[str] = set()
        self._replica_variants: set[str] = set()
        self.slo_met = Counter("orchestrator_requests_slo_met", "Requests that met the TTFT and TPOT SLO", labels,
                               namespace=ns, registry=r)

    def observe_decision(self, d: Decision) -> None:
        """Export a decision's rates and planned replicas."""
        for c, v in d.observed_rps.items():
            self.observed.labels(c).set(v)
        for c, v in d.forecast_rps.items():
            self.forecast.labels(c).set(v)
        for c, v in d.demand.rates_rps.items():
            self.demand.labels(c).set(v)
        counts = d.plan.replica_counts()
        self._planned_variants |= set(counts)
        for v in self._planned_variants:
            self.planned.labels(v).set(counts.get(v, 0))

    def observe_replicas(self, switcher: Switcher) -> None:
        """Export replica counts by variant and state from the switcher's registry."""
        counts: dict[tuple[str, str], int] = {}
        for m in switcher.replicas.values():
            counts[(m.placement.variant, m.state)] = counts.get((m.placement.variant, m.state), 0) + 1
        self._replica_variants |= {v for v, _ in counts}
        for v in self._replica_variants:
            for s in _STATES:
                self.replicas.labels(v, s).set(counts.get((v, s), 0))
            self.actual.labels(v).set(counts.get((v, "ready"), 0))


async def generate_with_retry(
    router: _RouterLike,
    request_id: str,
    prompt: str | list[int],
    params: SamplingParams,
    *,
    request_class: str | None,
    needed_tokens: int,
    prompt_tokens: int | None = None,
    max_attempts: int = 3,
    wait_for_replica_s: float = 0.0,
    clock: Clock | None = None,
    on_replica_error: Callable[[str, Exception], Awaitable[None] | None] | None = None,
    metrics: OrchestratorMetrics | None = None,
    slo: SLO | None = None,
) -> AsyncIterator[TokenChunk]:
    """Stream a request through the router; retry it on another replica if its replica fails first.

    A replica error before the first output token (the engine died, was killed or stopped, or its
    drain aborted the request while it waited) sends the request to another ready replica (the
    ones tried are excluded), up to ``max_attempts`` replicas in all. An error after the first
    token ends the stream with :class:`RequestAbortedError` (its text cannot be taken back).

    Args:
        router: picks replicas (``acquire(request_class, needed_tokens, exclude=...)`` / ``release``).
        request_id: the request's id; retries use ``"<id>.retry<n>"`` on the new replica.
        prompt: prompt text or token ids.
        params: sampling parameters.
        request_class: the class name the request was classified into at admission.
        needed_tokens: prompt tokens + ``max_tokens``.
        prompt_tokens: prompt tokens (for the router's error message), or None.
        max_attempts: replicas to try in all (>= 1).
        wait_for_replica_s: on a retry, how long to wait for another ready replica, seconds.
        clock: for latency metrics and waiting (WallClock by default).
        on_replica_error: called with ``(replica_id, error)`` when a replica fails a request
            (the orchestrator health-checks that replica at once).
        metrics: where to count retries/aborts/refusals and observe TTFT/TPOT/E2E.
        slo: counts requests meeting it in ``metrics.slo_met``.

    Yields:
        The replica's token chunks.

    Raises:
        NoReplicaReadyError: no ready replica (refused; 503 with ``Retry-After``).
        RequestAbortedError: failed after the first token, or on every replica tried.
        InvalidRequestError: from the router or replica (the request itself is invalid).
    """
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}", field="max_attempts", allowed=">= 1")
    clock = clock or WallClock()
    t0 = clock.now()
    tried: list[str] = []
    last_exc: Exception | None = None
    for attempt in range(max_attempts):
        replica = await _acquire(router, request_class, needed_tokens, prompt_tokens, tried,
                                 wait_for_replica_s if attempt else 0.0, clock, metrics)
        rid = replica.replica_id
        variant = replica.spec.variant
        sub_id = request_id if attempt == 0 else f"{request_id}.retry{attempt}"
        first_s: float | None = None
        tokens = 0
        try:
            async for chunk in replica.generate(sub_id, prompt, params):
                if chunk.token_ids and first_s is None:
                    first_s = clock.now()
                tokens = chunk.completion_tokens
                yield chunk
            if metrics is not None and first_s is not None:
                _observe_latency(metrics, slo, request_class or "", variant, t0, first_s, clock.now(), tokens)
            return
        except ReplicaError as exc:
            last_exc = exc
            if on_replica_error is not None and not isinstance(exc, RequestAbortedError):
                maybe = on_replica_error(rid, exc)
                if asyncio.iscoroutine(maybe):
                    await maybe
            if first_s is not None:
                if metrics is not None:
                    metrics.aborted.inc()
                raise RequestAbortedError(
                    f"request {request_id} aborted after {tokens} output tokens: replica {rid} failed ({exc})",
                    replica_id=rid, code="replica_failed_mid_stream") from exc
            tried.append(rid)
            if attempt + 1 < max_attempts and metrics is not None:
                metrics.retried.inc()
            log.info("request %s failed on replica %s before its first token (%s); retrying", request_id, rid, exc)
        finally:
            router.release(rid)
    if metrics is not None:
        metrics.aborted.inc()
    raise RequestAbortedError(f"request {request_id} failed on {len(tried)} replicas: {last_exc}",
                              replica_id=tried[-1] if tried else None, code="retries_exhausted")


async def _acquire(router: _RouterLike, request_class: str | None, needed_tokens: int, prompt_tokens: int | None,
                   tried: list[str], wait_s: float, clock: Clock, metrics: OrchestratorMetrics | None) -> Any:
    deadline = clock.now() + wait_s
    while True:
        try:
            return router.acquire(request_class, needed_tokens, prompt_tokens=prompt_tokens, exclude=tuple(tried))
        except NoReplicaReadyError:
            if clock.now() >= deadline:
                if metrics is not None:
                    metrics.refused.inc()
                raise
            await clock.sleep(min(0.05, max(0.0, deadline - clock.now())))


def _observe_latency(m: OrchestratorMetrics, slo: SLO | None, cls: str, variant: str, t0: float, first_s: float,
                     end_s: float, tokens: int) -> None:
    ttft = first_s - t0
    m.ttft.labels(cls, variant).observe(ttft)
    m.e2e.labels(cls, variant).observe(end_s - t0)
    tpot = (end_s - first_s) / (tokens - 1) if tokens > 1 else 0.0
    if tokens > 1:
        m.tpot.labels(cls, variant).observe(tpot)
    if slo is not None and ttft <= slo.ttft_s and tpot <= slo.tpot_s:
        m.slo_met.labels(cls, variant).inc()


class Orchestrator:
    """Runs the control loop on a backend: monitor -> controller -> switcher, plus health checks.

    Args:
        backend: starts replicas (vLLM, TensorRT-LLM, a simulated or fake backend).
        forecaster: an ``oserve.forecast`` forecaster (a fresh instance; the controller fits it).
        planner: an ``oserve.policies`` planner.
        cluster: nodes and devices.
        table: the profile table (memory and per-class capacity per variant).
        slo: latency targets; requests meeting them are counted in ``oserve_orchestrator_requests_slo_met``.
        router: the request router the endpoint uses (``oserve.router.Router``).
        monitor: the workload monitor the endpoint records into (``oserve.monitor.WorkloadMonitor``).
        spec_factory: ``(placement, replica_id) -> ReplicaSpec`` (from the YAML config).
        clock: time source (WallClock by default).
        control_interval_s: seconds between decisions (> 0).
        horizon_s: forecast horizon, seconds (> 0).
        drain_timeout_s: how long in-flight requests may finish on a draining replica, seconds.
        initial_plan: the plan :meth:`start` deploys; None: the controller's first decision.
        scheme: request classes; defaults to ``monitor.scheme``.
        min_history: history bins before the forecaster is fitted (see :class:`Controller`).
        history_bin_s: the monitor's per-second rate history is averaged into bins this wide
            (seconds) before it reaches the forecaster (:func:`oserve.controller.bin_history`, as
            the simulator does); 1 keeps per-second observations.
        health_interval_s: seconds between health checks of ready replicas (> 0).
        health_timeout_s: a replica whose ``health()`` takes longer is hung (treated as dead), s.
        health_policy: bounds of the progress judgement (:mod:`oserve.replica_health`): a replica
            whose requests make no progress, or that fails several requests in a row, is taken out.
        warmup_requests: real requests sent to each new replica before it gets traffic.
        start_timeout_s: how long an engine may take to start, seconds.
        max_attempts: replicas a request may be tried on (see :func:`generate_with_retry`).
        retry_wait_s: how long a retried request waits for another ready replica, seconds.
        registry: Prometheus registry for the metrics; None: a fresh one (``self.metrics.registry``).
        resources: memory accounting; None builds ``ResourceModel(cluster, table,
            share_cpu_cores=share_cpu_cores)``.
        share_cpu_cores: let old and new replicas share CPU cores during a switch (see
            :class:`~oserve.switcher.ResourceModel`); ignored when ``resources`` is given.
        history_len: decisions kept in :attr:`history`.

    Raises:
        ConfigError: an interval or timeout out of range.

    No side effects: nothing starts until :meth:`start`.
    """

    def __init__(
        self,
        backend: Backend,
        forecaster: Any,
        planner: Any,
        cluster: ClusterSpec,
        table: ProfileTable,
        slo: SLO,
        *,
        router: _RouterLike,
        monitor: _MonitorLike,
        spec_factory: SpecFactory,
        clock: Clock | None = None,
        control_interval_s: float = 10.0,
        horizon_s: float = 60.0,
        drain_timeout_s: float = 30.0,
        initial_plan: Plan | None = None,
        scheme: ClassScheme | None = None,
        min_history: int = 6,
        history_bin_s: float = 1.0,
        health_interval_s: float = 2.0,
        health_timeout_s: float = 5.0,
        warmup_requests: int = 2,
        start_timeout_s: float = 600.0,
        max_attempts: int = 3,
        retry_wait_s: float = 5.0,
        registry: CollectorRegistry | None = None,
        resources: ResourceModel | None = None,
        share_cpu_cores: bool = True,
        history_len: int = 256,
        health_policy: HealthPolicy | None = None,
    ) -> None:
        for name, val in (("control_interval_s", control_interval_s), ("health_interval_s", health_interval_s),
                          ("health_timeout_s", health_timeout_s), ("history_bin_s", history_bin_s)):
            if not val > 0:
                raise ConfigError(f"{name} must be > 0, got {val}", field=name, allowed="> 0 seconds")
        self.backend = backend
        self.cluster = cluster
        self.table = table
        self.slo = slo
        self.router = router
        self.monitor = monitor
        self.clock = clock or WallClock()
        self.control_interval_s = float(control_interval_s)
        self.health_interval_s = float(health_interval_s)
        self.health_timeout_s = float(health_timeout_s)
        self.drain_timeout_s = float(drain_timeout_s)
        self.max_attempts = int(max_attempts)
        self.retry_wait_s = float(retry_wait_s)
        self.history_bin_s = float(history_bin_s)
        self.initial_plan = initial_plan
        self.scheme = scheme if scheme is not None else monitor.scheme
        self.controller = Controller(forecaster, planner, cluster, table, self.scheme, horizon_s=horizon_s,
                                     min_history=min_history, history_len=history_len)
        self.resources = resources or ResourceModel(cluster, table, share_cpu_cores=share_cpu_cores)
        self.progress = ProgressTracker(health_policy)  # fed by every request through the replicas
        tracked = TrackedBackend(backend, self.progress, self.clock, on_verdict=self._check_one)
        self.switcher = Switcher(tracked, router, spec_factory, self.resources, clock=self.clock,
                                 drain_timeout_s=drain_timeout_s, start_timeout_s=start_timeout_s,
                                 warmup_requests=warmup_requests)
        self.metrics = OrchestratorMetrics(registry)
        self.switcher.on_result.append(self._switch_done)
        self.switcher.on_step.append(self._step_done)
        self._tasks: list[asyncio.Task[None]] = []
        self._checking: set[str] = set()
        self._last_target: Plan | None = None
        self._started = False

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
            decision = self._decide()
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

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop the loops, then drain and stop every replica (in-flight requests finish up to the
        drain timeout). Idempotent."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.switcher.shutdown(self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s)
        self._started = False
        self.metrics.observe_replicas(self.switcher)

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- control
    def _planning_base(self) -> Plan:
        """The plan the controller compares with: the target in progress, else the last target if the
        real replicas match it, else the real deployment (after a failure)."""
        t = self.switcher.target
        if t is not None:
            return t
        actual = self.switcher.actual_plan()
        if self._last_target is not None and placement_counts(actual) == placement_counts(self._last_target):
            return self._last_target
        return actual

    def _decide(self) -> Decision:
        snap = self.monitor.snapshot()
        ts, rates = bin_history(*self.monitor.rate_history(), self.history_bin_s)
        current = self._planning_base() if (self._started or self.switcher.replicas) else None
        return self.controller.tick(self.clock.now(), snap, ts, rates, current)

    async def step(self) -> Decision:
        """One control step: decide, then hand a changed plan to the switcher (without waiting).

        Returns:
            The decision; its ``outcome`` is filled in :attr:`history` when the switch ends.
        """
        decision = self._decide()
        self.metrics.observe_decision(decision)
        self._call_hook(self.on_decision, decision)
        if decision.changed:
            log.info("new plan %s: %s", decision.plan.replica_counts(), decision.reason[:200])
            try:
                fut = self.switcher.submit(decision.plan)
            except ConfigError as exc:
                log.error("the decided plan is invalid for this cluster; the current plan stays: %s", exc)
                self.controller.record_outcome(decision, f"failed: invalid plan ({exc}; field {exc.field})")
                return decision
            self._last_target = decision.plan
            fut.add_done_callback(lambda f, d=decision: self._record_outcome(d, f))
        else:
            self.controller.record_outcome(decision, "unchanged")
        return decision

    async def pin(self, plan: Plan) -> Decision:
        """Pin ``plan`` (it overrides the planner until :meth:`unpin`) and apply it now.

        Raises:
            ConfigError: the plan places a replica on an unknown node/device or variant.
        """
        for p in plan.replicas:
            self.resources.check(p)
        self.controller.pin(plan)
        return await self.step()

    async def unpin(self) -> Decision:
        """Give control back to the planner and decide now."""
        self.controller.unpin()
        return await self.step()

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
        if step.kind == "stop" and step.ok and step.replica_id:
            self.monitor.forget_replica(step.replica_id)
        self.metrics.observe_replicas(self.switcher)

    def _switch_done(self, result: SwitchResult) -> None:
        if result.replicas_changed:
            log.info("switch %s in %.1f s: now %s (%s)", result.status, result.duration_s,
                     result.actual.replica_counts(), "make-before-break" if result.make_before_break else "rolling")
            self.metrics.switches.labels(result.status).inc()
            if result.status != "superseded":
                self.metrics.switch_duration.observe(result.duration_s)
        elif result.status != "unchanged":
            self.metrics.routing_updates.inc()
        if result.aborted_requests:
            self.metrics.aborted.inc(result.aborted_requests)
        self.metrics.observe_replicas(self.switcher)
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
                ok = reason == "" and await asyncio.wait_for(m.replica.health(), self.health_timeout_s)
                if not ok and not reason:
                    reason = "health check failed"
            except TimeoutError:
                reason = f"health check hung for {self.health_timeout_s} s"
            except Exception as exc:  # noqa: BLE001 - any error from a health probe means unhealthy
                reason = f"health check raised {exc!r}"
            if not reason:
                try:
                    stats: ReplicaStats | None = await asyncio.wait_for(m.replica.stats(), self.health_timeout_s)
                except Exception:  # noqa: BLE001 - unreadable stats are 'unknown', not a failure
                    stats = None
                self.monitor.update_replica_stats(replica_id, stats)
                return True
            await self._take_out(replica_id, m.placement.variant, reason)
            return False
        finally:
            self._checking.discard(replica_id)

    async def _take_out(self, replica_id: str, variant: str, reason: str) -> None:
        log.warning("replica %s (%s) is taken out: %s", replica_id, variant, reason)
        self.progress.forget(replica_id)
        await self.switcher.replica_failed(replica_id, reason)
        self.monitor.forget_replica(replica_id)
        self.metrics.replica_failures.labels(variant).inc()
        self.metrics.observe_replicas(self.switcher)
        self._call_hook(self.on_replica_failed, replica_id, reason)
        target = self.switcher.target or self._last_target
        if target is not None and self._started:
            fut = self.switcher.submit(target, merge=False)
            fut.add_done_callback(lambda f: None if f.cancelled() else log.info("replacement: %s", f.result().status))

    async def report_replica_error(self, replica_id: str, error: Exception) -> None:
        """A request failed on ``replica_id``: health-check it now (it is replaced if dead)."""
        await self._check_one(replica_id)

    # ----------------------------------------------------------------- requests
    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams, *,
                 request_class: str | None, needed_tokens: int,
                 prompt_tokens: int | None = None) -> AsyncIterator[TokenChunk]:
        """Stream a request through the router with retry (see :func:`generate_with_retry`).

        The endpoint records admission/first token/completion in the monitor itself; this method
        adds the retry, the health check of a failing replica and the per-variant latency metrics.
        """
        return generate_with_retry(
            self.router, request_id, prompt, params, request_class=request_class, needed_tokens=needed_tokens,
            prompt_tokens=prompt_tokens, max_attempts=self.max_attempts, wait_for_replica_s=self.retry_wait_s,
            clock=self.clock, on_replica_error=self.report_replica_error, metrics=self.metrics, slo=self.slo,
        )


def _outcome(result: SwitchResult) -> str:
    failed = [f"{s.kind} {s.replica_id or s.variant}: {s.detail}" for s in result.failed_steps]
    return result.status + (f" ({'; '.join(failed)})" if failed else "")

