"""HysteresisPlanner: change the deployment only when it pays for the switch.

Each call asks the inner planner for a candidate, and scores the alternative of keeping the
current replicas (with routing re-optimised for the new demand, which costs no restart). The
candidate replaces the current plan only when

    objective(candidate) - objective(keep) > min_gain_fraction * goodput(keep)
                                             + switch_cost_weight * start time of replicas started/stopped (s)

with both objectives computed by :func:`oserve.policies.evaluate.evaluate` without the switching
term (it is the right-hand side's job). On a steady workload with noise smaller than the threshold
the plan therefore stays put instead of oscillating between two near-equal mixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oserve.errors import ConfigError, PlanningError
from oserve.policies._problem import ObjectiveWeights, Problem, build_problem
from oserve.policies.base import Allocation, Planner, as_weights, build_plan, make_planner
from oserve.policies.evaluate import evaluate, switch_start_s
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan

__all__ = ["HysteresisPlanner"]


class HysteresisPlanner(Planner):
    """Wrap a planner so the plan only changes when the predicted gain exceeds the switch's cost.

    Args:
        inner: the planner (or its registry name) proposing candidates; default ``"milp"``.
        min_gain_fraction: required objective gain as a fraction of the current plan's goodput (>= 0).
        switch_cost_weight: required gain (req/s) per second of start time of replicas started or
            stopped (>= 0).
        weights: objective weights for scoring; defaults to the inner planner's (and, when ``inner`` is
            a name, the inner planner is built with them).

    Raises:
        ConfigError: a negative threshold.
    """

    name = "hysteresis"

    def __init__(self, inner: Planner | str = "milp", min_gain_fraction: float = 0.05,
                 switch_cost_weight: float = 1e-3, weights: ObjectiveWeights | Mapping[str, Any] | None = None
                 ) -> None:
        weights = None if weights is None else as_weights(weights)
        if isinstance(inner, str):
            inner = make_planner(inner, weights=weights) if weights is not None else make_planner(inner)
        self.inner = inner
        super().__init__(weights or self.inner.weights)
        for field, value in (("min_gain_fraction", min_gain_fraction), ("switch_cost_weight", switch_cost_weight)):
            if not value >= 0:
                raise ConfigError(f"{field} must be >= 0, got {value}", field=f"planner.{field}", allowed=">= 0")
        self.min_gain_fraction = float(min_gain_fraction)
        self.switch_cost_weight = float(switch_cost_weight)

    def plan(self, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None = None) -> Plan:
        """Plan as the inner planner would, but keep ``current`` unless switching pays (see module doc)."""
        candidate = self.inner.plan(cluster, table, demand, current)
        if current is None:
            return candidate
        problem = build_problem(cluster, table, demand, current, self.weights)
        try:
            keep = build_plan(problem, Allocation(counts=problem.current), cluster, table, demand, current,
                              f"{self.inner.name}+hysteresis")
        except PlanningError:  # current no longer packs onto this cluster: nothing to keep
            return candidate
        no_switch = self.weights.model_copy(update={"switch_cost_rps_per_s": 0.0})
        cand_obj = evaluate(candidate, cluster, table, demand, None, no_switch).objective
        keep_score = evaluate(keep, cluster, table, demand, None, no_switch)
        gain = cand_obj - keep_score.objective
        moved_s = switch_start_s(candidate, current, table)
        threshold = self.min_gain_fraction * keep_score.goodput_rps + self.switch_cost_weight * moved_s
        if moved_s > 0 and gain > threshold:
            return candidate.model_copy(update={
                "planner": f"{self.inner.name}+hysteresis",
                "reason": f"hysteresis: switching (gain {gain:.4f} > threshold {threshold:.4f} req/s). "
                          f"{candidate.reason}"})
        kept_reason = (f"hysteresis: keeping current replicas (gain {gain:.4f} <= threshold {threshold:.4f} req/s)"
                       if moved_s > 0 else "hysteresis: candidate equals current replicas")
        if moved_s == 0:
            return candidate.model_copy(update={"planner": f"{self.inner.name}+hysteresis",
                                                "reason": f"{kept_reason}. {candidate.reason}"})
        return keep.model_copy(update={"reason": f"{kept_reason}. {keep.reason}"})

    def _allocate(self, problem: Problem) -> Allocation:
        """The inner planner's allocation (used when this planner is driven through ``_allocate``)."""
        return self.inner._allocate(problem)

    def __repr__(self) -> str:
        return (f"HysteresisPlanner(inner={self.inner.name!r}, min_gain_fraction={self.min_gain_fraction}, "
                f"switch_cost_weight={self.switch_cost_weight})")

