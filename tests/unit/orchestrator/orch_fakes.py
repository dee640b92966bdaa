"""Shared fakes and builders for the orchestrator unit tests (no engines)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oserve.backends.base import ReplicaSpec
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.table import ClassProfile, ProfileTable, VariantProfile
from oserve.types import DEFAULT_SCHEME, SLO, ClusterSpec, Demand, Plan, ReplicaPlacement

GIB = 1024**3


def make_table(memory_per_device_bytes: int = 4 * GIB, capacities: dict[str, dict[str, float]] | None = None,
               devices_per_replica: dict[str, int] | None = None, device_type: str = "cpu") -> ProfileTable:
    """CPU variants; by default 'fast' (2 req/s) and 'big' (1 req/s), each serving every class.

    ``capacities[variant][class]`` overrides (classes left out get capacity 0).
    """
    if capacities is None:
        capacities = {"fast": dict.fromkeys(DEFAULT_SCHEME.names, 2.0), "big": dict.fromkeys(DEFAULT_SCHEME.names, 1.0)}
    variants = {}
    for name, caps in capacities.items():
        variants[name] = VariantProfile(
            name=name, model="m", precision="bf16", device_type=device_type,
            devices_per_replica=(devices_per_replica or {}).get(name, 1),
            memory_per_device_bytes=memory_per_device_bytes, weights_bytes=GIB, kv_cache_bytes=GIB,
            kv_bytes_per_token=1024, max_num_seqs=8, max_num_batched_tokens=2048, max_model_len=4096,
            start_time_s=5.0, iteration=IterationTimeModel(b=1e-4, d=1e-2),
            classes={c: ClassProfile(capacity_rps=caps.get(c, 0.0), ttft_s=0.5, tpot_s=0.05, max_concurrency=8)
                     for c in DEFAULT_SCHEME.names},
        )
    return ProfileTable(source="modelled", created="2026-11-29", slo=SLO(), class_names=DEFAULT_SCHEME.names,
                        variants=variants)


def make_cluster(devices: int = 4, memory_bytes: int = 4 * GIB, nodes: int = 1) -> ClusterSpec:
    return ClusterSpec.homogeneous(nodes, devices, "cpu", memory_bytes)


def plan_of(*placements: tuple[str, str, tuple[int, ...]], routing: dict | None = None) -> Plan:
    reps = [ReplicaPlacement(variant=v, node=n, device_ids=d) for v, n, d in placements]
    if routing is None:
        variants = sorted({v for v, _, _ in placements})
        routing = {c: {v: 1.0 / len(variants) for v in variants} for c in DEFAULT_SCHEME.names} if variants else {}
    return Plan(replicas=reps, routing=routing)


@dataclass(frozen=True)
class FakeSnapshot:
    """The fields of a WorkloadSnapshot the controller reads."""

    time_s: float
    class_names: tuple[str, ...]
    arrival_rates_rps: np.ndarray


def snapshot(rates: list[float], t: float = 0.0) -> FakeSnapshot:
    return FakeSnapshot(time_s=t, class_names=tuple(DEFAULT_SCHEME.names), arrival_rates_rps=np.asarray(rates))


@dataclass(frozen=True)
class FakeForecast:
    rates_rps: np.ndarray
    lower_rps: np.ndarray
    upper_rps: np.ndarray


class FakeForecaster:
    """Predicts the mean of the last 3 observations times ``factor``; records calls."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self.calls: list[tuple[str, int]] = []
        self._ts = np.zeros(0)
        self._rates = np.zeros((0, len(DEFAULT_SCHEME)))

    def fit(self, ts: np.ndarray, rates: np.ndarray) -> FakeForecaster:
        self.calls.append(("fit", len(ts)))
        self._ts, self._rates = ts.copy(), rates.copy()
        return self

    def update(self, ts: np.ndarray, rates: np.ndarray) -> FakeForecaster:
        self.calls.append(("update", len(ts)))
        self._ts = np.concatenate([self._ts, ts])
        self._rates = np.concatenate([self._rates, rates])
        return self

    def predict(self, horizon_s: float) -> FakeForecast:
        m = self._rates[-3:].mean(axis=0) * self.factor
        return FakeForecast(rates_rps=m, lower_rps=m * 0.5, upper_rps=m * 1.5)


class FakePlanner:
    """One 'fast' replica per started 2 req/s of total demand (at least one), on cores 0.."""

    def __init__(self, devices: int = 4) -> None:
        self.devices = devices
        self.demands: list[Demand] = []

    def plan(self, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None) -> Plan:
        self.demands.append(demand)
        total = sum(demand.rates_rps.values())
        n = max(1, min(self.devices, int(np.ceil(total / 2.0))))
        return plan_of(*[("fast", "node0", (i,)) for i in range(n)])


def spec_factory(placement: ReplicaPlacement, replica_id: str) -> ReplicaSpec:
    """ReplicaSpec for the fake backend: the variant name is all it needs."""
    return ReplicaSpec(variant=placement.variant, model="fake", served_model_name="fake", max_num_seqs=8,
                       max_model_len=4096, cpu_cores=placement.device_ids)
