"""Planning: choose replicas per variant and node, and per-class routing weights.

Public API::

    from oserve.policies import make_planner, evaluate
    plan = make_planner("milp", time_limit_s=1.0).plan(cluster, table, demand, current=None)

Planners: ``milp`` (:class:`MILPPlanner`, exact, cvxpy + HiGHS), ``greedy`` (:class:`GreedyPlanner`,
fast heuristic), ``flow`` (:class:`FlowPlanner`, the OServe paper's max-flow method), ``static``
(:class:`StaticPlanner`, one variant round-robin; :func:`best_static` for the hindsight baseline),
``hysteresis`` (:class:`HysteresisPlanner`, wraps another planner). cvxpy is imported only when the
MILP planner is built.

A custom planner subclasses :class:`Planner`, implements ``_allocate(problem: Problem) -> Allocation``
and registers with :func:`register_planner` (or the ``oserve.planners`` entry-point group); see
docs/planning.md.
"""

from __future__ import annotations

from typing import Any

from oserve.policies.base import Allocation, Planner, available_planners, make_planner, register_planner
from oserve.policies.evaluate import check_plan, evaluate
from oserve.policies.problem import ObjectiveWeights, Problem, build_problem
from oserve.types import ClusterSpec, Demand, NodeSpec, Plan, PlanScore, ReplicaPlacement

__all__ = [
    "NodeSpec", "ClusterSpec", "Demand", "ReplicaPlacement", "Plan",
    "ObjectiveWeights", "Problem", "build_problem", "Allocation", "Planner", "register_planner", "make_planner",
    "available_planners",
    "PlanScore", "evaluate", "check_plan",
    "MILPPlanner", "GreedyPlanner", "FlowPlanner", "StaticPlanner", "HysteresisPlanner", "best_static",
]

_LAZY = {
    "MILPPlanner": "oserve.policies.milp",
    "GreedyPlanner": "oserve.policies.greedy",
    "FlowPlanner": "oserve.policies.flow",
    "StaticPlanner": "oserve.policies.static",
    "best_static": "oserve.policies.static",
    "HysteresisPlanner": "oserve.policies.hysteresis",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'oserve.policies' has no attribute {name!r}")
