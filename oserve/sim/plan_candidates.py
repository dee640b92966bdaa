"""Candidate plans the sim-scored guard builds beyond the single-variant ones: two-variant mixes, routing splits.

Pure functions of a :class:`oserve.policies.problem.Problem` and the candidates already built
(:class:`oserve.sim.scored_planner.SimScoredPlanner` places and scores them in simulation):

* :func:`mix_candidates`: replica mixes on the line from the best single-variant plan to each other variant;
* :func:`split_candidates`: those mixes with their few minority replicas taking only part of the heavy classes;
* :func:`running_routing`: the running plan's routing as served rates, when it is such a split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from oserve.policies.base import Allocation
from oserve.policies.problem import Problem
from oserve.types import Plan

__all__ = ["counts_label", "mix_candidates", "replica_quality", "running_routing", "split_candidates"]


def running_routing(problem: Problem) -> np.ndarray | None:
    """The running plan's routing as served rates (C, V) for the demand, req/s, when it routes some class to a
    variant the table gives no capacity for it (a split chosen in simulation, :func:`split_candidates`) and
    places every class with demand on running variants; else None. Pure."""
    current = problem.current_plan
    if current is None or not current.routing or problem.current is None:
        return None
    running = np.asarray(problem.current).sum(axis=1) > 0
    served = np.zeros((len(problem.classes), len(problem.variants)))
    split = False
    for ci, c in enumerate(problem.classes):
        ws = {problem.variants.index(v): w for v, w in (current.routing.get(c) or {}).items()
              if v in problem.variants and w > 0 and running[problem.variants.index(v)]}
        if not ws:
            if problem.demand[ci] > 0:
                return None
            continue
        tot = sum(ws.values())
        for vi, w in ws.items():
            served[ci, vi] = problem.demand[ci] * w / tot
            split = split or not problem.cap[vi, ci] > 0
    return served if split else None


def split_candidates(problem: Problem, candidates: Mapping[str, Allocation], plans: Mapping[str, Plan],
                     mixes: Sequence[str], fractions: Sequence[float], n_mixes: int = 4) -> list[tuple[str, Allocation]]:
    """Routing splits of the two-variant mixes closest to the best single-variant plan (the first
    ``n_mixes`` of ``mixes`` that were built). The mix's planner routing sends each class to its majority
    variant (the one with the most devices), its minority variant or both; the classes it sends mostly
    (>= half) to the minority are its *sink* classes. For each fraction ``f`` of ``fractions`` a sink
    class keeps ``f`` of its traffic on the variants the planner routing chose (in its proportions) and
    sends the rest to the majority variant; every other class goes wholly to the majority variant. Fixed
    routing (:attr:`oserve.policies.base.Allocation.fixed_routing`): the majority variant serves its share of
    a sink class even where the table gives it no capacity for it. Pure.

    The planner routing sends a class wholly to where the table serves it best, so a mix's few minority
    replicas take all of a heavy class or none of it; taking part of it protects the majority replicas'
    short requests from long prefills without queueing the rest on the few. Llama-2-70B conv (bench/results/
    split_routing.json): 14 x int8 TP2 + 1 x int8 TP4 with 40 / 60 / 80% of the long prompts with short
    outputs on the TP4 (the rest on TP2) carries 6.69 / 7.02 / 6.76x the trace's rate, 16 x int8 TP2 behind
    the same router 6.65x (bench/results/static_router.json).
    """
    out = []
    for label in [k for k in mixes if k in plans][:n_mixes]:
        counts = np.asarray(candidates[label].counts)
        a = int(np.argmax(counts.sum(axis=1) * problem.dev))
        routing = plans[label].routing or {}
        served = np.zeros((len(problem.classes), len(problem.variants)))
        for ci, c in enumerate(problem.classes):
            for v, w in (routing.get(c) or {}).items():
                if v in problem.variants:
                    served[ci, problem.variants.index(v)] = problem.demand[ci] * w
        if not served[:, [v for v in range(len(problem.variants)) if v != a]].any():
            continue
        demand = np.asarray(problem.demand, float)
        minority = np.where(demand > 0, 1.0 - served[:, a] / np.where(demand > 0, demand, 1.0), 0.0)
        sink = minority >= 0.5  # the classes the mix sends (mostly) to its minority variant
        if not sink.any():
            continue
        for f in fractions:
            s = np.zeros_like(served)
            s[:, a] = demand
            for ci in np.flatnonzero(sink):
                s[ci] = served[ci] / max(served[ci].sum(), 1e-12) * demand[ci] * f
                s[ci, a] = demand[ci] * (1.0 - f) + s[ci, a]
            out.append((f"{label} @{f:g}", Allocation(counts.copy(), s, f"{label} keeping {f:g} of its "
                                                      "minority variant's routing", fixed_routing=True)))
    return out


def mix_candidates(problem: Problem, candidates: Mapping[str, Allocation], scores: Mapping[str, float], *,
                   limit: int, from_inner: bool = False) -> list[tuple[str, np.ndarray]]:
    """Two-variant mixes on the line from the best-scoring single-variant plan (``static:V``; with
    ``split_fractions`` also the inner or running plan when it has one variant) to each other scored variant.

    The best-scoring ``static:A`` plan gives up ``D = lcm(devices of A, devices of B)`` devices of A per
    step for ``D`` devices of B, for every other variant B of a scored candidate (single-variant, inner or
    running plan): e.g. 16 x int8 TP2 -> 14 + 1 x TP4, 12 + 2, ... 2 + 7. Planner routing (a class goes
    where it is served best). At most ``limit`` (closest to A first). Pure.
    """
    if limit <= 0:
        return []
    # the single-variant plans scored: static:V, and with split fractions the inner or running plan when it is
    # one (a static:V equal to the inner plan is not a candidate of its own, e.g. when the planner's
    # single-variant floor chose it). Without splits the walk stays from static:V only: on Llama-2-70B code the
    # split guard's loop holds 12 x int8 TP2 + 2 x TP4 and keeps 0.67 at the scale the guard without it
    # carries (bench/results/split_routing_paired.json), so the default guard is unchanged.
    statics = [k for k in scores if k.startswith("static:")
               or (from_inner and int((np.asarray(candidates[k].counts).sum(axis=1) > 0).sum()) == 1)]
    if not statics:
        return []
    base_label = max(statics, key=lambda k: scores[k])
    base = candidates[base_label].counts
    a = int(np.flatnonzero(base.sum(axis=1))[0])
    others: list[int] = []
    for k in sorted(scores, key=lambda k: -scores[k]):
        for vi in np.flatnonzero(candidates[k].counts.sum(axis=1)):
            if int(vi) != a and int(vi) not in others:
                others.append(int(vi))
    steps: list[tuple[int, str, np.ndarray]] = []
    for b in others:
        d = math.lcm(int(problem.dev[a]), int(problem.dev[b]))
        ka, kb = d // int(problem.dev[a]), d // int(problem.dev[b])
        for g in range(base.shape[1]):
            if not problem.fits[b, g]:
                continue
            counts = base.copy()
            k = 0
            while counts[a, g] >= 2 * ka:  # stop before the base variant is gone (that is static:B)
                counts = counts.copy()
                counts[a, g] -= ka
                counts[b, g] += kb
                k += 1
                steps.append((k, counts_label(problem, counts), counts))
    steps.sort(key=lambda t: t[0])
    return [(label, counts) for _, label, counts in steps[:limit]]



def replica_quality(problem: Problem, counts: np.ndarray) -> float:
    """Device-weighted quality score (0-1) of the replicas ``counts`` (V, G) places; 1 without quality scores
    (as :func:`oserve.policies.pooling.pooling_search` ranks replica quality)."""
    devices = np.asarray(counts).sum(axis=1) * problem.dev
    if problem.quality is None or devices.sum() == 0:
        return 1.0
    return float((devices * problem.quality).sum() / devices.sum())


def counts_label(problem: Problem, counts: np.ndarray) -> str:
    """``mix:12 x V1 + 2 x V2`` for replica counts (V, G)."""
    per_v = np.asarray(counts).sum(axis=1)
    return "mix:" + " + ".join(f"{int(n)} x {problem.variants[v]}" for v, n in enumerate(per_v) if n > 0)
