"""FlowPlanner: the two-level method of the OServe paper (arXiv 2602.12151), max-flow inside a
deployment-refinement loop.

Inner level: a max-flow problem assigns request classes to the deployed replicas. The network is
source -> class ``c`` (capacity = demand, req/s) -> variant ``v`` (capacity = replicas x the
replica's capacity for the class, req/s) -> sink. Replicas of one variant are interchangeable, so
they are one node of the network carrying their summed capacity. Max-flow edge capacities cannot
express that a replica's time is shared between classes, so each edge gets the capacity of the
share of replica time given to that class (shares of a variant sum to 1, so every flow is
time-sharing feasible: ``sum_c flow[c, v] / cap[v, c] <= replicas[v]``), and the shares are
refined from the flow a few rounds (each variant re-splits its time against the demand the others
leave, classes where it has the largest comparative advantage first).
Outer level: from the flow result, drop replicas the flow leaves idle, then, for each class with
unmet demand (the classes with the most req/s per device first), add replicas of the variant with
the most capacity per device for it (as many as the class needs and free devices allow), or, with
no free device, swap one of the three least productive replicas for it when that raises the
objective; repeat until nothing changes.

Spare devices: with ``ObjectiveWeights.fill_idle_devices`` (the default) the devices the loop leaves
free get replicas afterwards, by the same post-step as the greedy planner
(:func:`oserve.policies.greedy.fill_idle`), and the final flow runs on the filled deployment.

Flow computed with networkx on capacities scaled to integers
(micro-req/s) and edge costs = device time per request (device-ms), i.e. ``networkx.max_flow_min_cost``:
among maximum flows, the one using the least replica time, so each class prefers the replicas that
serve it with the fewest device-seconds. Exact integer arithmetic, deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from oserve.policies.base import Allocation, Planner
from oserve.policies.greedy import fast_objective, fill_idle
from oserve.policies.problem import ObjectiveWeights, Problem

__all__ = ["FlowPlanner", "flow_assignment"]

_SCALE = 1_000_000  # flow units per req/s


def _max_flow(problem: Problem, edge_cap: np.ndarray) -> np.ndarray:
    """Max-flow of classes to variants with edge capacities ``edge_cap[c, v]`` (C, V), req/s."""
    import networkx as nx

    C, V = edge_cap.shape
    g = nx.DiGraph()
    for c in range(C):
        if problem.demand[c] > 0:
            g.add_edge("s", ("c", c), capacity=round(problem.demand[c] * _SCALE))
        for v in range(V):
            if edge_cap[c, v] > 0 and problem.demand[c] > 0:
                g.add_edge(("c", c), ("v", v), capacity=round(edge_cap[c, v] * _SCALE),
                           weight=int(round(1000.0 * problem.dev[v] / problem.cap[v, c])))
                g.add_edge(("v", v), "t")  # no capacity attribute: unbounded
    out = np.zeros((C, V))
    if "s" not in g or "t" not in g:
        return out
    flow = nx.max_flow_min_cost(g, "s", "t")
    for c in range(C):
        for node, f in flow.get(("c", c), {}).items():
            out[c, node[1]] = f / _SCALE
    return out


def flow_assignment(problem: Problem, replicas: np.ndarray, rounds: int = 6) -> np.ndarray:
    """Time-sharing-feasible served rates (C, V), req/s, from max-flow on ``replicas`` (V,).

    Each class-to-variant edge carries ``replicas x cap[v, c] x share[c, v]``, where ``share[:, v]``
    (summing to 1) is the fraction of the variant's replica time given to each class, so every flow
    is feasible under time sharing. Shares start equal over the classes with demand. After each
    max-flow, each variant in turn re-splits its time against the demand the other variants leave,
    classes where it has the largest comparative advantage first (its capacity per device over the
    best variant's capacity per device for that class; ties: most requests per unit of time), spare
    time spread evenly, and the flow is re-run. The best flow found is returned, with rounding dust
    removed and spare replica time topped up on edges the flow already uses.
    """
    cap_t = problem.cap.T  # (C, V)
    usable = (cap_t > 0) & (replicas > 0)[None, :] & (problem.demand > 0)[:, None]
    n_usable = usable.sum(axis=0)
    even = np.where(usable, 1.0 / np.maximum(n_usable, 1)[None, :], 0.0)
    share = even.copy()
    full = cap_t * replicas[None, :]
    per_device = cap_t / problem.dev[None, :]
    best_pd = np.where(usable, per_device, 0.0).max(axis=1)
    advantage = np.where(usable, per_device / np.where(best_pd > 0, best_pd, 1.0)[:, None], 0.0)
    best = np.zeros_like(cap_t)
    for _ in range(rounds):
        f = _max_flow(problem, np.where(usable, full * share, 0.0))
        if f.sum() > best.sum() + 1e-9:
            best = f
        new = np.zeros_like(share)
        cur = f.copy()
        for v in np.flatnonzero(n_usable):
            residual = problem.demand - (cur.sum(axis=1) - cur[:, v])
            time_left = 1.0
            cur[:, v] = 0.0
            for c in np.lexsort((-cap_t[:, v], -advantage[:, v])):
                if not usable[c, v] or time_left <= 1e-12 or residual[c] <= 0:
                    continue
                t = min(time_left, residual[c] / full[c, v])
                new[c, v] = t
                cur[c, v] = t * full[c, v]
                time_left -= t
            new[:, v] += time_left * even[:, v]
        if np.allclose(new, share, atol=1e-9):
            break
        share = new
    # drop integer-rounding dust: flows under 10 units or 1e-5 of the class's demand
    dust = np.maximum(10.0 / _SCALE, 1e-5 * problem.demand)[:, None]
    best = np.where(best >= dust, best, 0.0)
    # top up: spare replica time serves what is left of each class (rounding of the integer flow)
    with np.errstate(divide="ignore", invalid="ignore"):
        spare = 1.0 - np.where(usable, best / np.where(usable, full, 1.0), 0.0).sum(axis=0)
    for v in np.flatnonzero(n_usable):
        for c in np.lexsort((-cap_t[:, v], -advantage[:, v])):
            unmet = problem.demand[c] - best[c].sum()
            if not usable[c, v] or unmet <= 0 or spare[v] <= 1e-12 or best[c, v] <= 0:
                continue
            add = min(unmet, spare[v] * full[c, v])
            best[c, v] += add
            spare[v] -= add / full[c, v]
    return best


class FlowPlanner(Planner):
    """The OServe paper's planner: max-flow class assignment within a deployment-refinement loop.

    Args:
        weights: objective weights.
        max_iterations: outer-loop iterations (each runs one max-flow assignment).
    """

    name = "flow"
    use_pooling_search = True  # plan replicas for pooled routing (oserve.policies.pooling)
    use_single_variant_floor = True  # never plan less goodput than the best single-variant deployment

    def __init__(self, weights: ObjectiveWeights | Mapping[str, Any] | None = None, max_iterations: int = 60) -> None:
        super().__init__(weights)
        self.max_iterations = max_iterations

    def _add(self, problem: Problem, counts: np.ndarray, v: int, k: int) -> int:
        """Add up to ``k`` replicas of ``v`` first-fit over groups; returns how many were added."""
        free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
        maxr = problem.max_replicas()
        added = 0
        for g in range(len(problem.groups)):
            if not problem.fits[v, g]:
                continue
            room = min(int(free[g] // problem.dev[v]), int(maxr[v, g] - counts[v, g]))
            take = min(room, k - added)
            counts[v, g] += take
            added += take
            if added >= k:
                break
        return added

    def _room(self, problem: Problem, counts: np.ndarray, v: int) -> bool:
        free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
        return bool(np.any(problem.fits[v] & (free >= problem.dev[v])))

    def _allocate(self, problem: Problem) -> Allocation:
        V, G = problem.fits.shape
        counts = np.zeros((V, G), dtype=np.int64)
        served = np.zeros((len(problem.classes), V))
        per_device = problem.cap / problem.dev[:, None]  # (V, C) req/s per device
        usable = problem.usable()
        iters = 0
        for iters in range(1, self.max_iterations + 1):  # noqa: B007
            served = flow_assignment(problem, counts.sum(axis=1))
            # drop replicas the flow leaves idle
            with np.errstate(divide="ignore", invalid="ignore"):
                time = np.where(problem.cap.T > 0, served / np.where(problem.cap.T > 0, problem.cap.T, 1.0),
                                0.0).sum(axis=0)
            need = np.ceil(time - 1e-7).astype(np.int64)
            for v in range(V):
                extra = int(counts[v].sum() - need[v])
                for g in reversed(range(G)):
                    if extra <= 0:
                        break
                    drop = min(extra, int(counts[v, g]))
                    counts[v, g] -= drop
                    extra -= drop
            unmet = problem.demand - served.sum(axis=1)
            # classes short of capacity, the most req/s per device first (they gain most per device)
            density = np.where(usable, per_device, 0.0).max(axis=0)
            order = [c for c in np.lexsort((-unmet, -density)) if unmet[c] > 1e-9 and usable[:, c].any()]
            changed = False
            for c in order:
                cands = [v for v in np.argsort(-per_device[:, c], kind="stable")
                         if usable[v, c] and self._room(problem, counts, v)]
                if cands:
                    v = cands[0]
                    k = int(np.ceil(unmet[c] / problem.cap[v, c] - 1e-9))
                    if self._add(problem, counts, v, max(1, k)):
                        changed = True
            for c in order if not changed else []:
                if self._swap(problem, counts, served, c, per_device, usable):
                    changed = True
                    break
            if not changed:
                break
        counts = fill_idle(problem, counts)
        served = flow_assignment(problem, counts.sum(axis=1))
        return Allocation(counts=counts, served=served, reason=f"max-flow assignment, {iters} refinement iterations"
                          + (", idle devices filled" if problem.weights.fill_idle_devices else ""))

    def _swap(self, problem: Problem, counts: np.ndarray, served: np.ndarray, c: int, per_device: np.ndarray,
              usable: np.ndarray) -> bool:
        """Replace the least productive replica (served req/s per device) by one better for class ``c``."""
        reps = counts.sum(axis=1)
        prod = np.where(reps > 0, served.sum(axis=0) / np.maximum(reps * problem.dev, 1), np.inf)
        base = fast_objective(problem, counts, served)
        tried = 0
        for u in np.argsort(prod, kind="stable"):
            if reps[u] == 0:
                break
            for v in np.argsort(-per_device[:, c], kind="stable"):
                if v == u or not usable[v, c]:
                    continue
                trial = counts.copy()
                g = int(np.flatnonzero(trial[u] > 0)[-1])
                trial[u, g] -= 1
                if not self._add(problem, trial, int(v), max(1, int(problem.dev[u] // problem.dev[v]))):
                    continue
                s = flow_assignment(problem, trial.sum(axis=1))
                if fast_objective(problem, trial, s) > base + 1e-9:
                    counts[:] = trial
                    return True
            tried += 1
            if tried >= 3:
                return False
        return False
