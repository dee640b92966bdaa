"""The one scoring function every planner's plan goes through, and a plan validity check.

Goodput model (time sharing): a replica of variant ``v`` serving class ``c`` alone sustains
``cap[v, c]`` req/s within the SLO, planned at ``cap[v, c] = target_utilization * capacity_rps``
(the profile table's capacity less the headroom of :class:`ObjectiveWeights`). A replica serving a mix spends
``load_c / cap[v, c]`` of its time on class ``c``; the variant's replicas are feasible while
``sum_c load_c / cap[v, c] <= replicas_v``. Routed load beyond that is served within SLO in
proportion ``replicas_v / sum_c load_c / cap[v, c]`` (every class on that variant equally), and load
routed to a variant with no capacity for the class earns nothing. Goodput is the sum over classes
of the load served within SLO, req/s. The load is the whole demand times the routing shares:
``Plan.admit_rps`` is advisory (what the plan serves within SLO where demand exceeds it) and no
router, simulator or orchestrator enforces it, so it is not credited: traffic beyond a variant's
capacity is still routed there and degrades every class on it (the proportion above).

Spare capacity (``fill_idle_devices``, the default): the plan's planned capacity is its headroom, the
largest rate of the current demand mix its replicas carry with every class routed to every replica that
serves it in proportion to capacity (req/s, :func:`oserve.policies.problem.pooled_headroom`; the routing
:func:`oserve.policies.base.build_plan` gives when it overloads nothing, and a replica that cannot serve the
class limiting the mix adds nothing for it), worth ``spare_capacity_value`` (default 0.005) req/s of
objective per req/s. Demand is fixed within one planning problem, so rewarding planned capacity rewards
spare capacity (planned capacity beyond the demand), and the reward does not depend on routing. Idle
devices therefore host
replicas (lower queueing, better tail latency) and no device cost is charged; goodput dominates (a plan gives up
1 req/s of goodput only for 200 req/s more planned capacity). ``spare_capacity_rps`` reports, per
variant, the replica time left after its routed load times its mix capacity. With ``fill_idle_devices=False``
the planned capacity earns nothing and every device used costs ``device_cost_rps``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from oserve.errors import ConfigError, ProfileError
from oserve.policies.problem import ObjectiveWeights, mix_capacity, validate_demand, validate_min_quality
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan, PlanScore

__all__ = ["evaluate", "check_plan"]

_EPS = 1e-9


def _replica_key(r: object) -> tuple[str, str, tuple[int, ...]]:
    return (r.variant, r.node, tuple(r.device_ids))  # type: ignore[attr-defined]


def switch_start_s(plan: Plan, current: Plan | None, table: ProfileTable) -> float:
    """Summed start time (s) of replicas in ``plan`` not in ``current`` plus those in ``current`` not in ``plan``.

    A replica is identified by (variant, node, device ids); keeping it in place costs nothing.
    """
    if current is None:
        return 0.0
    new = Counter(_replica_key(r) for r in plan.replicas)
    old = Counter(_replica_key(r) for r in current.replicas)
    total = 0.0
    for key, n in ((new - old) + (old - new)).items():
        v = table.variants.get(key[0])
        total += n * (v.start_time_s if v is not None else 0.0)
    return total


def _planned_capacity(table: ProfileTable, cluster: ClusterSpec, dem: np.ndarray, min_q: dict[str, float],
                      replicas: Counter[str], target_utilization: float) -> float:
    """The plan's headroom for the demand mix with pooled routing, req/s
    (:func:`oserve.policies.problem.pooled_headroom`), over
    the classes some variant of the table that fits a node of ``cluster`` can serve (as the planners'
    ``Problem.usable``), capacities at ``target_utilization``."""
    from oserve.policies.problem import _fits, pooled_headroom

    names = sorted(table.variants)
    cap = np.zeros((len(names), len(table.class_names)))
    for i, v in enumerate(names):
        p = table.variants[v]
        if not any(_fits(p.device_type, p.memory_per_device_bytes, p.devices_per_replica, n.device_type,
                         n.device_memory_bytes, n.devices) for n in cluster.nodes):
            continue
        for j, c in enumerate(table.class_names):
            if c in p.classes and p.quality_score + 1e-12 >= min_q[c]:
                cap[i, j] = p.classes[c].capacity_rps * target_utilization
    return pooled_headroom(cap, dem, np.array([replicas.get(v, 0) for v in names], dtype=float))


def evaluate(plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None = None,
             weights: ObjectiveWeights | None = None) -> PlanScore:
    """Score ``plan`` for ``demand`` with the time-sharing goodput model of this module.

    Args:
        plan: the plan to score.
        cluster: the cluster the plan runs on (node memory per device).
        table: the lookup table giving capacities (req/s), start times (s), memory per device (bytes).
        demand: per-class arrival rates, req/s.
        current: the plan running now; replicas started or stopped relative to it cost switching.
        weights: objective weights; defaults to ``ObjectiveWeights()``.

    Returns:
        The :class:`PlanScore`.

    Raises:
        ProfileError: the plan names a variant the table lacks.
        ConfigError: the plan names a node the cluster lacks, or the demand is invalid.
    """
    w = weights or ObjectiveWeights()
    dem = validate_demand(table, demand)
    min_q = dict(zip(table.class_names, validate_min_quality(table, demand), strict=True))
    classes = list(table.class_names)
    nodes = {n.name: n for n in cluster.nodes}
    replicas: Counter[str] = Counter()
    memory: dict[str, int] = {}
    devices_used = 0
    for r in plan.replicas:
        if r.variant not in table.variants:
            raise ProfileError(f"plan names variant {r.variant!r} the profile table lacks")
        if r.node not in nodes:
            raise ConfigError(f"plan names unknown node {r.node!r}", field="plan.replicas.node",
                              allowed=", ".join(nodes))
        replicas[r.variant] += 1
        devices_used += len(r.device_ids)
        for d in r.device_ids:
            key = f"{r.node}:{d}"
            memory[key] = memory.get(key, 0) + table.variants[r.variant].memory_per_device_bytes
    served = dict.fromkeys(classes, 0.0)
    quality_cost = 0.0
    util: dict[str, float] = dict.fromkeys(replicas, 0.0)
    load: dict[str, dict[str, float]] = {}
    for ci, c in enumerate(classes):
        admitted = dem[ci]  # admit_rps is not enforced anywhere, so the whole demand is routed (module docstring)
        for v, share in plan.routing.get(c, {}).items():
            if share > 0 and admitted > 0:
                load.setdefault(v, {})[c] = admitted * share
    for v, per_class in sorted(load.items()):
        n = replicas.get(v, 0)
        prof = table.variants.get(v)
        if prof is None or n == 0:
            continue
        time_needed = sum(lc / (prof.classes[c].capacity_rps * w.target_utilization) for c, lc in per_class.items()
                          if c in prof.classes and prof.classes[c].capacity_rps > 0)
        util[v] = time_needed / n
        frac = 1.0 if time_needed <= n * (1 + 1e-9) else n / time_needed
        for c, lc in per_class.items():
            # traffic routed to a variant below the class's min_quality is not counted as served
            if c in prof.classes and prof.classes[c].capacity_rps > 0 and prof.quality_score + 1e-12 >= min_q[c]:
                served[c] += lc * frac
                quality_cost += w.quality_cost_rps * lc * frac * (1.0 - prof.quality_score)
    goodput = float(sum(served.values()))
    total = float(dem.sum())
    sw = switch_start_s(plan, current, table)
    sw_cost = w.switch_cost_rps_per_s * sw
    dev_cost = 0.0 if w.fill_idle_devices else w.device_cost_rps * devices_used
    names = sorted(replicas)
    cap = np.array([[table.variants[v].classes[c].capacity_rps if c in table.variants[v].classes else 0.0
                     for c in classes] for v in names], dtype=float).reshape(len(names), len(classes))
    per_replica = mix_capacity(cap * w.target_utilization, dem)
    planned = _planned_capacity(table, cluster, dem, min_q, replicas, w.target_utilization)
    spare = float(sum(per_replica[i] * replicas[v] * max(0.0, 1.0 - util[v]) for i, v in enumerate(names)))
    cap_value = w.spare_capacity_value * planned if w.fill_idle_devices else 0.0
    return PlanScore(goodput_rps=goodput, served_rps=served, slo_attainment=goodput / total if total > 0 else 1.0,
                     memory_used_bytes=memory, devices_used=devices_used, utilization=util, switch_start_s=sw,
                     switch_cost_rps=sw_cost, device_cost_rps=dev_cost,
                     objective=goodput - quality_cost + cap_value - sw_cost - dev_cost, planned_capacity_rps=planned,
                     spare_capacity_rps=spare, capacity_value_rps=cap_value, quality_cost_rps=quality_cost)


def check_plan(plan: Plan, cluster: ClusterSpec, table: ProfileTable) -> list[str]:
    """Violations of the hard constraints; an empty list means the plan is valid.

    Checks: every replica's variant exists and its device type matches the node; device ids are
    distinct, within the node (so TP/PP groups stay within one node) and number
    ``devices_per_replica``; no device is used twice or beyond its memory; routing shares are
    non-negative, name variants that have replicas and can serve the class, and sum to 1 for every
    class that has any capacity in the plan.
    """
    problems: list[str] = []
    nodes = {n.name: n for n in cluster.nodes}
    used: set[tuple[str, int]] = set()
    mem: dict[tuple[str, int], int] = {}
    counts = plan.replica_counts()
    for r in plan.replicas:
        prof = table.variants.get(r.variant)
        node = nodes.get(r.node)
        if prof is None or node is None:
            problems.append(f"replica {r} names an unknown variant or node")
            continue
        if prof.device_type != node.device_type:
            problems.append(f"{r.variant} ({prof.device_type}) placed on {node.device_type} node {r.node}")
        if len(r.device_ids) != prof.devices_per_replica or len(set(r.device_ids)) != len(r.device_ids):
            problems.append(f"{r.variant} on {r.node} has device ids {r.device_ids}, needs "
                            f"{prof.devices_per_replica} distinct ids")
        for d in r.device_ids:
            if not 0 <= d < node.devices:
                problems.append(f"{r.variant} uses device {d} outside node {r.node} (0..{node.devices - 1})")
            if (r.node, d) in used:
                problems.append(f"device {r.node}:{d} used by two replicas")
            used.add((r.node, d))
            mem[(r.node, d)] = mem.get((r.node, d), 0) + prof.memory_per_device_bytes
    for (n, d), b in mem.items():
        if b > nodes[n].device_memory_bytes:
            problems.append(f"device {n}:{d} over memory: {b} > {nodes[n].device_memory_bytes} bytes")
    for c in table.class_names:
        shares = plan.routing.get(c, {})
        if any(s < -_EPS for s in shares.values()):
            problems.append(f"class {c}: negative routing share")
        bad = [v for v, s in shares.items() if s > _EPS and (counts.get(v, 0) == 0 or v not in table.variants
                                                             or table.capacity(v, c) <= 0)]
        if bad:
            problems.append(f"class {c}: routed to variants without replicas or capacity: {bad}")
        has_capacity = any(table.variants[v].classes.get(c) is not None and table.capacity(v, c) > 0
                           for v in counts if v in table.variants)
        total = sum(shares.values())
        if has_capacity and abs(total - 1.0) > 1e-6:
            problems.append(f"class {c}: routing shares sum to {total}, not 1")
        if not has_capacity and total > _EPS:
            problems.append(f"class {c}: routed although no replica can serve it")
    return problems
