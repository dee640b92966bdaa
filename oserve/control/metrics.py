"""The orchestrator's Prometheus metrics (prefix ``oserve_``, in their own ``CollectorRegistry`` by default).

- ``oserve_replicas{variant, state}``: replicas the switcher manages, by state
  (``starting``, ``ready``, ``draining``, ``failed``).
- ``oserve_replicas_planned{variant}`` / ``oserve_replicas_actual{variant}``: replicas in the target
  plan vs ready replicas.
- ``oserve_observed_rate_rps{request_class}``, ``oserve_forecast_rate_rps{request_class}``,
  ``oserve_demand_rate_rps{request_class}``: the last decision's inputs, req/s.
- ``oserve_switches_total{outcome}``: control decisions that changed the replica set, counted when
  they end as ``reached``, ``superseded`` or ``abandoned`` (:mod:`oserve.control.targets`);
  ``oserve_reconfig_seconds``: time from such a decision to its replica set being ready (reached only).
- ``oserve_transitions_total{status}`` and ``oserve_transition_duration_seconds``: the switcher's
  transitions that started or stopped replicas (several may serve one switch);
  ``oserve_routing_updates_total``: plan changes of routing weights only.
- ``oserve_missing_class_alarm{request_class}``: 1 while a class with demand has no capacity in the
  profile table (the controller then never removes running replicas), else 0.
- ``oserve_replica_failures_total{variant}``: replicas taken out by health checks.
- ``oserve_orchestrator_requests_aborted_total``: requests aborted by drain timeouts.

Request latencies (TTFT, TPOT, end to end), retries and refusals are the endpoint's metrics
(:mod:`oserve.server.metrics`): every request takes the endpoint's path.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from oserve.control.controller import Decision
from oserve.control.switcher import ManagedReplica
from oserve.control.targets import TargetRecord

__all__ = ["OrchestratorMetrics"]

_SWITCH_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STATES = ("starting", "ready", "draining", "failed")


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
        self.switches = Counter("switches", "Control decisions that changed the replica set, by outcome",
                                ["outcome"], namespace=ns, registry=r)
        self.reconfig = Histogram("reconfig_seconds", "Time from a switch decision to its replica set ready",
                                  namespace=ns, registry=r, buckets=_SWITCH_BUCKETS)
        self.transitions = Counter("transitions", "Switcher transitions that started or stopped replicas, by status",
                                   ["status"], namespace=ns, registry=r)
        self.missing_class = Gauge("missing_class_alarm", "1 while a class with demand has no capacity in the table",
                                   ["request_class"], namespace=ns, registry=r)
        self.routing_updates = Counter("routing_updates", "Plan changes that only changed routing weights",
                                       namespace=ns, registry=r)
        self.transition_duration = Histogram("transition_duration_seconds",
                                             "Duration of transitions that changed replicas",
                                             namespace=ns, registry=r, buckets=_SWITCH_BUCKETS)
        self.replica_failures = Counter("replica_failures", "Replicas taken out by health checks", ["variant"],
                                        namespace=ns, registry=r)
        self.aborted = Counter("orchestrator_requests_aborted", "Requests aborted by drain timeouts",
                               namespace=ns, registry=r)
        self._planned_variants: set[str] = set()
        self._replica_variants: set[str] = set()

    def observe_decision(self, d: Decision) -> None:
        """Export a decision's rates and planned replicas."""
        for c, v in d.observed_rps.items():
            self.observed.labels(c).set(v)
        for c, v in d.forecast_rps.items():
            self.forecast.labels(c).set(v)
        for c, v in d.demand.rates_rps.items():
            self.demand.labels(c).set(v)
        alarmed = {a.split(": ", 1)[1].rsplit(" (", 1)[0] for a in d.alarms if a.startswith("missing-class: ")}
        for c in d.demand.rates_rps:
            self.missing_class.labels(c).set(1.0 if c in alarmed else 0.0)
        counts = d.plan.replica_counts()
        self._planned_variants |= set(counts)
        for v in self._planned_variants:
            self.planned.labels(v).set(counts.get(v, 0))

    def observe_target(self, rec: TargetRecord) -> None:
        """Count a switch decision that ended (and its time to target when reached)."""
        self.switches.labels(rec.status).inc()
        if rec.reconfig_s is not None:
            self.reconfig.observe(rec.reconfig_s)

    def observe_replicas(self, replicas: Iterable[ManagedReplica]) -> None:
        """Export replica counts by variant and state from the switcher's registry (its ``replicas.values()``)."""
        counts: dict[tuple[str, str], int] = {}
        for m in replicas:
            counts[(m.placement.variant, m.state)] = counts.get((m.placement.variant, m.state), 0) + 1
        self._replica_variants |= {v for v, _ in counts}
        for v in self._replica_variants:
            for s in _STATES:
                self.replicas.labels(v, s).set(counts.get((v, s), 0))
            self.actual.labels(v).set(counts.get((v, "ready"), 0))
