"""Prometheus metrics of the endpoint, in a per-app ``CollectorRegistry``.

One name per quantity. oserve's own series (prefix ``oserve_``):

- ``oserve_requests_total{endpoint, status}``: HTTP answers, by real HTTP status, every endpoint
  (500s of the outermost error guard and 4xx refusals included; a stream counts as 200 once its
  headers were sent, whatever happens later: its outcome is in ``oserve_requests_finished_total``).
- ``oserve_requests_finished_total{endpoint, request_class, finish_reason}``: generation requests
  that were admitted and ended, by outcome: ``stop``, ``length`` (the engine finished),
  ``abort`` (the client disconnected: the engine request was aborted), ``refused`` (the engine
  refused the request: a 4xx or an error event naming the parameter), ``error`` (a server fault:
  replica failure, drain timeout, unexpected error).
- ``oserve_requests_retried_total``: requests retried on another replica after their replica failed
  before the first token.
- ``oserve_requests_resumed_total``: requests resumed on another replica after their replica aborted
  them after the first token (a drain; :mod:`oserve.server.resume`).
- ``oserve_generation_requests_in_flight``: generation requests in flight (the monitor's
  ``oserve_requests_in_flight`` has them per class).
- ``oserve_prompt_tokens_total{request_class}`` / ``oserve_generation_tokens_total{request_class}``:
  prompt tokens of admitted requests and output tokens generated (vLLM's names, ``oserve_`` prefix).
- ``oserve_request_ttft_seconds{request_class}``: time to first token (admission to first token).
- ``oserve_request_tpot_seconds{request_class}``: time per output token after the first,
  ``(e2e - ttft) / (output_tokens - 1)`` (requests with at least 2 output tokens).
- ``oserve_request_e2e_seconds{request_class}``: admission to last token.
- ``oserve_router_ready_replicas``, ``oserve_router_outstanding_requests{replica}``,
  ``oserve_router_pending_prefill_tokens{replica}`` (prompt tokens whose first output token has not
  arrived: the ``prefill-tokens`` replica load), ``oserve_router_fallbacks_total``: read from the router
  at scrape time.
- Router-side queue, read at scrape time: ``oserve_router_queue_length{request_class}`` (requests
  waiting for a free replica slot), ``oserve_router_queue_oldest_age_seconds`` (wait so far of the
  oldest), ``oserve_router_queued_total`` (requests that waited),
  ``oserve_router_queue_timeouts_total`` (503 after ``queue_timeout_s``),
  ``oserve_router_queue_rejected_total`` (429: queue full) and
  ``oserve_router_queue_abandoned_total`` (the client left while queued).

Each engine's own series (``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``,
``vllm:time_to_first_token_seconds``, ...), for replicas that expose them (:class:`EngineMetrics`,
e.g. :class:`oserve.backends.vllm.VLLMReplica`), read at scrape time under their own names with
the engine's labels plus ``replica`` and ``variant``, so dashboards built for vLLM's ``/metrics``
work (one series per replica; aggregate with ``sum by (...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from oserve.server.router import Router

__all__ = ["ServerMetrics", "EngineMetrics", "FINISH_REASONS"]

FINISH_REASONS = ("stop", "length", "abort", "refused", "error")
"""Values of ``finish_reason`` in ``oserve_requests_finished_total`` (see the module docstring)."""


@runtime_checkable
class EngineMetrics(Protocol):
    """A replica that exposes its engine's own Prometheus metrics (optional ability)."""

    def engine_metrics(self) -> Iterable[Metric]:
        """The engine's metric families, read now."""
        ...

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self._router
        yield GaugeMetricFamily("oserve_router_ready_replicas", "Replicas the router may send requests to",
                                value=r.ready_count())
        g = GaugeMetricFamily("oserve_router_outstanding_requests", "Requests in flight per replica",
                              labels=["replica"])
        p = GaugeMetricFamily("oserve_router_pending_prefill_tokens",
                              "Prompt tokens per replica whose first output token has not arrived", labels=["replica"])
        for rep in r.replicas():
            g.add_metric([rep.replica_id], r.outstanding(rep.replica_id))
            p.add_metric([rep.replica_id], r.pending_prefill_tokens(rep.replica_id))
        yield g
        yield p
        yield CounterMetricFamily("oserve_router_fallbacks", "Requests routed outside their class's variants",
                                  value=r.fallbacks)
        q = GaugeMetricFamily("oserve_router_queue_length", "Requests waiting in the router-side queue",
                              labels=["request_class"])
        for cls, (n, _) in sorted(r.queue_by_class().items()):
            q.add_metric([cls], n)
        yield q
        yield GaugeMetricFamily("oserve_router_queue_oldest_age_seconds",
                                "Wait so far of the oldest request in the router-side queue, s",
                                value=r.queue_oldest_age_s())
        for name, doc, value in (
            ("oserve_router_queued", "Requests that waited in the router-side queue", r.queued_total),
            ("oserve_router_queue_timeouts", "Queued requests that timed out (503)", r.queue_timeouts),
            ("oserve_router_queue_rejected", "Requests refused by a full router-side queue (429)", r.queue_rejected),
            ("oserve_router_queue_abandoned", "Queued requests whose client disconnected", r.queue_abandoned),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class _EngineCollector(Collector):
    """Each replica's engine metrics, merged by name, with ``replica`` and ``variant`` labels added."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for rep in self._router.replicas():
            if not isinstance(rep, EngineMetrics):
                continue
            extra = {"replica": rep.replica_id, "variant": rep.spec.variant}
            for fam in rep.engine_metrics():
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                out.samples.extend(s._replace(labels={**s.labels, **extra}) for s in fam.samples)
        yield from merged.values()


class ServerMetrics:
    """The endpoint's metrics, registered in their own registry.

    Args:
        router: the router whose gauges are exported at scrape time.
        registry: where to register; None creates a new ``CollectorRegistry``.
    """

    def __init__(self, router: Router, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.requests = Counter("oserve_requests", "HTTP requests answered, by status", ["endpoint", "status"],
                                registry=reg)
        self.finished = Counter("oserve_requests_finished",
                                "Generation requests ended, by outcome (stop, length, abort = client disconnect, "
                                "refused = engine refusal, error = server fault)",
                                ["endpoint", "request_class", "finish_reason"], registry=reg)
        self.retried = Counter("oserve_requests_retried", "Requests retried on another replica", registry=reg)
        self.resumed = Counter("oserve_requests_resumed", "Requests resumed on another replica after their replica "
                               "aborted them mid-stream (drain)", registry=reg)
        self.in_flight = Gauge("oserve_generation_requests_in_flight", "Generation requests in flight", registry=reg)
        self.prompt_tokens = Counter("oserve_prompt_tokens", "Prompt tokens of admitted requests",
                                     ["request_class"], registry=reg)
        self.generation_tokens = Counter("oserve_generation_tokens", "Output tokens generated", ["request_class"],
                                         registry=reg)
        self.ttft = Histogram("oserve_request_ttft_seconds", "Time to first token, seconds", ["request_class"],
                              buckets=_TTFT_BUCKETS, registry=reg)
        self.tpot = Histogram("oserve_request_tpot_seconds", "Time per output token after the first, seconds",
                              ["request_class"], buckets=_TPOT_BUCKETS, registry=reg)
        self.e2e = Histogram("oserve_request_e2e_seconds", "End-to-end request latency, seconds",
                             ["request_class"], buckets=_E2E_BUCKETS, registry=reg)
        reg.register(_RouterCollector(router))
        reg.register(_EngineCollector(router))

    def finished_total(self, endpoint: str, finish_reason: str) -> float:
        """Generation requests of ``endpoint`` ended with ``finish_reason``, summed over classes."""
        return sum(s.value for m in self.finished.collect() for s in m.samples
                   if s.name.endswith("_total") and s.labels["endpoint"] == endpoint
                   and s.labels["finish_reason"] == finish_reason)

    def observe_latency(self, request_class: str, ttft_s: float | None, e2e_s: float, output_tokens: int) -> None:
        """Record one finished request's TTFT, TPOT and E2E latency (seconds)."""
        if ttft_s is not None:
            self.ttft.labels(request_class).observe(ttft_s)
            if output_tokens >= 2:
                self.tpot.labels(request_class).observe((e2e_s - ttft_s) / (output_tokens - 1))
        self.e2e.labels(request_class).observe(e2e_s)
