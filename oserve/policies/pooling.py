"""Plan for pooled routing: every class spread over every replica that can serve it (pure).

The planning model is fluid: a class's load is a rate, and any split of it over replicas with the
time to serve it is as good as any other. Real arrivals come in bursts, and a burst queues on the
replicas its class is routed to, so a class spread over many replicas meets the SLO at loads where
the same class on a few replicas does not. Measured in the simulator on the Azure 2023 traces (70B
table, 4 x 8 A100-80GB, bench/results/capacity_integrated.json, docs/capacity.md): plans whose
routing kept a class on 2 of 5-8 replicas met the SLO for 76-81 % of that class's requests at loads
where a single-variant deployment, which pools every class over all its replicas, met it for 95 %.

:func:`pooled_headroom` is the largest rate of the demand mix a set of replicas carries when every
class is routed to every replica that serves it in proportion to its capacity (routing
``x[c, v] = R * share[c] * n[v] * cap[v, c] / K[c]``, ``K[c] = sum_u n[u] * cap[u, c]``): each
variant's utilization is then ``R * sum_{c it serves} share[c] / K[c]``, so
``R = 1 / max_v sum_{c it serves} share[c] / K[c]``. :func:`pooling_search` improves a planner's
replica counts for that measure by local search (replace replicas of one variant with another, or
fill free devices), keeping the demand served within SLO under pooled routing, and scoring the
rest of the objective in the order the planner ranks it (goodput, then quality, then spare capacity):
the value of the traffic served (goodput, less the quality cost of the variants serving it) first,
then the replicas' own quality (which serves the next requests; decisive at zero demand), then spare
capacity less switching cost. The order matters once variants differ in quality and a lot
in capacity: on the demo's CPU table (an int8 core carries 2-4x an fp32 core's requests), at 0.65
req/s of light traffic the spare-capacity term of 2 x int8 (0.065 req/s of objective) outweighed the
quality cost of serving that traffic at int8 (0.041), and the search moved full-precision replicas
to int8 for headroom nobody used. Tables without measured quality (every variant at full quality)
rank as before: all candidates that carry the demand serve the same value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oserve.policies.problem import Problem, pooled_headroom

__all__ = ["pooled_headroom", "pooled_served", "pooling_search"]


def pooled_served(cap: np.ndarray, demand: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """Served rate ``x[c, v]`` (C, V), req/s, of ``demand`` (C,) routed pooled over ``replicas`` (V,)."""
    cap = np.asarray(cap, dtype=float)
    weight = (cap * np.asarray(replicas, dtype=float)[:, None]).T  # (C, V)
    tot = weight.sum(axis=1, keepdims=True)
    return np.where(tot > 0, np.asarray(demand, dtype=float)[:, None] * weight / np.where(tot > 0, tot, 1.0), 0.0)


Score = tuple[float, float, float]


def _score(problem: Problem, cap: np.ndarray, counts: np.ndarray) -> tuple[bool, Score]:
    """(demand carried within SLO with pooled routing, rank key) of the counts (V, G) with pooled routing.
    The key, compared in order: value of the traffic served (goodput less quality cost, req/s); the
    replicas' device-weighted quality score (0-1: who serves the next requests, decisive at zero
    demand); spare capacity value less switching cost (req/s)."""
    reps = counts.sum(axis=1).astype(float)
    head = pooled_headroom(cap, problem.demand, reps)
    servable = (cap > 0).any(axis=0)
    total = float(problem.demand[servable].sum())
    ok = head >= total * (1 - 1e-9)
    served = pooled_served(cap, problem.demand, reps)
    value = float((served * problem.served_value()).sum())
    switch = float((np.abs(counts - problem.current) * problem.start_s[:, None]).sum())
    devices = reps * problem.dev
    quality = 1.0 if problem.quality is None or devices.sum() == 0 else \
        float((devices * problem.quality).sum() / devices.sum())
    return ok, (value, quality, problem.weights.spare_capacity_value * head - problem.switch_cost * switch)


def _better(a: Score, b: Score | None, rel: float) -> bool:
    """``a`` ranks above ``b`` (None: nothing yet), key by key (module doc); a key decides when the two
    differ by more than ``rel`` of it (the last one by more than ``rel`` of the whole objective, as the
    single-score search did)."""
    if b is None:
        return True
    scale = max(1.0, abs(a[0]), abs(b[0]))
    if abs(a[0] - b[0]) > rel * scale:
        return a[0] > b[0]
    if abs(a[1] - b[1]) > 1e-9:
        return a[1] > b[1]
    return a[2] > b[2] + rel * max(1.0, abs(b[0] + b[2]))


def _single_variant_fills(problem: Problem) -> list[np.ndarray]:
    maxr = problem.max_replicas()
    out = []
    for v in range(len(problem.variants)):
        if maxr[v].sum() > 0:
            c = np.zeros_like(maxr)
            c[v] = maxr[v]
            out.append(c)
    return out


def _moves(problem: Problem, counts: np.ndarray) -> list[np.ndarray]:
    """Neighbours of ``counts`` (V, G): on one group, remove the fewest replicas of one variant (or none) so
    that a replica of another fits, then add as many of that one as fit."""
    V, G = counts.shape
    maxr = problem.max_replicas()
    out = []
    for g in range(G):
        free = int(problem.group_devices[g] - (counts[:, g] * problem.dev).sum())
        for a in [-1, *range(V)]:
            if a >= 0 and counts[a, g] == 0:
                continue
            for b in range(V):
                if b == a or not problem.fits[b, g] or counts[b, g] >= maxr[b, g]:
                    continue
                db = int(problem.dev[b])
                need = db - free
                k = 0 if need <= 0 else (-(-need // int(problem.dev[a])) if a >= 0 else -1)
                if k < 0 or (a >= 0 and k > counts[a, g]) or (a >= 0 and k == 0):
                    continue
                c = counts.copy()
                if a >= 0:
                    c[a, g] -= k
                room = free + (k * int(problem.dev[a]) if a >= 0 else 0)
                add = min(room // db, int(maxr[b, g] - c[b, g]))
                if add <= 0:
                    continue
                c[b, g] += add
                out.append(c)
    return out


def pooling_search(problem: Problem, counts: np.ndarray, starts: Sequence[np.ndarray] = (),
                   max_steps: int = 64) -> np.ndarray:
    """Replica counts (V, G) at least as good as ``counts`` for the objective with pooled routing.

    Only with ``fill_idle_devices`` (the objective then values planned capacity; in the energy-saving
    mode ``counts`` is returned). Candidates must carry the whole servable demand within SLO with pooled
    routing at the planning capacities; starting from the best of ``counts``, ``starts`` (e.g. another
    planner's counts) and every single-variant cluster fill, best-improvement local search over :func:`_moves` (at most ``max_steps`` steps). Returns
    ``counts`` itself when no candidate carries the demand or none scores higher. Deterministic.
    """
    if not problem.weights.fill_idle_devices:
        return counts
    cap = np.where(problem.usable(), problem.cap, 0.0)
    counts = np.asarray(counts, dtype=np.int64)
    best, best_score = None, None
    for cand in [counts, *(np.asarray(c, dtype=np.int64) for c in starts), *_single_variant_fills(problem)]:
        ok, key = _score(problem, cap, cand)
        if ok and _better(key, best_score, 1e-12):
            best, best_score = cand, key
    if best is None or best_score is None:
        return counts
    for _ in range(max_steps):
        step = None
        for cand in _moves(problem, best):
            ok, key = _score(problem, cap, cand)
            if ok and _better(key, best_score, 1e-9):
                step, best_score = cand, key
        if step is None:
            break
        best = step
    base_ok, base_key = _score(problem, cap, counts)
    if base_ok and not _better(best_score, base_key, 1e-12):
        return counts
    return best
