"""``/metrics`` exports each replica's engine metrics under the engine's names with ``replica`` and
``variant`` labels (FakeBackend replicas carrying a vLLM-style registry)."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client import CollectorRegistry, Gauge, Histogram, Metric
from prometheus_client.parser import text_string_to_metric_families

from oserve.server.metrics import EngineMetrics
from oserve.testing.fake_backend import FakeReplica


class EngineMetricsFakeReplica(FakeReplica):
    """A fake replica whose fake engine keeps vLLM-named metrics in its own registry."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.running = Gauge("vllm:num_requests_running", "Requests running", labels, registry=self.registry)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", labels, buckets=(0.1, 1.0),
                              registry=self.registry)

    def engine_metrics(self) -> Iterable[Metric]:
        return self.registry.collect()


async def test_engine_metrics_exported_per_replica_with_labels(serve) -> None:
    async with serve(n_replicas=2, replica_class=EngineMetricsFakeReplica) as srv, \
            httpx.AsyncClient(base_url=srv.base_url) as http:
        for i, rep in enumerate(srv.replicas):
            assert isinstance(rep, EngineMetrics)
            rep.running.labels("fake-model", "0").set(i + 1)
            rep.ttft.labels("fake-model", "0").observe(0.5)
        families = {f.name: f for f in text_string_to_metric_families((await http.get("/metrics")).text)}
        running = families["vllm:num_requests_running"]
        assert running.type == "gauge"
        got = {(s.labels["replica"], s.labels["variant"], s.labels["model_name"]): s.value for s in running.samples}
        assert got == {("r0", "v0", "fake-model"): 1.0, ("r1", "v0", "fake-model"): 2.0}
        ttft = families["vllm:time_to_first_token_seconds"]
        counts = [s for s in ttft.samples if s.name.endswith("_count")]
        assert sorted(s.labels["replica"] for s in counts) == ["r0", "r1"] and all(s.value == 1 for s in counts)
        # a replica that leaves the router leaves /metrics
        srv.router.remove("r1")
        families = {f.name: f for f in text_string_to_metric_families((await http.get("/metrics")).text)}
        assert {s.labels["replica"] for s in families["vllm:num_requests_running"].samples} == {"r0"}


async def test_replicas_without_engine_metrics_add_no_vllm_series(serve) -> None:
    async with serve(n_replicas=1) as srv, httpx.AsyncClient(base_url=srv.base_url) as http:
        assert "vllm:" not in (await http.get("/metrics")).text
