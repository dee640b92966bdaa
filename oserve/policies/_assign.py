"""Best class-to-variant assignment for fixed replica counts: a small LP (internal).

maximise sum_{c,v} x[c, v] - eps * sum x[c, v] / cap[v, c]
s.t.     sum_c x[c, v] / cap[v, c] <= replicas[v]      (time sharing, per variant)
         sum_v x[c, v] <= demand[c]                     (per class)
         x >= 0, x[c, v] = 0 where cap[v, c] = 0

The tiny second term prefers the variant that serves a class in less replica time, which leaves
slack where it is useful and makes the answer unique in common ties. Solved with SciPy's HiGHS on
rates divided by the geometric mean of the capacities (so coefficients are O(1)); if HiGHS still
fails, a feasible greedy fill (classes to their cheapest variants first) is returned instead, so the
function is total over valid inputs.
"""

from __future__ import annotations

import numpy as np

from oserve.policies.problem import Problem

__all__ = ["optimal_assignment", "balanced_assignment", "fill_assignment", "pooled_assignment"]


def fill_assignment(problem: Problem, replicas: np.ndarray) -> np.ndarray:
    """A feasible (not necessarily optimal) served rate ``x[c, v]`` (C, V), req/s, for ``replicas[v]`` (V,).

    Pairs are filled in order of decreasing capacity (least replica time per request first), each
    taking ``min(demand left, replica time left * cap)``; never over demand or replica time.
    """
    V, C = problem.cap.shape
    x = np.zeros((C, V))
    time_left = replicas.astype(float).copy()
    demand_left = problem.demand.astype(float).copy()
    pairs = sorted(((c, v) for v in range(V) for c in range(C) if problem.cap[v, c] > 0),
                   key=lambda cv: (-problem.cap[cv[1], cv[0]], cv))
    for c, v in pairs:
        take = min(demand_left[c], time_left[v] * problem.cap[v, c])
        if take <= 0:
            continue
        x[c, v] = take
        demand_left[c] = max(0.0, demand_left[c] - take)
        time_left[v] = max(0.0, time_left[v] - take / problem.cap[v, c])
    return x


def optimal_assignment(problem: Problem, replicas: np.ndarray) -> np.ndarray:
    """Served rate ``x[c, v]`` (C, V), req/s, maximising goodput for ``replicas[v]`` (V,).

    Falls back to :func:`fill_assignment` if SciPy's HiGHS reports failure (never raises for valid input).
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    V, C = problem.cap.shape
    x = np.zeros((C, V))
    pairs = [(c, v) for v in range(V) if replicas[v] > 0 for c in range(C)
             if problem.cap[v, c] > 0 and problem.demand[c] > 0]
    if not pairs:
        return x
    P = len(pairs)
    caps = np.array([problem.cap[v, c] for c, v in pairs])
    scale = float(np.sqrt(caps.min()) * np.sqrt(caps.max()))  # rates in units of `scale` req/s
    # Variables y = x / cap (replica time): time rows have coefficient 1, demand rows cap / scale.
    rows = [v for _, v in pairs] + [V + c for c, _ in pairs]
    cols = list(range(P)) * 2
    vals = np.concatenate([np.ones(P), caps / scale])
    A = coo_matrix((vals, (rows, cols)), shape=(V + C, P)).tocsr()
    b = np.concatenate([replicas.astype(float), problem.demand / scale])
    inv = scale / caps  # replica time per unit of served rate: the tie-break term prefers less of it
    res = linprog(-(caps / scale) * (1.0 - 1e-6 * inv / inv.max()), A_ub=A, b_ub=b, bounds=(0, None),
                  method="highs")
    if res.status != 0 or res.x is None or not np.all(np.isfinite(res.x)):
        return fill_assignment(problem, replicas)
    for k, (c, v) in enumerate(pairs):
        x[c, v] = max(0.0, float(res.x[k])) * caps[k]
    # exact feasibility after round-off: never over a variant's replica time or a class's demand
    time = (x / np.where(problem.cap.T > 0, problem.cap.T, np.inf)).sum(axis=0)
    x *= np.minimum(1.0, replicas / np.maximum(time, 1e-300))[None, :]
    with np.errstate(over="ignore"):  # demand / ~0 overflows to inf; min(1, inf) = 1
        x *= np.minimum(1.0, problem.demand / np.maximum(x.sum(axis=1), 1e-300))[:, None]
    return x


def balanced_assignment(problem: Problem, replicas: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Re-route ``served`` (C, V), req/s, over ``replicas`` (V,) so the busiest variant is least utilized.

    Keeps every class's served total and moves it between the variants that can serve it to minimise
    the largest utilization ``max_v sum_c x[c, v] / cap[v, c] / replicas[v]`` (an LP; ties prefer the
    assignment using the least replica time). Spare replicas then take a share of the load instead of
    idling, which lowers queueing on the others. The load served by variants below the reference quality
    (``problem.quality`` < 1) does not grow, so balancing never trades quality for slack. Returns ``served`` unchanged when nothing can move
    or the LP fails.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    V, C = problem.cap.shape
    totals = served.sum(axis=1)
    pairs = [(c, v) for v in range(V) if replicas[v] > 0 for c in range(C)
             if problem.cap[v, c] > 0 and totals[c] > 0]
    if not pairs:
        return served
    P = len(pairs)
    inv = np.array([1.0 / problem.cap[v, c] for c, v in pairs])
    # columns: x (P), u. Rows: per variant time - replicas * u <= 0; per class sum_v x = total.
    used_v = sorted({v for _, v in pairs})
    row_v = {v: i for i, v in enumerate(used_v)}
    A_ub = coo_matrix((np.concatenate([inv, [-float(replicas[v]) for v in used_v]]),
                       ([row_v[v] for _, v in pairs] + list(range(len(used_v))),
                        list(range(P)) + [P] * len(used_v))), shape=(len(used_v), P + 1)).tocsr()
    used_c = sorted({c for c, _ in pairs})
    row_c = {c: i for i, c in enumerate(used_c)}
    A_eq = coo_matrix((np.ones(P), ([row_c[c] for c, _ in pairs], range(P))), shape=(len(used_c), P + 1)).tocsr()
    b_ub = np.zeros(len(used_v))
    short = np.zeros(V) if problem.quality is None else 1.0 - np.asarray(problem.quality, dtype=float)
    if problem.weights.quality_cost_rps > 0 and np.any(short > 0):
        # keep the quality the planner chose: the load served below reference quality may not grow
        row = np.concatenate([[short[v] for _, v in pairs], [0.0]])
        A_ub = vstack([A_ub, row[None, :]]).tocsr()
        b_ub = np.append(b_ub, float((served * short[None, :]).sum()) * (1 + 1e-9) + 1e-12)
    cost = np.concatenate([1e-6 * inv / inv.max(), [1.0]])
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=totals[used_c],
                  bounds=(0, None), method="highs")
    if res.status != 0 or res.x is None:
        return served
    out = np.zeros_like(served)
    for k, (c, v) in enumerate(pairs):
        out[c, v] = max(0.0, float(res.x[k]))
    # exact feasibility: keep the class totals and never exceed the replicas' time
    out *= np.where(out.sum(axis=1) > 0, totals / np.maximum(out.sum(axis=1), 1e-300), 0.0)[:, None]
    time = (out / np.where(problem.cap.T > 0, problem.cap.T, np.inf)).sum(axis=0)
    if np.any(time > replicas * (1 + 1e-10)):
        return served
    return out


def _utilization(problem: Problem, replicas: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Planned utilization of each variant's replicas for ``served`` (C, V): replica time / replicas (V,)."""
    time = (served / np.where(problem.cap.T > 0, problem.cap.T, np.inf)).sum(axis=0)
    return np.where(replicas > 0, time / np.maximum(replicas, 1e-300), 0.0)


def pooled_assignment(problem: Problem, replicas: np.ndarray, served: np.ndarray,
) -> np.ndarray:
    """Spread every class of ``served`` (C, V), req/s, over every replica that can serve it, in proportion
    to capacity, when that costs nothing the planner counts; else ``served`` unchanged.

    Pooled: ``x[c, v] = total[c] * replicas[v] * cap[v, c] / sum_u replicas[u] * cap[u, c]``. When every
    variant serves every class this gives every variant the same utilization, the least possible maximum.
    A min-max assignment (:func:`balanced_assignment`) is not unique: it may keep a class on the few replicas
    of one variant while others idle below the maximum. Arrivals are bursty and a burst queues on the
    replicas its class is routed to, so a class pooled over more replicas waits less at the same mean load
    (measured on the Azure code trace, 70B table: the short-prompt class on 2 of 5 replicas met the SLO for
    76 % of its requests at arrival-rate scale 1.2; diagnosis in docs/capacity.md and
    :mod:`oserve.policies.pooling`). The pooled split is used unless it overloads a variant that ``served``
    does not (a planned utilization above 1, and above that of ``served``: every class stays served within
    SLO in the planner's model, so goodput is unchanged), and only if the load served below reference
    quality does not grow.
    """
    totals = served.sum(axis=1)
    reps = np.asarray(replicas, dtype=float)
    weight = np.where(problem.cap.T > 0, problem.cap.T, 0.0) * reps[None, :]  # (C, V) replica capacity
    pooled = np.zeros_like(served, dtype=float)
    for c in range(served.shape[0]):
        if totals[c] <= 0:
            continue
        tot_w = weight[c].sum()
        if tot_w <= 0:
            return served
        pooled[c] = totals[c] * weight[c] / tot_w
    u_pooled = _utilization(problem, reps, pooled).max(initial=0.0)
    u_served = _utilization(problem, reps, served).max(initial=0.0)
    if u_pooled > max(1.0, u_served) + 1e-9:
        return served
    if problem.quality is not None:
        short = 1.0 - np.asarray(problem.quality, dtype=float)
        if float((pooled * short[None, :]).sum()) > float((served * short[None, :]).sum()) * (1 + 1e-9) + 1e-12:
            return served
    return pooled
