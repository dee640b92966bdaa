"""The Planner interface, the planner registry and the shared plan construction.

A planner is a pure function of its inputs: ``plan(cluster, table, demand, current) -> Plan``. It
does no I/O, reads no clock and gives the same plan for the same inputs. Concrete planners only
decide an :class:`Allocation` (replica counts per variant and node group, plus optionally the rate
of each class each variant serves); placing replicas on device ids, deriving routing weights and
scoring the result with :func:`oserve.policies.evaluate.evaluate` is shared, so every planner's
objective is computed the same way and is comparable.

Registry: built-in names ``milp``, ``greedy``, ``flow``, ``static``, ``hysteresis``; third parties
register a subclass with :func:`register_planner` or through the ``oserve.planners`` entry-point group.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, final

import numpy as np
from pydantic import ValidationError

from oserve.errors import ConfigError
from oserve.policies._assign import balanced_assignment, optimal_assignment, pooled_assignment
from oserve.policies._placement import place
from oserve.policies.evaluate import evaluate
from oserve.policies.problem import ObjectiveWeights, Problem, build_problem
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan

__all__ = ["Allocation", "Planner", "register_planner", "make_planner", "available_planners", "build_plan",
           "single_variant_floor", "single_variant_floor_allocation"]


@dataclass(frozen=True)
class Allocation:
    """What a concrete planner decides.

    Attributes:
        counts: replicas per (variant, node group), integers (V, G).
        served: rate of class ``c`` served by variant ``v``, req/s (C, V); None to let the shared code
            compute the best assignment for ``counts`` (or, with ``equal_routing``, spread traffic).
        reason: planner-specific explanation, prefixed to the shared diagnosis.
        optimal: whether the allocation is proven optimal for the objective (None: no such claim).
        equal_routing: route every class evenly over the replicas that can serve it (round-robin),
            admitting everything; used by the static baseline.
        quality_restore: the allocation only restores quality (see :attr:`oserve.types.Plan.quality_restore`).
        fixed_routing: route by ``served`` as given: :func:`build_plan` does not re-balance or pool it over
            spare replicas (a routing chosen for another demand level, e.g. the plan's capacity).
    """

    counts: np.ndarray
    served: np.ndarray | None = None
    reason: str = ""
    optimal: bool | None = None
    equal_routing: bool = False
    quality_restore: bool = False
    fixed_routing: bool = False


class Planner(ABC):
    """Choose replicas per variant and node, and per-class routing weights.

    Subclasses implement :meth:`_allocate` only; :meth:`plan` is the public, pure entry point and is
    final (it builds the :class:`~oserve.policies.problem.Problem`, places replicas, derives routing and
    scores the plan the same way for every planner). Everything a subclass needs is public:
    ``from oserve.policies import Allocation, Planner, Problem``.

    Args:
        weights: objective weights (headroom, spare devices, switching and device costs), or a mapping of
            their fields (as in a YAML config); defaults to ``ObjectiveWeights()``.

    Raises:
        ConfigError: a weights mapping with unknown fields or values out of range.
    """

    name: ClassVar[str] = "planner"
    #: Whether :meth:`plan` replaces an allocation that carries less goodput than the best single-variant,
    #: cluster-filling deployment by that deployment (see :func:`single_variant_floor`). The built-in MILP,
    #: greedy and flow planners opt in; off by default so a custom planner's own allocation is what it plans
    #: (and what ``oserve.testing.check_planner`` checks).
    use_single_variant_floor: ClassVar[bool] = False
    #: Whether :meth:`plan` improves the allocation's replica counts for pooled routing
    #: (:func:`oserve.policies.pooling.pooling_search`, with ``fill_idle_devices``). Built-in MILP, greedy and
    #: flow planners opt in; off by default for the same reason as the floor.
    use_pooling_search: ClassVar[bool] = False

    def __init__(self, weights: ObjectiveWeights | Mapping[str, Any] | None = None) -> None:
        self.weights = as_weights(weights)

    @final
    def plan(self, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None = None) -> Plan:
        """Plan a deployment.

        Args:
            cluster: nodes and their devices.
            table: the variants' lookup table (capacity per class in req/s, memory per device in bytes).
            demand: per-class rates to plan for, req/s.
            current: the plan running now (switching cost is counted against it), or None.

        Returns:
            A valid :class:`Plan` (never raises for demand the cluster cannot meet: the plan says in
            ``reason`` which constraint binds and the resulting SLO attainment).

        Raises:
            ConfigError: invalid demand (unknown class, negative rate) or cluster.
        """
        problem = build_problem(cluster, table, demand, current, self.weights)
        alloc = self.allocate(problem)
        plan = build_plan(problem, alloc, cluster, table, demand, current, self.name)
        if self.use_single_variant_floor:
            plan = single_variant_floor(problem, plan, cluster, table, demand, current, self.name,
                                        self.floor_allocations(problem))
        return plan

    def allocate(self, problem: Problem) -> Allocation:
        """:meth:`_allocate`, then (with ``use_pooling_search``) its replica counts improved for pooled routing
        (:func:`oserve.policies.pooling.pooling_search`). What :meth:`plan` places; wrappers such as the
        hysteresis planner call this for their inner planner's candidate."""
        alloc = self._allocate(problem)
        if not self.use_pooling_search:
            return alloc
        from oserve.policies.pooling import pooling_search

        pooled = pooling_search(problem, np.asarray(alloc.counts, dtype=np.int64), self._pooling_starts(problem))
        if np.array_equal(pooled, alloc.counts):
            return alloc
        return Allocation(pooled, None, f"{alloc.reason}; replicas changed for pooled routing (every class on every "
                                        "replica that serves it: more served value, replica quality or headroom)", optimal=False)

    def _pooling_starts(self, problem: Problem) -> list[np.ndarray]:
        """Extra replica counts (V, G) the pooling search starts from besides the allocation's (default none)."""
        return []

    def floor_allocations(self, problem: Problem) -> list[Allocation]:
        """Allocations besides the single-variant fills that the floor (:func:`single_variant_floor`, with
        ``use_single_variant_floor``) compares the plan with by goodput (default none)."""
        return []

    @abstractmethod
    def _allocate(self, problem: Problem) -> Allocation:
        """Decide replica counts (and optionally the class assignment) for ``problem``."""


def as_weights(weights: ObjectiveWeights | Mapping[str, Any] | None) -> ObjectiveWeights:
    """``weights`` as :class:`ObjectiveWeights` (None: the defaults; a mapping: validated fields).

    Raises:
        ConfigError: a mapping with unknown fields or values out of range (names the field).
    """
    if weights is None:
        return ObjectiveWeights()
    if isinstance(weights, ObjectiveWeights):
        return weights
    try:
        return ObjectiveWeights.model_validate(dict(weights))
    except (ValidationError, TypeError) as exc:
        field = ".".join(str(p) for p in exc.errors()[0]["loc"]) if isinstance(exc, ValidationError) else ""
        raise ConfigError(f"invalid planner weights: {exc}", field=f"planner.weights.{field}".rstrip("."),
                          allowed=", ".join(ObjectiveWeights.model_fields)) from exc


def _routing(problem: Problem, counts_v: np.ndarray, served: np.ndarray | None, equal: bool,
             fixed: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    routing: dict[str, dict[str, float]] = {}
    admit: dict[str, float] = {}
    for ci, c in enumerate(problem.classes):
        # a fixed routing was chosen by measurement (e.g. in simulation): it may use a variant the table rates 0
        can = [vi for vi in range(len(problem.variants)) if counts_v[vi] > 0 and (
            problem.cap[vi, ci] > 0 or (fixed and served is not None and served[ci, vi] > 0))]
        if not can:
            routing[c] = {}
            continue
        if equal:
            w = {vi: float(counts_v[vi]) for vi in can}
        else:
            row = served[ci] if served is not None else np.zeros(len(problem.variants))
            tot = float(sum(row[vi] for vi in can))
            if tot > 1e-12:
                w = {vi: float(row[vi]) for vi in can if row[vi] > 1e-12 * tot}
                if tot < problem.demand[ci] * (1 - 1e-6) - 1e-9:  # 1 ppm: solver round-off
                    admit[c] = tot
            else:
                w = {vi: float(counts_v[vi] * problem.cap[vi, ci]) for vi in can}
                if problem.demand[ci] > 0:
                    admit[c] = 0.0
        s = sum(w.values())
        routing[c] = {problem.variants[vi]: wv / s for vi, wv in sorted(w.items())}
    return routing, admit


def _diagnose(problem: Problem, goodput: float, devices_used: int, counts: np.ndarray,
              served: dict[str, float]) -> str:
    """Say whether demand is met and, if not, which constraint binds for the classes left short."""
    total = float(problem.demand.sum())
    if total <= 0 or goodput >= total * (1 - 1e-6):
        return "demand met" if total > 0 else "zero demand"
    usable = problem.usable()
    free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
    room = problem.fits & (free[None, :] >= problem.dev[:, None])  # (V, G): one more replica fits
    binds: list[str] = []
    no_room: list[str] = []
    for ci, c in enumerate(problem.classes):
        if problem.demand[ci] <= 0 or served.get(c, 0.0) >= problem.demand[ci] * (1 - 1e-6):
            continue
        if not usable[:, ci].any():
            with_cap = [problem.variants[vi] for vi in range(len(problem.variants)) if problem.cap[vi, ci] > 0]
            if with_cap:
                reasons = [problem.unfit.get(v, "does not fit") for v in with_cap]
                kind = "memory" if all(r.startswith("memory") for r in reasons) else "placement"
                why = "; ".join(f"{v}: {r}" for v, r in zip(with_cap, reasons, strict=True))
                binds.append(f"{kind} (class {c} is only served by variants that fit no node: {why})")
            else:
                binds.append(f"capacity (no variant serves class {c} within SLO)")
        elif not (room & usable[:, ci][:, None]).any():
            no_room.append(c)
    if no_room:
        placeable = sum(g.devices for gi, g in enumerate(problem.groups) if problem.fits[:, gi].any())
        binds.append(f"devices ({devices_used} of {placeable} usable devices in use; no node has room for "
                     f"another replica serving {', '.join(no_room)})")
    if not binds:
        binds.append("capacity (devices are free but the planner judged more replicas not worth their cost)")
    return (f"demand not met: {goodput:.3f} of {total:.3f} req/s served within SLO "
            f"(SLO attainment {goodput / total:.1%}); binding: " + "; ".join(binds))


def build_plan(problem: Problem, alloc: Allocation, cluster: ClusterSpec, table: ProfileTable, demand: Demand,
               current: Plan | None, planner: str) -> Plan:
    """Place ``alloc`` on devices, derive routing and admission, score it with ``evaluate``.

    Routing: ``routing[c][v] = served[c, v] / sum_v served[c, v]``; with ``fill_idle_devices`` the served
    rates are first re-balanced over the variants (same per-class totals, least maximum utilization,
    :func:`oserve.policies._assign.balanced_assignment`) so spare replicas share the load, and then pooled
    over every replica that can serve each class in proportion to capacity where that keeps the maximum
    utilization (:func:`oserve.policies._assign.pooled_assignment`); a class with capacity but no
    served rate (zero demand) is spread over the variants that can serve it in proportion to their
    capacity, so every class with capacity has shares summing to 1.
    """
    counts = np.asarray(alloc.counts, dtype=np.int64)
    counts_v = counts.sum(axis=1)
    served = alloc.served
    if served is None and not alloc.equal_routing:
        served = optimal_assignment(problem, counts_v)
    if served is not None and problem.weights.fill_idle_devices and not alloc.fixed_routing:
        served = pooled_assignment(problem, counts_v, balanced_assignment(problem, counts_v, served))
    replicas = place(problem, counts, current)
    routing, admit = _routing(problem, counts_v, served, alloc.equal_routing, alloc.fixed_routing)
    plan = Plan(replicas=replicas, routing=routing, admit_rps=admit, planner=planner)
    score = evaluate(plan, cluster, table, demand, current, problem.weights)
    notes = [alloc.reason] if alloc.reason else []
    optimal = alloc.optimal
    claimed = float(np.sum(alloc.served)) if alloc.served is not None else None
    if claimed is not None and score.goodput_rps < claimed * (1 - 1e-6) - 1e-9:
        # The allocation counted serving only part of an overloaded class; the rest is routed too (admission
        # is not enforced) and overloads its variant, so the allocation's optimality claim does not carry over.
        optimal = False if optimal else optimal
        notes.append(f"the allocation counted {claimed:.4g} req/s served, but the whole demand is routed "
                     f"(admit_rps is not enforced): {score.goodput_rps:.4g} req/s within SLO")
    notes.append(_diagnose(problem, score.goodput_rps, score.devices_used, counts, score.served_rps))
    if problem.unfit:
        notes.append("unplaceable variants: " + "; ".join(f"{v} ({why})" for v, why in sorted(problem.unfit.items())))
    return plan.model_copy(update={
        "predicted_goodput_rps": score.goodput_rps, "slo_attainment": score.slo_attainment,
        "memory_used_bytes": score.memory_used_bytes, "objective": score.objective,
        "devices_used": score.devices_used, "reason": ". ".join(notes), "optimal": optimal,
        "quality_restore": alloc.quality_restore})


def single_variant_floor(problem: Problem, plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand,
                         current: Plan | None, planner: str, extra: Sequence[Allocation] = ()) -> Plan:
    """``plan``, or the best single-variant deployment (or ``extra`` allocation) if that carries more goodput
    (req/s within SLO).

    Every planner's allocation is scored with :func:`oserve.policies.evaluate.evaluate`, where the
    whole demand is routed (admission is not credited). A planner's own model may credit serving
    only part of a class (the MILP's ``x <= demand``); the rest of the class is still routed and
    overloads the replicas it lands on, so the plan can carry less than filling the cluster with
    the one best variant. This floor compares ``plan`` with each variant's cluster-filling
    deployment (round-robin, as the static baseline) and keeps the one with the higher goodput
    (ties: ``plan``), so every plan carries at least what the best single-variant plan carries.
    ``extra`` are further candidates scored the same way (the MILP passes the greedy heuristic's allocation:
    under overload the pooling search, which only keeps plans that carry the whole demand, cannot bring
    the MILP plan up to greedy's goodput; found by hypothesis: 4 devices, demand 1e4 and 1e9 req/s, the
    MILP's 4 replicas of one variant carried 2.71 req/s within SLO, greedy's 1 + 3 carried 2.80).
    """
    floor = single_variant_floor_allocation(problem, plan, cluster, table, demand, current, planner, extra)
    return plan if floor is None else floor[0]


def single_variant_floor_allocation(problem: Problem, plan: Plan, cluster: ClusterSpec, table: ProfileTable,
                                    demand: Demand, current: Plan | None, planner: str,
                                    extra: Sequence[Allocation] = ()) -> tuple[Plan, Allocation] | None:
    """The best single-variant deployment (or ``extra`` allocation) and its allocation when it carries more
    goodput than ``plan`` (:func:`single_variant_floor`), else None. With ``fill_idle_devices`` an ``extra``
    allocation also wins with the same goodput (within 1e-6), replica quality no lower and a higher objective
    (by more than 1e-6 of it; quality first, as the pooling search ranks them, :mod:`oserve.policies.pooling`):
    there the MILP values headroom with the best routing and :func:`~oserve.policies.evaluate.evaluate` with
    pooled routing, so greedy's counts can score higher. Not in the energy-saving mode: there the rule took
    greedy's plan for 0.06 % of objective (one device's cost) and the CPU example's control loop flapped
    between one and two replicas (6 switches for 3, ``tests/sim/test_sim_churn.py``). Wrappers that decide on an inner planner's
    allocation (the hysteresis planner) use it so the floor applies to their candidate too."""
    best: tuple[Plan, Allocation] | None = None
    good, obj = plan.predicted_goodput_rps or 0.0, plan.objective
    fills = _single_variant_fills(problem)
    for i, alloc in enumerate([*fills, *extra]):
        cand = build_plan(problem, alloc, cluster, table, demand, current, planner)
        cgood = cand.predicted_goodput_rps or 0.0
        more = cgood > good * (1 + 1e-6) + 1e-9
        same = abs(cgood - good) <= good * 1e-6 + 1e-9
        if more or (i >= len(fills) and problem.weights.fill_idle_devices and same
                    and cand.objective > obj + 1e-6 * max(1.0, abs(obj))
                    and _replica_quality(problem, cand) >= _replica_quality(problem, plan) - 1e-9):
            best, good, obj = (cand, alloc), cgood, cand.objective
    if best is None:
        return None
    cand, alloc = best
    was = plan.predicted_goodput_rps or 0.0
    why = (f"more than the planner's allocation, {was:.4g} req/s" if good > was * (1 + 1e-6) + 1e-9 else
           f"as the planner's allocation does, with a higher objective ({cand.objective:.6g} vs {plan.objective:.6g})")
    reason = f"{cand.reason}. It carries {good:.4g} req/s within SLO, {why} (planner's allocation: {plan.reason})"
    alloc = replace(alloc, reason=f"{alloc.reason} (it carries {good:.4g} req/s within SLO, {why})", optimal=False)
    return cand.model_copy(update={"reason": reason, "optimal": False}), alloc


def _replica_quality(problem: Problem, plan: Plan) -> float:
    """Device-weighted quality score (0-1) of the plan's replicas (1 for a table without quality or no replicas)."""
    if problem.quality is None or not plan.replicas:
        return 1.0
    index = {v: i for i, v in enumerate(problem.variants)}
    dev = np.array([float(problem.dev[index[r.variant]]) for r in plan.replicas])
    q = np.array([float(problem.quality[index[r.variant]]) for r in plan.replicas])
    return float((dev * q).sum() / dev.sum())


def _single_variant_fills(problem: Problem) -> list[Allocation]:
    """Each variant that fits and serves some class, filling the cluster, routed round-robin (the static baseline)."""
    out = []
    maxr = problem.max_replicas()
    for vi, v in enumerate(problem.variants):
        if not problem.fits[vi].any() or not (problem.cap[vi] > 0).any():
            continue
        counts = np.zeros_like(maxr)
        counts[vi] = maxr[vi]
        out.append(Allocation(counts, reason=f"single-variant floor: {v} fills the cluster", equal_routing=True))
    return out


# ---------------------------------------------------------------- registry

_BUILTIN: dict[str, str] = {
    "milp": "oserve.policies.milp:MILPPlanner",
    "greedy": "oserve.policies.greedy:GreedyPlanner",
    "flow": "oserve.policies.flow:FlowPlanner",
    "static": "oserve.policies.static:StaticPlanner",
    "hysteresis": "oserve.policies.hysteresis:HysteresisPlanner",
}
_REGISTRY: dict[str, type[Planner]] = {}


def register_planner(name: str, cls: type[Planner]) -> None:
    """Register a planner class under ``name`` (also its ``name``, unless the class sets one).

    Raises:
        ConfigError: ``name`` is already taken or ``cls`` is not a Planner subclass.
    """
    if name in _BUILTIN or name in _REGISTRY:
        raise ConfigError(f"planner name {name!r} is already registered", field="planner.kind",
                          allowed=f"a name not in {available_planners()}")
    if not (isinstance(cls, type) and issubclass(cls, Planner)):
        raise ConfigError(f"{cls!r} is not a Planner subclass", field="planner.kind", allowed="Planner subclasses")
    _REGISTRY[name] = cls
    if "name" not in cls.__dict__:  # plans name the planner that made them
        cls.name = name


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="oserve.planners")}


def available_planners() -> list[str]:
    """Names :func:`make_planner` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY) | set(_entry_points()))


def _resolve(name: str) -> type[Planner]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        mod, _, attr = _BUILTIN[name].partition(":")
        return getattr(importlib.import_module(mod), attr)
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()
        if isinstance(cls, type) and issubclass(cls, Planner):
            if "name" not in cls.__dict__:  # plans name the planner that made them, as register_planner
                cls.name = name
            return cls
    raise ConfigError(f"unknown planner {name!r}", field="planner.kind", allowed=", ".join(available_planners()))


def make_planner(name: str, **params: Any) -> Planner:
    """Build the planner registered as ``name`` with constructor ``params``.

    Raises:
        ConfigError: unknown name, or parameters the planner does not accept.
    """
    cls = _resolve(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"invalid parameters for planner {name!r}: {exc}", field="planner",
                          allowed=f"the arguments of {cls.__name__}") from exc
