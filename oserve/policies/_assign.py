"""Best class-to-variant assignment for fixed replica counts: a small LP (internal).

maximise sum_{c,v} x[c, v] - eps * sum x[c, v] / cap[v, c]
s.t.     sum_c x[c, v] / cap[v, c] <= replicas[v]      (time sharing, per variant)
         sum_v x[c, v] <= demand[c]                     (per class)
         x >= 0, x[c, v] = 0 where cap[v, c] = 0

The tiny second term prefers the variant that serves a class in less replica time, which leaves
slack where it is useful and makes the answer unique in common ties. Solved with SciPy's HiGHS.
"""

from __future__ import annotations

import numpy as np

from oserve.policies._problem import Problem

__all__ = ["optimal_assignment"]


def optimal_assignment(problem: Problem, replicas: np.ndarray) -> np.ndarray:
    """Served rate ``x[c, v]`` (C, V), req/s, maximising goodput for ``replicas[v]`` (V,).

    Raises:
        RuntimeError: SciPy's HiGHS reports failure (does not happen for these always-feasible LPs).
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
    inv = np.array([1.0 / problem.cap[v, c] for c, v in pairs])
    rows = [v for _, v in pairs] + [V + c for c, _ in pairs]
    cols = list(range(P)) * 2
    vals = np.concatenate([inv, np.ones(P)])
    A = coo_matrix((vals, (rows, cols)), shape=(V + C, P)).tocsr()
    b = np.concatenate([replicas.astype(float), problem.demand])
    res = linprog(-(1.0 - 1e-6 * inv / inv.max()), A_ub=A, b_ub=b, bounds=(0, None), method="highs")
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"assignment LP failed: {res.message}")
    for k, (c, v) in enumerate(pairs):
        x[c, v] = max(0.0, float(res.x[k]))
    return x
