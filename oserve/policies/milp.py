"""MILPPlanner: the exact planner, a mixed-integer program built with cvxpy and solved by HiGHS.

Variables (node groups as in :mod:`oserve.policies.problem`; a group is one node unless its nodes
are identical and replica sizes divide each other, where per-group totals are exact and the model
stays the same size however many nodes the group has):

- ``n[v, g]`` integer >= 0: replicas of variant ``v`` on group ``g`` (only where ``v`` fits: device
  type, memory per device, devices per node; a variant whose memory per device exceeds the node's
  device memory has no variable, i.e. n = 0);
- ``x[c, v]`` >= 0: rate of class ``c`` variant ``v`` serves, req/s (only where ``cap[v, c] > 0``),
  solved as ``y = x / cap[v, c]`` (the replica time it takes), so every time-sharing coefficient is 1;
- ``s[v, g]`` >= |n[v, g] - n_current[v, g]|: replicas started or stopped.

Constraints: devices per group ``sum_v n[v, g] * devices_per_replica[v] <= devices[g]``; time sharing
``sum_c x[c, v] / cap[v, c] <= sum_g n[v, g]``; demand ``sum_v x[c, v] <= demand[c]``.
Objective: maximise ``sum value[c, v] x[c, v] - switch_cost_rps_per_s * sum start_time_s[v] * s[v, g] + R`` (the
objective of ``evaluate``; ``value = 1 - quality_cost_rps * (1 - quality[v])``, so among plans with the
same goodput the higher-quality variants serve), with the replica term ``R = spare_capacity_value * H``
when ``fill_idle_devices``: ``H`` req/s is the plan's headroom, the largest rate of the demand mix its
replicas carry together (:func:`oserve.policies.problem.planned_capacity`; auxiliary variables
``z[c, v] >= 0`` with ``sum_c z[c, v] / cap[v, c] <= sum_g n[v, g]`` and ``sum_v z[c, v] >= H * share[c]``,
``share`` the demand mix of the usable classes, a parameter like demand). Demand is fixed, so this
rewards spare capacity where the mix needs it: a replica that cannot serve the class limiting the mix
adds no headroom (the per-replica sum used before credited such replicas in full and planned, on the
Azure code trace, 12 int8 TP2 replicas that skip long prompts and one TP8 replica for all of them).
``H`` assumes the best routing; :func:`~oserve.policies.evaluate.evaluate` scores the headroom with pooled
routing (:func:`oserve.policies.problem.pooled_headroom`, at most ``H``), and :meth:`Planner.allocate`
then moves replicas for it (:mod:`oserve.policies.pooling`, starting also from greedy's counts). And
``R = -device_cost_rps * sum devices_per_replica[v] * n[v, g]`` otherwise (idle devices freed).
Capacities are the table's times ``target_utilization``.

The compiled cvxpy problem is cached per problem structure with demand and current replicas as
parameters, so re-planning the same cluster and table only re-solves. After every solve the status
is checked and the returned point re-verified against the constraints (cvxpy reports HiGHS's time
limit as ``user_limit`` with whatever values HiGHS had, possibly all zeros); an invalid or missing
point falls back to :class:`~oserve.policies.greedy.GreedyPlanner` and is never applied. A
verified incumbent from a time-limited solve is used only if it beats the heuristic.

Every solve ends in one :class:`SolveOutcome` (named at the start of the plan's reason):

=================  ===============================================  ==========================
outcome            when                                             plan used
=================  ===============================================  ==========================
``optimal``        HiGHS proved optimality, point verified          the MILP's
``incumbent``      limit reached, verified point beats greedy       the MILP's
``greedy_better``  limit reached, verified point worse than greedy  greedy's
``rejected``       a point came back but fails verification         greedy's
``no_solution``    no point (infeasible/unbounded/unknown status)   greedy's
``solver_error``   the solver raised (``SolverError``, cvxpy's      greedy's
                   ``ValueError: Cannot unpack invalid solution``)
``no_solver``      cvxpy/HiGHS not installed                        greedy's
=================  ===============================================  ==========================

Scaling: rates enter the model divided by ``s``, the geometric mean of the smallest and largest
positive capacity (the objective's req/s weights too), so every coefficient is O(1) whatever the
table's units; the plan is scaled back and verified in the same scaled units. The table itself
bounds capacities to ``[MIN_CAPACITY_RPS, MAX_CAPACITY_RPS]`` (see :mod:`oserve.profiles.table`).
HiGHS runs with ``output_flag`` off, so no solve prints its banner or log.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from oserve.errors import ConfigError
from oserve.policies.base import Allocation, Planner
from oserve.policies.greedy import GreedyPlanner, fast_objective
from oserve.policies.problem import ObjectiveWeights, Problem, headroom_shares

__all__ = ["MILPPlanner", "SolveOutcome", "milp_solver_available"]

log = logging.getLogger(__name__)
_TOL = 1e-6


@lru_cache(maxsize=1)
def milp_solver_available() -> bool:
    """True when cvxpy and its HiGHS interface (``highspy``) are installed. Logs once when not."""
    try:
        import cvxpy as cp

        ok = "HIGHS" in cp.installed_solvers()
    except ImportError:
        ok = False
    if ok:
        _discard_banner()
    if not ok:
        log.warning("no MILP-capable solver (cvxpy with HiGHS via highspy) is installed; "
                    "MILPPlanner will use the greedy heuristic")
    return ok


def _discard_banner() -> None:
    """HiGHS prints a banner on stdout when the first ``Highs`` object of a process is made (whatever
    ``output_flag`` says); make that first object with fd 1 on ``/dev/null`` so no output of oserve
    (``oserve plan --format json`` included) carries it."""
    import os
    import sys

    import highspy

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (embedded); nothing to protect
        highspy.Highs()
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
        _flush_c_stdio()  # the banner may sit in C's stdout buffer; flush it while fd 1 is /dev/null
    finally:
        os.close(devnull)
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library handle on this platform
        pass


class SolveOutcome(StrEnum):
    """How one MILP solve ended and which plan was used (see the module docstring's table)."""

    OPTIMAL = "optimal"
    INCUMBENT = "incumbent"
    GREEDY_BETTER = "greedy_better"
    REJECTED = "rejected"
    NO_SOLUTION = "no_solution"
    SOLVER_ERROR = "solver_error"
    NO_SOLVER = "no_solver"


@dataclass
class _Model:
    """A compiled model for one problem structure."""

    pairs: list[tuple[int, int]]   # (c, v) with x variables
    slots: list[tuple[int, int]]   # (v, g) with n variables
    solve: Any                     # callable(demand (C,), current (Q,), switch_cost, time_limit_s, gap, threads)


@dataclass(frozen=True)
class _Point:
    status: str
    n: np.ndarray | None
    x: np.ndarray | None
    optimal: bool
    error: str | None = None  # the solver raised: what it said


def _scaled(problem: Problem) -> tuple[Problem, float]:
    """The same problem with every rate divided by ``s`` (capacities, demand, req/s weights), and ``s``.

    The objective is linear in rates, so its maximiser is unchanged; ``s`` is the geometric mean of
    the smallest and largest positive capacity, which centres the capacities' exponents on 0.
    """
    pos = problem.cap[problem.cap > 0]
    if pos.size == 0:
        return problem, 1.0
    s = float(np.sqrt(pos.min()) * np.sqrt(pos.max()))
    if not np.isfinite(s) or s <= 0:
        return problem, 1.0
    w = problem.weights
    weights = w.model_copy(update={"switch_cost_rps_per_s": w.switch_cost_rps_per_s / s,
                                   "device_cost_rps": w.device_cost_rps / s})
    return dataclasses.replace(problem, cap=problem.cap / s, demand=problem.demand / s, weights=weights), s


def _structure(problem: Problem) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    V, C = problem.cap.shape
    usable = problem.usable()
    pairs = [(c, v) for v in range(V) for c in range(C) if usable[v, c]]
    slots = [(v, g) for v in range(V) for g in range(len(problem.groups)) if problem.fits[v, g]]
    return pairs, slots


def _matrices(problem: Problem, pairs: list[tuple[int, int]], slots: list[tuple[int, int]]) -> dict[str, Any]:
    from scipy.sparse import coo_matrix

    V, C = problem.cap.shape
    G, P, Q = len(problem.groups), len(pairs), len(slots)
    return {
        "Gd": coo_matrix(([float(problem.dev[v]) for v, _ in slots], ([g for _, g in slots], range(Q))),
                         shape=(G, Q)).tocsr(),
        # The model's rate variables are y = x / cap (replica-time shares): time rows get coefficient 1,
        # demand rows and the objective get cap, so no row mixes 1/cap of very different capacities.
        "T": coo_matrix((np.ones(P), ([v for _, v in pairs], range(P))),
                        shape=(V, P)).tocsr(),
        "S": coo_matrix((np.ones(Q), ([v for v, _ in slots], range(Q))), shape=(V, Q)).tocsr(),
        "D": coo_matrix((np.array([problem.cap[v, c] for c, v in pairs], dtype=float),
                         ([c for c, _ in pairs], range(P))), shape=(C, P)).tocsr(),
        "capx": np.array([problem.cap[v, c] for c, v in pairs], dtype=float),
        "ub": np.array([problem.max_replicas()[v, g] for v, g in slots], dtype=float),
        "start": np.array([problem.start_s[v] for v, _ in slots]),
        "devq": np.array([float(problem.dev[v]) for v, _ in slots]),
        "cap_g": problem.group_devices.astype(float),
        "xval": np.array([problem.served_value()[c, v] for c, v in pairs], dtype=float),
    }


def _headroom_share(problem: Problem, demand: np.ndarray) -> np.ndarray:
    """The demand mix of the headroom term, shares of the usable classes summing to 1 (C,)."""
    return headroom_shares(np.where(problem.usable(), problem.cap, 0.0), demand)


def _headroom_bound(problem: Problem) -> float:
    """An upper bound on the planned capacity ``R`` (req/s, problem units): every replica on its best class."""
    best = np.where(problem.usable(), problem.cap, 0.0).max(axis=1)
    return float((best * problem.max_replicas().sum(axis=1)).sum()) + 1.0


def _build_cvxpy(problem: Problem, pairs: list[tuple[int, int]], slots: list[tuple[int, int]]) -> _Model:
    import cvxpy as cp

    m = _matrices(problem, pairs, slots)
    V, C = problem.cap.shape
    P, Q = len(pairs), len(slots)
    w = problem.weights
    n = cp.Variable(Q, integer=True)
    x = cp.Variable(P, nonneg=True)
    s = cp.Variable(Q, nonneg=True)
    dem = cp.Parameter(C, nonneg=True)
    cur = cp.Parameter(Q, nonneg=True)
    share = cp.Parameter(C, nonneg=True)  # the demand mix of the headroom term (shares of usable classes)
    swc = cp.Parameter(nonneg=True)  # switch cost per start-second (0 without a current plan)
    cons = [n >= 0, n <= m["ub"], m["Gd"] @ n <= m["cap_g"], m["T"] @ x <= m["S"] @ n, m["D"] @ x <= dem,
            s >= n - cur, s >= cur - n]
    obj = (m["capx"] * m["xval"]) @ x - swc * (m["start"] @ s)
    if w.fill_idle_devices:
        # headroom: R req/s of the demand mix fit in the replicas' time (z: its replica-time shares)
        z = cp.Variable(P, nonneg=True)
        r = cp.Variable(nonneg=True)
        cons += [m["T"] @ z <= m["S"] @ n, m["D"] @ z >= cp.multiply(share, r), r <= _headroom_bound(problem)]
        obj = obj + w.spare_capacity_value * r
    else:
        obj = obj - w.device_cost_rps * (m["devq"] @ n)
    prob = cp.Problem(cp.Maximize(obj), cons)

    def solve(demand: np.ndarray, current: np.ndarray, switch_cost: float, time_limit_s: float, gap: float,
              threads: int) -> _Point:
        dem.value = demand
        cur.value = current
        share.value = _headroom_share(problem, demand)
        swc.value = switch_cost
        try:
            with warnings.catch_warnings():  # "solution may be inaccurate": the point is verified below
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver="HIGHS", time_limit=float(time_limit_s), mip_rel_gap=float(gap), threads=threads,
                           output_flag=False, verbose=False)
        # SolverError, and ValueError("Cannot unpack invalid solution") when HiGHS ends in an unknown
        # status; any exception from the solver leads to the same documented fallback.
        except Exception as exc:  # noqa: BLE001
            return _Point("solver_error", None, None, False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        nv = None if n.value is None else np.asarray(n.value, dtype=float).reshape(Q)
        xv = None if x.value is None else np.asarray(x.value, dtype=float).reshape(P) * m["capx"]
        return _Point(str(prob.status), nv, xv, prob.status == cp.OPTIMAL)

    return _Model(pairs, slots, solve)


def _build_highspy(problem: Problem, pairs: list[tuple[int, int]], slots: list[tuple[int, int]]) -> _Model:
    import highspy as hp
    from scipy.sparse import bmat, csr_matrix, identity

    m = _matrices(problem, pairs, slots)
    P, Q = len(pairs), len(slots)
    V = m["T"].shape[0]
    w = problem.weights
    I_q = identity(Q, format="csr")
    C = m["D"].shape[0]
    fill = w.fill_idle_devices
    # columns: n (Q), x (P), s (Q) [, z (P), R (1) with fill_idle_devices: the headroom term].
    # Rows: devices (groups), time (V), demand (C), switch (2Q) [, headroom time (V), headroom mix (C)].
    blocks = [[m["Gd"], None, None], [-m["S"], m["T"], None], [None, m["D"], None],
              [I_q, None, -I_q], [-I_q, None, -I_q]]
    cost = np.concatenate([(0.0 if fill else w.device_cost_rps) * m["devq"], -(m["capx"] * m["xval"]),
                           w.switch_cost_rps_per_s * m["start"]])
    inf = hp.kHighsInf
    col_lo = np.zeros(2 * Q + P)
    col_hi = np.concatenate([m["ub"], np.full(P, inf), np.full(Q, inf)])
    integrality = [hp.HighsVarType.kInteger] * Q + [hp.HighsVarType.kContinuous] * (P + Q)
    if fill:
        cost = np.concatenate([cost, np.zeros(P), [-w.spare_capacity_value]])
        col_lo = np.zeros(2 * Q + 2 * P + 1)
        col_hi = np.concatenate([col_hi, np.full(P, inf), [_headroom_bound(problem)]])
        integrality += [hp.HighsVarType.kContinuous] * (P + 1)

    def matrix(share: np.ndarray) -> Any:
        if not fill:
            return bmat(blocks, format="csc")
        rows = [[*b, None, None] for b in blocks]
        rows += [[-m["S"], None, None, m["T"], None],
                 [None, None, None, -m["D"], csr_matrix(share.reshape(C, 1))]]
        return bmat(rows, format="csc")

    def solve(demand: np.ndarray, current: np.ndarray, switch_cost: float, time_limit_s: float, gap: float,
              threads: int) -> _Point:
        h = hp.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", int(threads))
        h.setOptionValue("time_limit", float(time_limit_s))
        h.setOptionValue("mip_rel_gap", float(gap))
        A = matrix(_headroom_share(problem, demand))
        cost[Q + P:2 * Q + P] = switch_cost * m["start"]
        row_hi = np.concatenate([m["cap_g"], np.zeros(V), demand, current, -current]
                                + ([np.zeros(V), np.zeros(C)] if fill else []))
        lp = hp.HighsLp()
        lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, col_lo, col_hi
        lp.row_lower_, lp.row_upper_ = np.full(A.shape[0], -inf), row_hi
        lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
        lp.integrality_ = integrality
        try:
            h.passModel(lp)
            h.run()
            status = h.getModelStatus()
            sol = np.asarray(h.getSolution().col_value, dtype=float)
            name = h.modelStatusToString(status)
        except Exception as exc:  # noqa: BLE001 - any solver failure falls back the same way
            return _Point("solver_error", None, None, False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        if sol.size != A.shape[1]:
            return _Point(name, None, None, False)
        return _Point(name, sol[:Q], sol[Q:Q + P] * m["capx"], status == hp.HighsModelStatus.kOptimal)

    return _Model(pairs, slots, solve)


def verify(problem: Problem, pairs: list[tuple[int, int]], slots: list[tuple[int, int]], n: np.ndarray | None,
           x: np.ndarray | None) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Re-check a solver point against every constraint.

    Returns:
        ``("", counts (V, G), served (C, V))`` when valid, else ``(what is wrong, None, None)``.
    """
    if n is None or x is None:
        return "no solution values", None, None
    if n.shape != (len(slots),) or x.shape != (len(pairs),):
        return "wrong number of values", None, None
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(x))):
        return "non-finite values", None, None
    V, C = problem.cap.shape
    rn = np.round(n)
    if np.any(np.abs(n - rn) > 1e-6) or np.any(rn < 0):
        return "replica counts not non-negative integers", None, None
    if np.any(x < -_TOL):
        return "negative served rate", None, None
    counts = np.zeros((V, len(problem.groups)), dtype=np.int64)
    for (v, g), k in zip(slots, rn, strict=True):
        counts[v, g] = int(k)
    if np.any(counts > problem.max_replicas()):
        return "replicas over a group's bound", None, None
    if np.any((counts * problem.dev[:, None]).sum(axis=0) > problem.group_devices):
        return "devices over a node group's devices", None, None
    served = np.zeros((C, V))
    for (c, v), val in zip(pairs, np.maximum(x, 0.0), strict=True):
        served[c, v] = val
    time = (served / np.where(problem.cap.T > 0, problem.cap.T, np.inf)).sum(axis=0)
    if np.any(time > counts.sum(axis=1) + 1e-5 * np.maximum(1.0, counts.sum(axis=1))):
        return "served rate over the replicas' capacity", None, None
    if np.any(served.sum(axis=1) > problem.demand + 1e-6 * np.maximum(1.0, problem.demand)):
        return "served rate over demand", None, None
    # remove solver round-off so the plan is exactly feasible
    scale = np.minimum(1.0, counts.sum(axis=1) / np.maximum(time, 1e-300))
    served = served * scale[None, :]
    over = served.sum(axis=1)
    with np.errstate(over="ignore"):  # demand / ~0 overflows to inf; min(1, inf) = 1
        served = served * np.minimum(1.0, problem.demand / np.maximum(over, 1e-300))[:, None]
    return "", counts, served


class MILPPlanner(Planner):
    """Optimal planner (MILP, cvxpy + HiGHS), falling back to the greedy heuristic.

    Args:
        weights: objective weights.
        time_limit_s: HiGHS time limit per solve, s (> 0).
        mip_rel_gap: relative optimality gap at which HiGHS stops (HiGHS default 1e-4).
        backend: ``"cvxpy"`` (default) or ``"highspy"`` (the same model passed to HiGHS directly,
            without cvxpy's compile step).
        threads: HiGHS threads (default 1: these models are small and parallel search only adds
            overhead; measured 2x less CPU time per solve at 4 x 8 GPUs than HiGHS's default).

    Raises:
        ConfigError: invalid ``time_limit_s``, ``mip_rel_gap`` or ``backend``.
    """

    name = "milp"
    use_pooling_search = True  # plan replicas for pooled routing (oserve.policies.pooling)
    use_single_variant_floor = True  # never plan less goodput than the best single-variant deployment

    def __init__(self, weights: ObjectiveWeights | Mapping[str, Any] | None = None, time_limit_s: float = 5.0,
                 mip_rel_gap: float = 1e-4, backend: Literal["cvxpy", "highspy"] = "cvxpy", threads: int = 1) -> None:
        super().__init__(weights)
        if not time_limit_s > 0:
            raise ConfigError(f"time_limit_s must be > 0 s, got {time_limit_s}", field="planner.time_limit_s",
                              allowed="> 0 seconds")
        if not 0 <= mip_rel_gap < 1:
            raise ConfigError(f"mip_rel_gap must be in [0, 1), got {mip_rel_gap}", field="planner.mip_rel_gap",
                              allowed="[0, 1)")
        if backend not in ("cvxpy", "highspy"):
            raise ConfigError(f"unknown MILP backend {backend!r}", field="planner.backend", allowed="cvxpy, highspy")
        if not threads >= 1:
            raise ConfigError(f"threads must be >= 1, got {threads}", field="planner.threads", allowed=">= 1")
        self.threads = int(threads)
        self.time_limit_s = float(time_limit_s)
        self.mip_rel_gap = float(mip_rel_gap)
        self.backend = backend
        self.solver_available = milp_solver_available()
        self._fallback = GreedyPlanner(self.weights)
        self._models: OrderedDict[tuple, _Model] = OrderedDict()
        self._greedy_last: tuple[Problem, bytes, Allocation] | None = None

    def _greedy_allocation(self, problem: Problem) -> Allocation:
        """The greedy heuristic's allocation of ``problem``, computed once per problem: one plan asks for it as
        a pooling-search start, a floor candidate and (when the solve fails) the fallback. The cache holds for
        the same object with the same demand and running counts (a frozen Problem's arrays can still be
        written), and each caller gets its own copy of the counts."""
        key = problem.demand.tobytes() + problem.current.tobytes()
        last = self._greedy_last
        if last is None or last[0] is not problem or last[1] != key:
            last = self._greedy_last = (problem, key, self._fallback._allocate(problem))
        alloc = last[2]
        return dataclasses.replace(alloc, counts=np.array(alloc.counts, copy=True))

    def _model(self, problem: Problem) -> _Model:
        key = (self.backend, problem.variants, problem.classes, problem.cap.tobytes(), problem.dev.tobytes(),
               problem.start_s.tobytes(), problem.fits.tobytes(), problem.group_devices.tobytes(),
               problem.weights, None if problem.quality is None else problem.quality.tobytes())
        model = self._models.get(key)
        if model is None:
            pairs, slots = _structure(problem)
            build = _build_cvxpy if self.backend == "cvxpy" else _build_highspy
            model = build(problem, pairs, slots)
            self._models[key] = model
            if len(self._models) > 8:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(key)
        return model

    def _solve(self, model: _Model, problem: Problem) -> _Point:
        current = np.array([float(problem.current[v, g]) for v, g in model.slots])
        return model.solve(problem.demand, current, problem.switch_cost, self.time_limit_s, self.mip_rel_gap, self.threads)

    def _allocate(self, problem: Problem) -> Allocation:
        outcome, alloc = self.solve_outcome(problem)
        return alloc

    def _pooling_starts(self, problem: Problem) -> list[np.ndarray]:
        """The greedy heuristic's counts: it fills idle devices for pooled headroom directly, which the MILP's
        linear headroom term only bounds, so the pooling search also starts there (the MILP plan is then never
        worse than greedy's under :func:`oserve.policies.evaluate.evaluate`)."""
        if not problem.weights.fill_idle_devices:
            return []
        return [np.asarray(self._greedy_allocation(problem).counts, dtype=np.int64)]

    def floor_allocations(self, problem: Problem) -> list[Allocation]:
        """The greedy heuristic's allocation, which :func:`oserve.policies.base.single_variant_floor` takes
        over the MILP's plan in two cases (``docs/planning.md``): it carries more goodput (under overload
        the MILP credits serving part of a class, ``x <= demand``, while the plan routes all of it); or,
        with ``fill_idle_devices`` only, it carries the same goodput with a higher objective under
        :func:`oserve.policies.evaluate.evaluate` and replica quality no lower (the MILP prices
        headroom with its best routing, not the pooled routing the plan runs)."""
        return [self._greedy_allocation(problem)]

    def solve_outcome(self, problem: Problem) -> tuple[SolveOutcome, Allocation]:
        """Solve ``problem`` and say how the solve ended; never raises for a solver failure.

        Returns:
            ``(outcome, allocation)``: the allocation is the MILP's for ``optimal`` / ``incumbent``
            and the greedy heuristic's otherwise; its reason starts with ``MILP <outcome>``.
        """
        if not self.solver_available:
            return self._greedy(problem, SolveOutcome.NO_SOLVER, "no MILP solver installed")
        scaled, s = _scaled(problem)
        model = self._model(scaled)
        if not model.slots:
            V, G = problem.fits.shape
            return SolveOutcome.OPTIMAL, Allocation(np.zeros((V, G), dtype=np.int64), None,
                                                    "MILP optimal: no variant fits any node", True)
        point = self._solve(model, scaled)
        if point.error is not None:
            log.warning("MILP solver failed (%s); using the greedy heuristic", point.error)
            return self._greedy(problem, SolveOutcome.SOLVER_ERROR, f"solver raised {point.error}")
        if point.n is None or point.x is None:
            return self._greedy(problem, SolveOutcome.NO_SOLUTION, f"status {point.status}, no solution values")
        problem_msg, counts, served = verify(scaled, model.pairs, model.slots, point.n, point.x)
        if problem_msg or counts is None or served is None:
            return self._greedy(problem, SolveOutcome.REJECTED,
                                f"status {point.status}, solution rejected ({problem_msg})")
        served = served * s
        if point.optimal:
            return SolveOutcome.OPTIMAL, Allocation(counts, served, f"MILP optimal (status {point.status})",
                                                    optimal=True)
        outcome, alloc = self._greedy(problem, SolveOutcome.GREEDY_BETTER,
                                      f"status {point.status}: incumbent worse than greedy")
        assert alloc.served is not None
        if fast_objective(problem, alloc.counts, alloc.served) > fast_objective(problem, counts, served):
            return outcome, alloc
        return SolveOutcome.INCUMBENT, Allocation(
            counts, served, f"MILP incumbent (status {point.status}): verified, optimality not proven", optimal=False)

    def _greedy(self, problem: Problem, outcome: SolveOutcome, why: str) -> tuple[SolveOutcome, Allocation]:
        alloc = self._greedy_allocation(problem)
        return outcome, Allocation(alloc.counts, alloc.served, f"MILP {outcome.value}: {why}; fell back to greedy: "
                                   f"{alloc.reason}", optimal=False)
