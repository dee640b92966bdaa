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
from dataclasses import replace
from typing import Any

from oserve.errors import ConfigError, PlanningError
from oserve.policies.base import Allocation, Planner, as_weights, build_plan, make_planner
from oserve.policies.evaluate import evaluate, switch_start_s
from oserve.policies.problem import ObjectiveWeights, Problem

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
        self.name = f"{inner.name}+hysteresis"  # the plans' ``planner`` field names the inner planner too
        super().__init__(weights or self.inner.weights)
        for field, value in (("min_gain_fraction", min_gain_fraction), ("switch_cost_weight", switch_cost_weight)):
            if not value >= 0:
                raise ConfigError(f"{field} must be >= 0, got {value}", field=f"planner.{field}", allowed=">= 0")
        self.min_gain_fraction = float(min_gain_fraction)
        self.switch_cost_weight = float(switch_cost_weight)

    def _allocate(self, problem: Problem) -> Allocation:
        """The inner planner's allocation, or the current replicas unless switching pays (module doc).

        Raises:
            ValueError: ``problem`` was not built by :func:`~oserve.policies.problem.build_problem`
                (it lacks the inputs to score plans with).
        """
        candidate_alloc = self.inner._allocate(problem)
        current = problem.current_plan
        if current is None:
            return candidate_alloc
        cluster, table, demand = problem.cluster, problem.table, problem.demand_spec
        if cluster is None or table is None or demand is None:
            raise ValueError("HysteresisPlanner needs a Problem built by build_problem (cluster, table, demand)")
        candidate = build_plan(problem, candidate_alloc, cluster, table, demand, current, self.name)
        keep_alloc = Allocation(counts=problem.current)
        try:
            keep = build_plan(problem, keep_alloc, cluster, table, demand, current, self.name)
        except PlanningError:  # current no longer packs onto this cluster: nothing to keep
            return candidate_alloc
        no_switch = self.weights.model_copy(update={"switch_cost_rps_per_s": 0.0})
        cand_obj = evaluate(candidate, cluster, table, demand, None, no_switch).objective
        keep_score = evaluate(keep, cluster, table, demand, None, no_switch)
        gain = cand_obj - keep_score.objective
        moved_s = switch_start_s(candidate, current, table)
        threshold = self.min_gain_fraction * keep_score.goodput_rps + self.switch_cost_weight * moved_s
        inner_reason = f". {candidate_alloc.reason}" if candidate_alloc.reason else ""
        if moved_s > 0 and gain > threshold:
            return replace(candidate_alloc, reason=f"hysteresis: switching (gain {gain:.4f} > threshold "
                                                   f"{threshold:.4f} req/s){inner_reason}")
        if moved_s == 0:
            return replace(candidate_alloc, reason=f"hysteresis: candidate equals current replicas{inner_reason}")
        return replace(keep_alloc, reason=f"hysteresis: keeping current replicas (gain {gain:.4f} <= threshold "
                                          f"{threshold:.4f} req/s)")

    def __repr__(self) -> str:
        return (f"HysteresisPlanner(inner={self.inner.name!r}, min_gain_fraction={self.min_gain_fraction}, "
                f"switch_cost_weight={self.switch_cost_weight})")

