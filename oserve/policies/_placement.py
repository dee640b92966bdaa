"""Place replica counts per (variant, node group) onto concrete device ids (internal).

Deterministic. Replicas of ``current`` that the new counts keep stay on their devices (no restart);
the rest go first-fit decreasing (largest replicas first, then variant name) onto the first node of
the group with a free contiguous block, aligned to the replica size in divisible groups (so a TP4
replica takes devices 0-3 or 4-7, never 2-5). If kept replicas fragment a node so a new replica no
longer fits, the group is re-placed from scratch.
"""

from __future__ import annotations

import numpy as np

from oserve.errors import PlanningError
from oserve.policies.problem import Problem, chain
from oserve.types import Plan, ReplicaPlacement

__all__ = ["place"]


def _free_block(free: list[bool], size: int, aligned: bool) -> int | None:
    step = size if aligned else 1
    for start in range(0, len(free) - size + 1, step):
        if all(free[start:start + size]):
            return start
    return None


def _place_group(problem: Problem, gi: int, counts: np.ndarray, keep: list[ReplicaPlacement],
                 aligned: bool) -> list[ReplicaPlacement] | None:
    g = problem.groups[gi]
    free = {n: [True] * g.devices_per_node for n in g.nodes}
    out: list[ReplicaPlacement] = []
    remaining = {v: int(counts[i, gi]) for i, v in enumerate(problem.variants)}
    for r in keep:
        if remaining.get(r.variant, 0) <= 0:
            continue
        ids = list(r.device_ids)
        vi = problem.variants.index(r.variant)
        if (len(ids) != int(problem.dev[vi]) or any(not 0 <= d < g.devices_per_node for d in ids)
                or not all(free[r.node][d] for d in ids)):
            continue
        for d in ids:
            free[r.node][d] = False
        remaining[r.variant] -= 1
        out.append(r)
    order = sorted((v for v in problem.variants if remaining[v] > 0),
                   key=lambda v: (-int(problem.dev[problem.variants.index(v)]), v))
    for v in order:
        size = int(problem.dev[problem.variants.index(v)])
        for _ in range(remaining[v]):
            for n in g.nodes:
                start = _free_block(free[n], size, aligned)
                if start is not None:
                    for d in range(start, start + size):
                        free[n][d] = False
                    out.append(ReplicaPlacement(variant=v, node=n, device_ids=tuple(range(start, start + size))))
                    break
            else:
                return None
    return out


def place(problem: Problem, counts: np.ndarray, current: Plan | None) -> list[ReplicaPlacement]:
    """Replicas for ``counts[v, g]`` (V, G), keeping ``current``'s replicas where possible.

    Returns:
        Replicas sorted by (node order in the cluster, first device id).

    Raises:
        PlanningError: the counts cannot be packed (a planner produced counts over a group's devices).
    """
    node_order = {n: i for i, g in enumerate(problem.groups) for n in g.nodes}
    by_group: dict[int, list[ReplicaPlacement]] = {}
    if current is not None:
        for r in sorted(current.replicas, key=lambda r: (node_order.get(r.node, -1), r.device_ids, r.variant)):
            if r.node in node_order and r.variant in problem.variants:
                gi = next(j for j, g in enumerate(problem.groups) if r.node in g.nodes)
                by_group.setdefault(gi, []).append(r)
    out: list[ReplicaPlacement] = []
    for gi, g in enumerate(problem.groups):
        if not counts[:, gi].any():
            continue
        aligned = chain([int(d) for d in problem.dev[counts[:, gi] > 0]], g.devices_per_node)
        placed = _place_group(problem, gi, counts, by_group.get(gi, []), aligned)
        if placed is None:
            placed = _place_group(problem, gi, counts, [], aligned)
        if placed is None:
            raise PlanningError(f"cannot pack replica counts {counts[:, gi].tolist()} onto node group {g.nodes}")
        out.extend(placed)
    return sorted(out, key=lambda r: (node_order[r.node], r.device_ids[0]))
