"""Static baselines: the homogeneous deployment a vLLM user would run.

``StaticPlanner(variant)`` fills the cluster with replicas of one variant (or runs ``replicas`` of
them) and routes every class round-robin over them (equal weights, everything admitted).
``best_static`` picks, with hindsight over a whole trace's demand series, the single variant whose
static deployment serves the most goodput in total: the fair baseline for every comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from oserve.errors import ConfigError, PlanningError
from oserve.policies.base import Allocation, Planner
from oserve.policies.evaluate import evaluate
from oserve.policies.greedy import capacity_term
from oserve.policies.problem import ObjectiveWeights, Problem
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand

__all__ = ["StaticPlanner", "best_static"]


class StaticPlanner(Planner):
    """N replicas of one variant, round-robin routing.

    Args:
        variant: the variant to run; None picks the variant with the best objective for the demand
            it is asked to plan for (hindsight over one demand; see :func:`best_static` for a trace).
        replicas: how many replicas (first fit over nodes, capped by what fits); None fills the cluster.
        weights: objective weights (used for scoring only: a static deployment ignores them).

    Raises:
        ConfigError: ``replicas`` < 1.
    """

    name = "static"

    def __init__(self, variant: str | None = None, replicas: int | None = None,
                 weights: ObjectiveWeights | Mapping[str, Any] | None = None) -> None:
        super().__init__(weights)
        if replicas is not None and replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {replicas}", field="planner.replicas", allowed=">= 1")
        self.variant = variant
        self.replicas = replicas

    def _counts(self, problem: Problem, vi: int) -> np.ndarray:
        counts = np.zeros(problem.fits.shape, dtype=np.int64)
        maxr = problem.max_replicas()
        left = self.replicas if self.replicas is not None else int(maxr[vi].sum())
        for g in range(len(problem.groups)):
            take = min(left, int(maxr[vi, g]))
            counts[vi, g] = take
            left -= take
        return counts

    def _allocate(self, problem: Problem) -> Allocation:
        if self.variant is not None:
            if self.variant not in problem.variants:
                raise ConfigError(f"unknown variant {self.variant!r}", field="planner.variant",
                                  allowed=", ".join(problem.variants))
            vi = problem.variants.index(self.variant)
            note = f"static: {self.variant}" + ("" if problem.fits[vi].any() else
                                                f" fits no node ({problem.unfit.get(self.variant, '')})")
            return Allocation(self._counts(problem, vi), reason=note, equal_routing=True)
        best: tuple[float, int] | None = None
        for vi in range(len(problem.variants)):
            if not problem.fits[vi].any():
                continue
            counts = self._counts(problem, vi)
            reps = counts.sum(axis=1)
            # equal routing: class c's whole demand goes to this variant
            time = sum(problem.demand[c] / problem.cap[vi, c] for c in range(len(problem.classes))
                       if problem.cap[vi, c] > 0)
            frac = 1.0 if time <= reps[vi] else reps[vi] / time
            good = frac * sum(problem.demand[c] for c in range(len(problem.classes)) if problem.cap[vi, c] > 0)
            score = good + capacity_term(problem, counts)
            if best is None or score > best[0] + 1e-12:
                best = (score, vi)
        if best is None:
            return Allocation(np.zeros(problem.fits.shape, dtype=np.int64), reason="static: no variant fits any node",
                              equal_routing=True)
        vi = best[1]
        return Allocation(self._counts(problem, vi), reason=f"static: {problem.variants[vi]} (best single variant "
                          "for this demand)", equal_routing=True)


def best_static(cluster: ClusterSpec, table: ProfileTable, demands: list[Demand],
                weights: ObjectiveWeights | None = None) -> str:
    """The variant whose static (cluster-filling) deployment has the most total goodput over ``demands``.

    Args:
        cluster: the cluster.
        table: the lookup table.
        demands: the trace's demand series (e.g. one per planning interval), req/s per class.
        weights: objective weights for scoring (ties broken by total objective, then variant name).

    Returns:
        The variant name.

    Raises:
        PlanningError: no variant fits any node, or ``demands`` is empty.
    """
    if not demands:
        raise PlanningError("best_static needs at least one demand")
    best: tuple[float, float, str] | None = None
    for v in sorted(table.variants):
        planner = StaticPlanner(v, weights=weights)
        plan0 = planner.plan(cluster, table, demands[0])
        if not plan0.replicas:
            continue
        good = obj = 0.0
        for d in demands:
            s = evaluate(plan0, cluster, table, d, None, weights)
            good += s.goodput_rps
            obj += s.objective
        if best is None or good > best[0] + 1e-9 or (abs(good - best[0]) <= 1e-9 and obj > best[1] + 1e-9):
            best = (good, obj, v)
    if best is None:
        raise PlanningError("no variant of the profile table fits any node of the cluster")
    return best[2]
