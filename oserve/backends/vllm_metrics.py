"""Per-replica engine statistics of the vLLM backend: the stat logger oserve reads (running, waiting,
KV-cache usage) and vLLM's own Prometheus ``vllm:*`` metrics bound to one registry per replica.
"""

from __future__ import annotations

import time
from typing import Any


class StatsRecorder:
    """A vLLM stat logger keeping the latest scheduler stats of one engine.

    vLLM calls ``record`` after every engine step with ``SchedulerStats`` (running and waiting
    requests, KV-cache usage as a fraction).
    """

    def __init__(self) -> None:
        self.running: int | None = None
        self.waiting: int | None = None
        self.kv_cache_usage: float | None = None
        self.updated_at: float | None = None

    def factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        recorder = self

        class OserveStatLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                if scheduler_stats is not None:
                    recorder.running = int(scheduler_stats.num_running_reqs)
                    recorder.waiting = int(scheduler_stats.num_waiting_reqs)
                    recorder.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
                    recorder.updated_at = time.monotonic()

            def log_engine_initialized(self) -> None:
                pass

        return OserveStatLogger


def registry_bound(cls: type, registry: Any) -> type:
    """A subclass of a ``prometheus_client`` metric class registering in ``registry`` by default."""

    class Bound(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # Labelled children are built with ``_labelvalues`` and never register themselves.
            kwargs.setdefault("registry", registry)
            super().__init__(*args, **kwargs)

    Bound.__name__ = Bound.__qualname__ = cls.__name__
    return Bound


def prometheus_logger_factory(registry: Any) -> Any:
    """vLLM's own ``PrometheusStatLogger`` writing into ``registry`` instead of the global one.

    vLLM 0.32's ``AsyncLLM`` records its ``vllm:*`` metrics (``vllm:num_requests_running``,
    ``vllm:kv_cache_usage_perc``, ``vllm:time_to_first_token_seconds``, ...) with one
    ``PrometheusStatLogger`` per engine client, in ``prometheus_client``'s global registry, where a
    second engine in the same process replaces the first (its constructor unregisters every
    ``vllm:`` collector). Passing this subclass as a custom stat logger makes vLLM use it instead of
    its default one (``StatLoggerManager`` adds the default only when no custom logger is a
    ``PrometheusStatLogger``), so each replica keeps its own complete set, which the endpoint's
    ``/metrics`` exports with ``replica`` and ``variant`` labels. Speculative-decoding and
    performance counters (off unless configured) are bound to the same registry; KV/EC-connector
    metrics exist only with a KV-transfer configuration, which oserve does not set.
    """
    from prometheus_client import Counter, Gauge, Histogram
    from vllm.v1.metrics.loggers import PrometheusStatLogger
    from vllm.v1.metrics.perf import PerfMetricsProm
    from vllm.v1.spec_decode.metrics import SpecDecodingProm

    counter = registry_bound(Counter, registry)

    class _SpecDecoding(SpecDecodingProm):
        _counter_cls = counter

    class _Perf(PerfMetricsProm):
        _counter_cls = counter

    class ReplicaPrometheusStatLogger(PrometheusStatLogger):
        _gauge_cls = registry_bound(Gauge, registry)
        _counter_cls = counter
        _histogram_cls = registry_bound(Histogram, registry)
        _spec_decoding_cls = _SpecDecoding
        _perf_metrics_cls = _Perf

    return ReplicaPrometheusStatLogger
