"""GreedyPlanner: fill devices in order of marginal goodput per device, then repair.

Fill: repeatedly add the replica whose marginal goodput per device on the still-unserved demand is
highest (a new replica has one unit of time; spending it on classes in decreasing order of its
capacity is the best use, a fractional knapsack), net of the device cost and the switching cost
relative to ``current``, until no addition gains anything or no device is free.
Repair: re-assign classes to the chosen replicas optimally (a small LP), drop replicas the
assignment leaves idle, then try local moves while they raise the objective: remove a quarter /
one of a variant's replicas and refill, or make room for one replica of a variant by removing the
least productive replicas on one node group.

Spare devices (``ObjectiveWeights.fill_idle_devices``, the default): after the repair,
:func:`fill_idle` puts replicas on the devices still free, the variant with the most capacity per
device for the current demand mix first (net of the switching cost), since every planned req/s of
capacity earns ``spare_capacity_value`` in the objective; with ``fill_idle_devices=False`` they stay
free and each used device costs ``device_cost_rps``.

Cost: O(replicas x variants x classes) for the fill (identical additions are batched), a few dozen
small LPs for the repair; well under the 1 s target at 128 nodes x 8 GPUs with 8 variants and 6
classes (measured in ``bench/results/planner.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from oserve.policies._assign import optimal_assignment
from oserve.policies.base import Allocation, Planner
from oserve.policies.problem import ObjectiveWeights, Problem

__all__ = ["GreedyPlanner", "fast_objective", "fill_idle", "capacity_term"]


def fast_objective(problem: Problem, counts: np.ndarray, served: np.ndarray) -> float:
    """The objective of ``evaluate`` for counts (V, G) and served rates (C, V) before placement.

    Equal to ``evaluate(...).objective`` when placement keeps ``current``'s replicas (it does when it can).
    """
    switch = float((np.abs(counts - problem.current) * problem.start_s[:, None]).sum())
    return (float((served * problem.served_value()).sum()) - problem.switch_cost * switch
            + capacity_term(problem, counts))


def capacity_term(problem: Problem, counts: np.ndarray) -> float:
    """The objective's replica term for counts (V, G), req/s: ``spare_capacity_value`` x planned capacity
    for the demand mix (the replicas' headroom, :meth:`Problem.planned_capacity`) with ``fill_idle_devices``,
    else minus ``device_cost_rps`` x devices used."""
    w = problem.weights
    reps = counts.sum(axis=1)
    if w.fill_idle_devices:
        return w.spare_capacity_value * problem.planned_capacity(reps)
    return -w.device_cost_rps * float((reps * problem.dev).sum())


def _device_cost(problem: Problem) -> float:
    """Objective cost per device used, req/s (0 when idle devices are to be filled)."""
    return 0.0 if problem.weights.fill_idle_devices else problem.weights.device_cost_rps


def fill_idle(problem: Problem, counts: np.ndarray) -> np.ndarray:
    """Fill the devices ``counts`` (V, G) leaves free with replicas, if ``fill_idle_devices`` is set.

    Repeatedly adds the batch of replicas (one variant, one group, as many as fit) with the highest value
    per device: ``spare_capacity_value`` x the headroom it adds for the demand mix
    (:meth:`Problem.planned_capacity`, req/s), plus the switching cost it saves when it keeps replicas of
    ``current`` in place or minus the cost of starting them, while that value is positive and a device is
    free. Where no batch adds headroom (every fitting variant misses a class of the mix), the variant with
    the most capacity per device for the mix (:func:`oserve.policies.problem.mix_capacity`) is taken.
    Deterministic (ties: lower variant index, then group). Returns a new array.
    """
    counts = np.asarray(counts, dtype=np.int64).copy()
    w = problem.weights
    if not w.fill_idle_devices or w.spare_capacity_value <= 0:
        return counts
    V, G = problem.fits.shape
    mixcap = problem.mix_capacity()
    maxr = problem.max_replicas()
    free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
    while True:
        base = problem.planned_capacity(counts.sum(axis=1))
        best: tuple[tuple[float, float], int, int, int] | None = None
        for v in range(V):
            d = int(problem.dev[v])
            if mixcap[v] <= 0:
                continue
            for g in range(G):
                if not problem.fits[v, g] or free[g] < d or counts[v, g] >= maxr[v, g]:
                    continue
                k = _batch_limit(problem, counts, free, maxr, v, g)
                if k <= 0:
                    continue
                keep = counts[v, g] < problem.current[v, g]
                switch = problem.switch_cost * problem.start_s[v] * k
                reps = counts.sum(axis=1)
                reps[v] += k
                gain = problem.planned_capacity(reps) - base
                score = ((w.spare_capacity_value * gain + (switch if keep else -switch)) / (d * k),
                         (w.spare_capacity_value * mixcap[v] * k + (switch if keep else -switch)) / (d * k))
                if max(score) > 0 and (best is None or score > best[0]):
                    best = (score, v, g, k)
        if best is None:
            return counts
        _, v, g, k = best
        counts[v, g] += k
        free[g] -= k * int(problem.dev[v])


def _batch_limit(problem: Problem, counts: np.ndarray, free: np.ndarray, maxr: np.ndarray, v: int, g: int) -> int:
    """Replicas of variant ``v`` that group ``g`` can still take at once: bounded by free devices and the
    group's maximum, and, while ``current`` runs more of them there, by what keeps those in place."""
    limit = min(int(free[g] // int(problem.dev[v])), int(maxr[v, g] - counts[v, g]))
    if counts[v, g] < problem.current[v, g]:
        limit = min(limit, int(problem.current[v, g] - counts[v, g]))
    return limit


def _fill_gain(cap_v: np.ndarray, order: np.ndarray, residual: np.ndarray) -> tuple[float, np.ndarray]:
    """Goodput (req/s) one replica with capacities ``cap_v`` (C,) adds on ``residual`` (C,), and what it serves."""
    time_left = 1.0
    served = np.zeros_like(residual)
    for c in order:
        if time_left <= 1e-12:
            break
        if cap_v[c] <= 0 or residual[c] <= 0:
            continue
        s = min(residual[c], time_left * cap_v[c])
        served[c] = s
        time_left -= s / cap_v[c]
    return float(served.sum()), served


def greedy_fill(problem: Problem, counts: np.ndarray | None = None, residual: np.ndarray | None = None
                ) -> np.ndarray:
    """Add replicas to ``counts`` (V, G) by marginal goodput per device on ``residual`` demand (C,)."""
    V, G = problem.fits.shape
    counts = np.zeros((V, G), dtype=np.int64) if counts is None else counts.copy()
    residual = problem.demand.copy() if residual is None else residual.copy()
    free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
    maxr = problem.max_replicas()
    orders = [np.argsort(-problem.cap[v], kind="stable") for v in range(V)]
    while True:
        best: tuple[float, int, int, np.ndarray] | None = None
        for v in range(V):
            d = int(problem.dev[v])
            gs = [g for g in range(G) if problem.fits[v, g] and free[g] >= d and counts[v, g] < maxr[v, g]]
            if not gs:
                continue
            # prefer a group where current runs this variant (keeps a replica in place)
            g = next((g for g in gs if counts[v, g] < problem.current[v, g]), gs[0])
            gain, served = _fill_gain(problem.cap[v], orders[v], residual)
            keep = counts[v, g] < problem.current[v, g]
            switch = problem.switch_cost * problem.start_s[v] * (1.0 if keep else -1.0)
            score = (gain - _device_cost(problem) * d + switch) / d
            if gain > 0 and score > 0 and (best is None or score > best[0] + 1e-12):
                best = (score, v, g, served)
        if best is None:
            return counts
        _, v, g, served = best
        # add as many identical replicas at once as keep the same marginal gain (big clusters)
        d = int(problem.dev[v])
        limit = _batch_limit(problem, counts, free, maxr, v, g)
        with np.errstate(over="ignore"):  # residual / tiny served overflows to inf: no batching limit then
            need = np.min(np.where(served > 0, residual / np.maximum(served, 1e-300), np.inf))
        k = max(1, min(limit, int(np.floor(need)) - 1)) if np.isfinite(need) else 1
        counts[v, g] += k
        free[g] -= k * d
        residual = np.maximum(0.0, residual - k * served)


class GreedyPlanner(Planner):
    """Fast heuristic planner for large clusters (marginal goodput per device, then repair).

    Args:
        weights: objective weights.
        local_search_rounds: rounds of improving moves after the fill (0 disables the repair's moves).
    """

    name = "greedy"
    use_pooling_search = True  # plan replicas for pooled routing (oserve.policies.pooling)
    use_single_variant_floor = True  # never plan less goodput than the best single-variant deployment

    def __init__(self, weights: ObjectiveWeights | Mapping[str, Any] | None = None, local_search_rounds: int = 3) -> None:
        super().__init__(weights)
        self.local_search_rounds = local_search_rounds

    def _allocate(self, problem: Problem) -> Allocation:
        counts = greedy_fill(problem)
        counts, served, moves = repair(problem, counts, self.local_search_rounds)
        return Allocation(counts=counts, served=served,
                          reason=f"greedy fill + repair ({moves} improving moves)"
                          + (", idle devices filled" if problem.weights.fill_idle_devices else ""))


def _prune(problem: Problem, counts: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Drop replicas the assignment leaves idle (keeps ``current``'s replicas first)."""
    counts = counts.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        time = np.where(problem.cap.T > 0, served / np.where(problem.cap.T > 0, problem.cap.T, 1.0), 0.0).sum(axis=0)
    need = np.ceil(time - 1e-7).astype(np.int64)
    for v in range(counts.shape[0]):
        extra = int(counts[v].sum() - need[v])
        for g in sorted(range(counts.shape[1]), key=lambda g: counts[v, g] <= problem.current[v, g]):
            if extra <= 0:
                break
            drop = min(extra, int(counts[v, g]))
            counts[v, g] -= drop
            extra -= drop
    return counts


def _remove(counts: np.ndarray, v: int, k: int, problem: Problem) -> np.ndarray:
    """Copy of ``counts`` with ``k`` replicas of ``v`` removed, from groups where ``current`` has none first."""
    trial = counts.copy()
    for g in sorted(range(counts.shape[1]), key=lambda g: (counts[v, g] <= problem.current[v, g], g)):
        take = min(k, int(trial[v, g]))
        trial[v, g] -= take
        k -= take
    return trial


def _add_fill(problem: Problem, counts: np.ndarray, w: int, k: int, residual: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Add up to ``k`` replicas of ``w`` (first fit over groups); returns (counts, residual demand left)."""
    counts = counts.copy()
    free = problem.group_devices - (counts * problem.dev[:, None]).sum(axis=0)
    maxr = problem.max_replicas()
    order = np.argsort(-problem.cap[w], kind="stable")
    for g in range(counts.shape[1]):
        while k > 0 and problem.fits[w, g] and free[g] >= problem.dev[w] and counts[w, g] < maxr[w, g]:
            _, served = _fill_gain(problem.cap[w], order, residual)
            counts[w, g] += 1
            free[g] -= problem.dev[w]
            residual = np.maximum(0.0, residual - served)
            k -= 1
    return counts, residual


def _make_room(problem: Problem, counts: np.ndarray, served: np.ndarray, w: int) -> np.ndarray | None:
    """Remove the least productive replicas (served req/s per device) of other variants until one
    group where ``w`` fits has ``devices_per_replica[w]`` free devices; None if impossible."""
    reps = counts.sum(axis=1)
    value = np.where(reps > 0, served.sum(axis=0) / np.maximum(reps * problem.dev, 1), np.inf)
    need = int(problem.dev[w])
    best: tuple[float, int, np.ndarray] | None = None
    for g in range(counts.shape[1]):
        if not problem.fits[w, g]:
            continue
        trial = counts.copy()
        free = int(problem.group_devices[g] - (trial[:, g] * problem.dev).sum())
        lost = 0.0
        for v in np.argsort(value, kind="stable"):
            while free < need and trial[v, g] > 0 and v != w:
                trial[v, g] -= 1
                free += int(problem.dev[v])
                lost += float(value[v] * problem.dev[v])
        if free >= need and (best is None or lost < best[0] - 1e-12):
            best = (lost, g, trial)
    return None if best is None else best[2]


def repair(problem: Problem, counts: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Optimal re-assignment, pruning and improving moves. Returns (counts, served, moves made).

    Moves: (a) remove a quarter / one of a variant's replicas and refill greedily; (b) make room for
    one replica of a variant (removing the least productive replicas of others on one node group),
    add it and refill greedily. Each candidate is re-assigned optimally (LP), idle replicas dropped,
    and the first move that raises the objective is taken.
    """
    served = optimal_assignment(problem, counts.sum(axis=1))
    counts = _prune(problem, counts, served)
    counts = greedy_fill(problem, counts, np.maximum(0.0, problem.demand - served.sum(axis=1)))
    counts = fill_idle(problem, counts)
    served = optimal_assignment(problem, counts.sum(axis=1))
    best = fast_objective(problem, counts, served)
    moves = 0
    V = counts.shape[0]

    def candidates():
        for v in range(V):
            for step in sorted({max(1, int(counts[v].sum()) // 4), 1}, reverse=True):
                if counts[v].sum() >= step:
                    yield _remove(counts, v, step, problem), None
        for w in range(V):
            if problem.fits[w].any() and problem.usable()[w].any():
                room = _make_room(problem, counts, served, w)
                if room is not None:
                    yield room, w

    for _ in range(rounds):
        improved = False
        for trial, w in candidates():
            s0 = optimal_assignment(problem, trial.sum(axis=1))
            residual = np.maximum(0.0, problem.demand - s0.sum(axis=1))
            if w is not None:
                trial, residual = _add_fill(problem, trial, w, 1, residual)
            trial = greedy_fill(problem, trial, residual)
            if np.array_equal(trial, counts):
                continue
            s1 = optimal_assignment(problem, trial.sum(axis=1))
            trial = fill_idle(problem, _prune(problem, trial, s1))
            obj = fast_objective(problem, trial, s1)
            if obj > best + 1e-9:
                counts, served, best = trial, s1, obj
                moves += 1
                improved = True
                break
        if not improved:
            break
    return counts, served, moves
