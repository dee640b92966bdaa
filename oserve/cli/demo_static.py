"""The demo's static deployments and its load level, chosen from the profile table (pure functions).

* :func:`static_mixes`: every static deployment of one single-device replica per device, a variant
  per device, up to the order of the devices (e.g. on 2 cores with fp32 and int8: 2 x fp32,
  1 fp32 + 1 int8, 2 x int8).
* :func:`mix_plan`: such a deployment as a :class:`~oserve.types.Plan` whose routing follows what the
  router does without routing weights (least outstanding: each variant gets a class's traffic in
  proportion to its capacity for that class).
* :func:`best_static_mix`: the mix with the most predicted goodput over a demand series (hindsight:
  it sees the whole trace), ties broken by the larger full-precision share of replicas.
* :func:`peak_scale`: the largest multiple of a demand a deployment serves within the SLO by the
  profile; the demo sets its rate so that the trace's peak exceeds the plain fp32 deployment's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

from oserve.policies.evaluate import evaluate
from oserve.policies.problem import ObjectiveWeights
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan, ReplicaPlacement

__all__ = ["static_mixes", "mix_plan", "best_static_mix", "served_fraction", "peak_scale", "mix_name"]

#: planning at the profile's full capacity (no headroom): "what this deployment can serve within SLO".
FULL = ObjectiveWeights(target_utilization=1.0)


def _devices(cluster: ClusterSpec) -> list[tuple[str, int]]:
    return [(n.name, d) for n in cluster.nodes for d in range(n.devices)]


def static_mixes(cluster: ClusterSpec, variants: Sequence[str]) -> list[tuple[str, ...]]:
    """Variant multisets, one variant per device (sorted names), in a stable order."""
    return [tuple(c) for c in combinations_with_replacement(sorted(variants), len(_devices(cluster)))]


def mix_plan(cluster: ClusterSpec, table: ProfileTable, mix: Sequence[str]) -> Plan:
    """The static deployment ``mix`` (one variant per device, in device order) with capacity-share routing.

    Raises:
        ValueError: ``mix`` does not name one variant per device, or a variant is not single-device.
    """
    devs = _devices(cluster)
    if len(mix) != len(devs):
        raise ValueError(f"mix has {len(mix)} variants for {len(devs)} devices")
    replicas = []
    for (node, d), v in zip(devs, mix, strict=True):
        if table.variants[v].devices_per_replica != 1:
            raise ValueError(f"variant {v!r} uses {table.variants[v].devices_per_replica} devices, not 1")
        replicas.append(ReplicaPlacement(variant=v, node=node, device_ids=(d,)))
    routing: dict[str, dict[str, float]] = {}
    for c in table.class_names:
        caps = {v: mix.count(v) * table.variants[v].classes[c].capacity_rps
                for v in set(mix) if c in table.variants[v].classes}
        total = sum(caps.values())
        if total > 0:
            routing[c] = {v: cap / total for v, cap in caps.items()}
    return Plan(replicas=replicas, routing=routing, planner="static-mix", reason="static mix " + mix_name(mix))


def mix_name(mix: Sequence[str]) -> str:
    """``"1 x a + 1 x b"`` for a mix."""
    return " + ".join(f"{mix.count(v)} x {v}" for v in sorted(set(mix)))


def served_fraction(plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand) -> float:
    """Share (0-1) of ``demand`` the plan serves within the SLO by the profile, at full capacity."""
    total = sum(demand.rates_rps.values())
    if total <= 0:
        return 1.0
    return evaluate(plan, cluster, table, demand, None, FULL).goodput_rps / total


def best_static_mix(cluster: ClusterSpec, table: ProfileTable, demands: Sequence[Demand],
                    full_precision: Sequence[str]) -> tuple[tuple[str, ...], dict[str, float]]:
    """The static mix with the most predicted goodput summed over ``demands`` (req/s x intervals).

    Args:
        cluster: the cluster (single-device replicas, one per device).
        table: the profile table restricted to the candidate variants.
        demands: the trace's demand series.
        full_precision: the full-precision variants (a tie within 1% of goodput goes to the mix with
            more of them).

    Returns:
        ``(mix, {mix name: predicted goodput sum})``.

    Raises:
        ValueError: ``demands`` is empty.
    """
    if not demands:
        raise ValueError("best_static_mix needs at least one demand")
    scores: dict[tuple[str, ...], float] = {}
    for mix in static_mixes(cluster, list(table.variants)):
        plan = mix_plan(cluster, table, mix)
        scores[mix] = sum(evaluate(plan, cluster, table, d, None, FULL).goodput_rps for d in demands)
    top = max(scores.values())
    near = [m for m, s in scores.items() if s >= top * 0.99 - 1e-12]
    best = max(near, key=lambda m: (sum(v in full_precision for v in m), scores[m]))
    return best, {mix_name(m): s for m, s in scores.items()}


def peak_scale(plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand, *, hi: float = 1e3) -> float:
    """The largest ``s`` such that ``plan`` serves ``s x demand`` in full (99%) by the profile (bisection)."""
    def ok(s: float) -> bool:
        d = Demand(rates_rps={c: r * s for c, r in demand.rates_rps.items()})
        return served_fraction(plan, cluster, table, d) >= 0.99

    lo, up = 0.0, hi
    if ok(up):
        return up
    for _ in range(60):
        mid = (lo + up) / 2
        lo, up = (mid, up) if ok(mid) else (lo, mid)
    return lo
