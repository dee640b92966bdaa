"""HysteresisPlanner: change the deployment only when it pays for the switch, deciding the switch once.

Each call asks the inner planner for a candidate *without* the switching term (the inner planner sees
``switch_cost_rps_per_s = 0``, so the switch cost is not charged on every decision, where a one-off
cost outweighs any per-second saving), and scores the alternative of keeping the current replicas
(with routing re-optimised for the new demand, which costs no restart). The candidate replaces the
current plan only when the gain it earns over the horizon pays for the switch once:

    (objective(candidate) - objective(keep)) x horizon_s
        > min_gain_fraction x goodput(keep) x horizon_s      (not for a pure scale-down)
          + switch_cost_weight x start time of the replicas it starts (s)

with both objectives computed by :func:`oserve.policies.evaluate.evaluate` without the switching
term. Units: objectives and goodput are req/s, so both sides are requests over the horizon.

* ``min_gain_fraction`` suppresses churn between near-equal mixes: below capacity the objective of
  two mixes differs only by tie-breakers (spare capacity, quality) worth under 1 % of goodput.
* A pure scale-down (the candidate's replicas are a subset of the current ones) starts nothing,
  so it pays no start cost and no relative threshold: it happens as soon as it saves anything (e.g.
  ``device_cost_rps`` with ``fill_idle_devices: false``). The control loop damps it by planning for
  the largest demand of its last ``scale_down_window_s``
  (:class:`oserve.control.controller.Controller`) and keeps ``min_replicas``.
* A *quality restore* (the candidate predicts no less goodput than keeping, at a lower quality cost:
  more of the traffic on higher-quality variants) pays no relative threshold either, only the start
  cost. The planner ranks SLO goodput first, then quality, so once a peak that moved
  traffic to int8 has passed, the return to full precision must not need a goodput gain that a mix
  already meeting the demand cannot show. Measured on the demo's CPU table before this rule: after a
  burst, 2 x int8 stayed at 0.5-1.0 req/s of calm traffic (gain 0.38-1.01 <= threshold 0.60-1.10
  requests over 20 s). The controller still damps the return by planning for the largest demand of
  its last ``scale_down_window_s``; the move to int8 needs a goodput gain, so the two rules do not
  flip-flop at one demand.
* Conversely a candidate that lowers quality is only taken for more goodput: spare capacity and
  device savings are tie-breakers ranked after quality. Before this rule, at light load (below about
  0.2 req/s per core on the demo's CPU table) the spare-capacity value of int8's larger capacity
  outweighed its quality cost and could pass the relative threshold, which is small at low goodput.
* A candidate that keeps the same replicas (routing-only change) is taken at once.
* The candidate is what the inner planner's ``plan`` would return: with its
  ``use_single_variant_floor`` (MILP, greedy, flow), a single-variant deployment that carries more
  goodput than its allocation replaces it (:func:`oserve.policies.base.single_variant_floor`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from dataclasses import replace as dc_replace
from typing import Any

from oserve.errors import ConfigError, PlanningError
from oserve.policies.base import (
    Allocation,
    Planner,
    as_weights,
    build_plan,
    make_planner,
    single_variant_floor_allocation,
)
from oserve.policies.evaluate import evaluate
from oserve.policies.problem import ObjectiveWeights, Problem
from oserve.profiles.table import ProfileTable
from oserve.types import Plan, PlanScore

__all__ = ["HysteresisPlanner"]


class HysteresisPlanner(Planner):
    """Wrap a planner so the plan only changes when the predicted gain exceeds the switch's cost.

    Args:
        inner: the planner (or its registry name) proposing candidates; default ``"milp"``.
        min_gain_fraction: required objective gain as a fraction of the current plan's goodput (>= 0);
            not applied to a pure scale-down.
        switch_cost_weight: one-time cost of a switch, requests per second of start time of the
            replicas it starts (>= 0): roughly the req/s a replica start takes away while it runs.
        horizon_s: seconds over which a switch's predicted gain is counted (> 0); the control loop
            passes its forecast horizon.
        weights: objective weights for scoring; defaults to the inner planner's (and, when ``inner`` is
            a name, the inner planner is built with them).

    Raises:
        ConfigError: a negative threshold or a horizon <= 0 (names the field).
    """

    name = "hysteresis"

    def __init__(self, inner: Planner | str = "milp", min_gain_fraction: float = 0.05,
                 switch_cost_weight: float = 1e-3, weights: ObjectiveWeights | Mapping[str, Any] | None = None,
                 horizon_s: float = 60.0) -> None:
        weights = None if weights is None else as_weights(weights)
        if isinstance(inner, str):
            inner = make_planner(inner, weights=weights) if weights is not None else make_planner(inner)
        self.inner = inner
        self.name = f"{inner.name}+hysteresis"  # the plans' ``planner`` field names the inner planner too
        super().__init__(weights or self.inner.weights)
        for field, value in (("min_gain_fraction", min_gain_fraction), ("switch_cost_weight", switch_cost_weight)):
            if not value >= 0:
                raise ConfigError(f"{field} must be >= 0, got {value}", field=f"planner.{field}", allowed=">= 0")
        if not horizon_s > 0:
            raise ConfigError(f"horizon_s must be > 0, got {horizon_s}", field="planner.horizon_s", allowed="> 0 s")
        self.min_gain_fraction = float(min_gain_fraction)
        self.switch_cost_weight = float(switch_cost_weight)
        self.horizon_s = float(horizon_s)

    def _allocate(self, problem: Problem) -> Allocation:
        """The inner planner's allocation, or the current replicas unless switching pays (module doc).

        Raises:
            ValueError: ``problem`` was not built by :func:`~oserve.policies.problem.build_problem`
                (it lacks the inputs to score plans with).
        """
        current = problem.current_plan
        free = problem  # the inner planner decides without the switch cost: it is weighed here, once
        if problem.weights.switch_cost_rps_per_s:
            free = dc_replace(problem, weights=problem.weights.model_copy(update={"switch_cost_rps_per_s": 0.0}))
        candidate_alloc = self.inner.allocate(free)
        cluster, table, demand = problem.cluster, problem.table, problem.demand_spec
        floor = getattr(self.inner, "use_single_variant_floor", False)
        if current is None and not floor:
            return candidate_alloc
        if cluster is None or table is None or demand is None:
            if current is None:
                return candidate_alloc
            raise ValueError("HysteresisPlanner needs a Problem built by build_problem (cluster, table, demand)")
        candidate = build_plan(free, candidate_alloc, cluster, table, demand, current, self.name)
        if floor:  # the inner planner's plan() would replace its allocation by a single-variant one carrying more
            floored = single_variant_floor_allocation(free, candidate, cluster, table, demand, current, self.name,
                                                       getattr(self.inner, "floor_allocations", lambda p: [])(free))
            if floored is not None:
                candidate, candidate_alloc = floored
        if current is None:
            return candidate_alloc
        keep_alloc = Allocation(counts=problem.current)
        try:
            keep = build_plan(free, keep_alloc, cluster, table, demand, current, self.name)
        except PlanningError:  # current no longer packs onto this cluster: nothing to keep
            return candidate_alloc
        cand_score = evaluate(candidate, cluster, table, demand, None, free.weights)
        keep_score = evaluate(keep, cluster, table, demand, None, free.weights)
        gain = cand_score.objective - keep_score.objective
        new, old = _counts(candidate), _counts(current)
        if new == old:
            return replace(candidate_alloc, reason=f"hysteresis: candidate equals current replicas"
                                                   f"{_sep(candidate_alloc.reason)}")
        scale_down = not (new - old)
        started_s = sum(n * table.variants[v].start_time_s for (v, _), n in (new - old).items()
                        if v in table.variants)
        quality = _compare_quality((cand_score, candidate), (keep_score, keep), table)
        if quality < 0 and _no_more_goodput(cand_score, keep_score):
            return replace(keep_alloc, reason="hysteresis: keeping current replicas (the candidate lowers quality "
                                              "without serving more goodput)")
        restore = quality > 0 and _no_less_goodput(cand_score, keep_score)
        # a pure restore (no more goodput either) is not urgent: its drains may let requests finish in place
        pure_restore = restore and _no_more_goodput(cand_score, keep_score)
        if pure_restore and keep_score.goodput_rps <= 1e-9:  # idle: nothing is served, nothing can be lost
            return replace(candidate_alloc, quality_restore=True,
                           reason=f"hysteresis: restoring quality at zero demand{_sep(candidate_alloc.reason)}")
        if restore:  # its gain is goodput, then quality: the spare capacity it gives up ranks after both
            gain = max(gain, (cand_score.goodput_rps - keep_score.goodput_rps)
                       + (keep_score.quality_cost_rps - cand_score.quality_cost_rps))
        if float(problem.demand.sum()) <= 1e-9 and not (scale_down or restore):
            # idle: no traffic to gain, only tie-breakers (spare capacity for a mix nobody sends); a switch now
            # is paid again by the next burst. 70B code trace at 1.377x: 60 s without arrivals moved 16 x int8
            # TP2 to 4 x int8 TP8 (tie-breaker gain 3.7 > start cost 0.14) and the burst 90 s later met 0.31.
            # The demand decides, not the kept plan's goodput: running replicas that serve none of a positive
            # demand (none left after failures, or none that fits its classes) must still be replaced.
            return replace(keep_alloc, reason="hysteresis: keeping current replicas (no demand: a switch that "
                                              "neither scales down nor restores quality gains nothing)")
        relative = 0.0 if scale_down or restore else self.min_gain_fraction * keep_score.goodput_rps
        threshold = relative * self.horizon_s + self.switch_cost_weight * started_s
        won = gain * self.horizon_s
        if won > threshold:
            kind = "restoring quality, " if restore else ""
            return replace(candidate_alloc, quality_restore=pure_restore,
                           reason=f"hysteresis: {kind}switching (gain {won:.4f} > cost {threshold:.4f} "
                                  f"requests over {self.horizon_s:g} s){_sep(candidate_alloc.reason)}")
        return replace(keep_alloc, reason=f"hysteresis: keeping current replicas (gain {won:.4f} <= cost "
                                          f"{threshold:.4f} requests over {self.horizon_s:g} s)")

    def __repr__(self) -> str:
        return (f"HysteresisPlanner(inner={self.inner.name!r}, min_gain_fraction={self.min_gain_fraction}, "
                f"switch_cost_weight={self.switch_cost_weight}, horizon_s={self.horizon_s})")


def _no_less_goodput(candidate: PlanScore, keep: PlanScore) -> bool:
    """``candidate`` serves no less goodput than ``keep`` (relative tolerance 1e-6, absolute 1e-9 req/s)."""
    return candidate.goodput_rps >= keep.goodput_rps * (1.0 - 1e-6) - 1e-9


def _no_more_goodput(candidate: PlanScore, keep: PlanScore) -> bool:
    """``candidate`` serves no more goodput than ``keep``: what else it gains is a tie-breaker (spare
    capacity, fewer devices), which ranks after quality."""
    return candidate.goodput_rps <= keep.goodput_rps * (1.0 + 1e-6) + 1e-9


def _compare_quality(a: tuple[PlanScore, Plan], b: tuple[PlanScore, Plan], table: ProfileTable) -> int:
    """+1 when plan ``a`` has the higher quality, -1 when ``b`` has, 0 when equal (1e-9 tolerance).

    First the quality cost of the traffic each serves; on a tie (no traffic, or the same variants
    serving it) the device-weighted mean quality score of the replicas, which would serve the next
    requests: at zero demand both quality costs are 0, and without this int8's spare capacity moved an
    idle deployment to int8 (found by replaying the demo's planner at zero demand).
    """
    keys = [(-s.quality_cost_rps, _replica_quality(p, table)) for s, p in (a, b)]
    for x, y in zip(keys[0], keys[1], strict=True):
        if x > y + 1e-9:
            return 1
        if x < y - 1e-9:
            return -1
    return 0


def _replica_quality(plan: Plan, table: ProfileTable) -> float:
    """Device-weighted mean quality score (0-1) of ``plan``'s active replicas; 1.0 for none."""
    weights = [(len(r.device_ids) or 1, table.variants[r.variant].quality_score if r.variant in table.variants
                else 1.0) for r in plan.replicas]
    total = sum(w for w, _ in weights)
    return 1.0 if total == 0 else sum(w * q for w, q in weights) / total


def _counts(plan: Plan) -> Counter[tuple[str, str]]:
    return Counter((r.variant, r.node) for r in plan.replicas)


def _sep(reason: str) -> str:
    return f". {reason}" if reason else ""

