"""Surge checks: re-plan at once when the last few seconds' arrivals overload the current plan.

The control loop decides every ``control_interval_s`` on the monitor's window rates (10 s by
default), so a burst that starts just after a tick is seen 5-15 s late, and every request of those
seconds is served by the plan made for the light traffic before it. On the demo's trace the burst
doubled the arrival rate within two seconds; requests admitted in its first 6 s missed the TPOT SLO
on fp32 while int8 would have served them (``bench/results/demo_results*.json``).

A surge check runs between ticks, every ``check_interval_s``. It reads the per-second admissions of
the last ``window_s`` complete seconds and asks one question of the plan deployed (or being deployed):
would this demand exceed what its replicas serve within the SLO? The answer comes from the profile
table with the planner's own time-sharing model (:func:`oserve.policies.evaluate.evaluate`) at full
table capacity (no planning headroom): the largest per-variant utilization of the routed load. A
surge is declared when it exceeds ``capacity_factor`` and at least ``min_arrivals`` requests came in
the window (a few requests are noise, not a burst). The orchestrator then makes a control decision at
once, at most once per ``min_gap_s``, with the surge's rates as the floor of the observed demand: per
class the larger of the window's mean and its *leading rate*, the mean of its last half
(``window_s // 2`` seconds, at least 1) extrapolated one half-window ahead along the trend from the
earlier part: ``max(last, last + (last - earlier))``. A burst is still rising when it is detected;
the window's mean lags it, and a plan made for the mean is outgrown within seconds (measured on the
demo: 2.0 req/s over 5 s at detection, 7.6 req/s five seconds later, so the first surge plan 1 fp32 +
1 int8 had to be replaced by 2 int8 at once; with the last half alone, at 2x the demo's plain
capacity, 4.4 req/s was planned for and replaced two seconds later for 12 req/s,
``bench/results/demo_results*.json``). A step that has stopped rising is over-estimated by up to the
step's height for one decision: that costs quality (more int8), not SLO. The decision goes through the normal planner and its hysteresis: a surge check can
make the loop decide earlier, never decide differently for the same demand. Because the controller
keeps the largest demand of the last ``scale_down_window_s``, a surge decision is not undone by the
next tick's longer, calmer window.

Defaults (window 5 s, factor 1.0, 8 arrivals) come from the demo's Azure slice replayed offline
against the profile table: in its 80 s of light traffic the 5-s window's utilization of 2 fp32
replicas peaked at 0.76 of table capacity (no surge), and the burst crossed 1.0 one second after it
began (11 arrivals in 5 s, utilization 1.2 of table capacity).

Pure: no clock, no I/O; the orchestrator supplies times and rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.policies.evaluate import evaluate
from oserve.policies.problem import ObjectiveWeights
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan

#: the largest surge growth factor: beyond it the planned rates mean "everything", and 1e308 overflows to inf
MAX_GROWTH_FACTOR = 100.0

#: the shortest check interval, seconds: the per-second history a check reads changes once a second, and
#: a simulator run with 1 ms checks did not finish (one planner-free check per event is still a cost)
MIN_CHECK_INTERVAL_S = 0.1

__all__ = ["MIN_CHECK_INTERVAL_S", "SurgeRule", "SurgeCheck", "FlooredSnapshot", "window_rates", "check_surge",
           "QuietAfter", "REPEAT_GROWTH"]

#: a surge like one whose decision changed no replica is skipped until its load grows by this factor (or
#: the quiet period ends): under an overload the plan cannot outgrow, every check would otherwise run
#: the planner again for nothing (25 such decisions in 60 s of a simulated overload)
REPEAT_GROWTH = 1.2


@dataclass(frozen=True)
class SurgeRule:
    """When a surge check fires (see the module docstring).

    Attributes:
        check_interval_s: seconds between checks (>= 0.1).
        window_s: the short window, whole seconds of per-second admissions (>= 1).
        capacity_factor: a surge is routed load above this fraction of the current plan's table
            capacity within the SLO (> 0; 1.0: the table's capacity, no headroom).
        min_arrivals: requests the window must hold for a surge (>= 1).
        min_gap_s: shortest time between a surge decision and the previous decision (>= 0).
        growth_factor: a surge decision plans for its rates times this (>= 1; 1: the rates as measured).
            A burst is still rising when it is detected: a plan made for what the first seconds showed is
            outgrown within seconds, and the second switch then hands over what the replicas it drains took
            meanwhile. Above 1 trades some full-precision share (a larger first switch) for one switch.

    Raises:
        ConfigError: a field out of range (naming it).
    """

    check_interval_s: float = 1.0  # >= 0.1: the monitor's history changes once a second
    window_s: int = 5
    capacity_factor: float = 1.0
    min_arrivals: int = 8
    min_gap_s: float = 2.0
    growth_factor: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.check_interval_s) and self.check_interval_s >= MIN_CHECK_INTERVAL_S):
            raise ConfigError(f"surge check_interval_s must be >= {MIN_CHECK_INTERVAL_S} s, got {self.check_interval_s}",
                              field="surge.check_interval_s", allowed=f">= {MIN_CHECK_INTERVAL_S} seconds")
        if not (isinstance(self.window_s, int) and self.window_s >= 1):
            raise ConfigError(f"surge window_s must be a whole number of seconds >= 1, got {self.window_s}",
                              field="surge.window_s", allowed="integer >= 1 (seconds)")
        if not (math.isfinite(self.capacity_factor) and self.capacity_factor > 0):
            raise ConfigError(f"surge capacity_factor must be > 0, got {self.capacity_factor}",
                              field="surge.capacity_factor", allowed="> 0 (fraction of table capacity)")
        if not (isinstance(self.min_arrivals, int) and self.min_arrivals >= 1):
            raise ConfigError(f"surge min_arrivals must be an integer >= 1, got {self.min_arrivals}",
                              field="surge.min_arrivals", allowed="integer >= 1 (requests)")
        if not (math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise ConfigError(f"surge min_gap_s must be >= 0, got {self.min_gap_s}", field="surge.min_gap_s",
                              allowed=">= 0 seconds")
        if not (isinstance(self.growth_factor, (int, float)) and math.isfinite(self.growth_factor)
                and 1 <= self.growth_factor <= MAX_GROWTH_FACTOR):
            raise ConfigError(f"surge growth_factor must be in [1, {MAX_GROWTH_FACTOR:g}], got {self.growth_factor!r}",
                              field="surge.growth_factor", allowed=f"1..{MAX_GROWTH_FACTOR:g} (multiple of the surge's rates)")


@dataclass(frozen=True)
class SurgeCheck:
    """One surge check's verdict.

    Attributes:
        surge: True when the orchestrator should decide now.
        rates_rps: per-class arrival rates of the short window, req/s.
        arrivals: requests admitted in the window.
        utilization: the current plan's largest per-variant routed load over its table capacity
            (0 when there is no demand; ``inf`` when demand is routed to no capacity).
        reason: one line for logs and the decision's reason.
    """

    surge: bool
    rates_rps: dict[str, float]
    arrivals: int
    utilization: float
    reason: str


def window_rates(history_ts: np.ndarray, history_rates: np.ndarray, window_s: int
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean per-class rates over the last ``window_s`` per-second bins, and their leading rates.

    Args:
        history_ts: bin start times, seconds, shape ``(n,)`` (the monitor's ``rate_history``).
        history_rates: admissions per second, shape ``(n, k)``.
        window_s: bins to average (>= 1); fewer when the history is shorter.

    Returns:
        ``(window mean (k,) req/s, leading rates (k,) req/s, arrivals in the window)``; zeros when the
        history is empty. Leading rates: the mean ``last`` of the window's last ``max(1, window_s // 2)``
        bins, extrapolated along the trend from the mean ``earlier`` of the bins before them,
        ``max(last, 2 * last - earlier)`` (``last`` when there are no earlier bins).
    """
    rates = np.asarray(history_rates, dtype=float)
    if rates.ndim != 2 or rates.shape[0] == 0:
        k = rates.shape[1] if rates.ndim == 2 else 0
        return np.zeros(k), np.zeros(k), 0
    half = max(1, int(window_s) // 2)
    window = rates[-int(window_s):]
    recent = rates[-half:].sum(axis=0) / float(half)
    earlier_bins = window[:-half] if window.shape[0] > half else window[:0]
    leading = recent
    if earlier_bins.shape[0]:
        leading = np.maximum(recent, 2.0 * recent - earlier_bins.mean(axis=0))
    return window.sum(axis=0) / float(window_s), leading, int(round(float(window.sum())))


def check_surge(rule: SurgeRule, plan: Plan | None, cluster: ClusterSpec, table: ProfileTable,
                rates_rps: dict[str, float], arrivals: int, recent_rps: dict[str, float] | None = None) -> SurgeCheck:
    """Whether ``rates_rps`` overloads ``plan`` (see the module docstring).

    Args:
        rule: the thresholds.
        plan: the plan deployed or being deployed (None: nothing runs; never a surge).
        cluster / table: what the plan runs on and its per-class capacities (req/s within SLO).
        rates_rps: the short window's per-class arrival rates, req/s (what the check scores).
        arrivals: requests admitted in the short window.
        recent_rps: the window's leading rates (:func:`window_rates`), req/s; a surge's ``rates_rps``
            are the per-class maximum of both (None: the window's alone).

    Returns:
        The :class:`SurgeCheck`.
    """
    rates = {c: float(r) for c, r in rates_rps.items()}
    if plan is None or not plan.replicas:
        return SurgeCheck(False, rates, arrivals, 0.0, "no plan deployed")
    if arrivals < rule.min_arrivals:
        return SurgeCheck(False, rates, arrivals, 0.0,
                          f"{arrivals} arrivals in {rule.window_s} s < min_arrivals {rule.min_arrivals}")
    if not plan.routing:  # a deployment from the config, before any decision: the router spreads by replicas
        counts = plan.replica_counts()
        n = sum(counts.values())
        plan = plan.model_copy(update={"routing": {c: {v: k / n for v, k in counts.items()} for c in rates}})
    score = evaluate(plan, cluster, table, Demand(rates_rps=rates), weights=ObjectiveWeights(target_utilization=1.0))
    total = sum(rates.values())
    util = max(score.utilization.values(), default=0.0)
    if total > 0 and score.goodput_rps <= 0 and util == 0.0:
        util = math.inf  # demand routed to no replica that can serve it
    surge = util > rule.capacity_factor
    if surge and recent_rps:
        rates = {c: max(r, float(recent_rps.get(c, 0.0))) for c, r in rates.items()}
    if surge:
        rates = {c: r * rule.growth_factor for c, r in rates.items()}
        total = sum(rates.values())
    reason = (f"surge: {arrivals} arrivals in the last {rule.window_s} s (planning for {total:.2f} req/s) load the current plan to "
              f"{util:.2f} of its table capacity (> {rule.capacity_factor:g})" if surge else
              f"no surge: load {util:.2f} of table capacity (<= {rule.capacity_factor:g})")
    return SurgeCheck(surge, rates, arrivals, util, reason)


class FlooredSnapshot:
    """A monitor snapshot whose ``arrival_rates_rps`` are raised to ``floor_rps`` per class; every other
    attribute is the wrapped snapshot's (what a surge decision hands the controller).

    Args:
        snapshot: the monitor's snapshot (``class_names``, ``arrival_rates_rps`` of shape ``(k,)``).
        floor_rps: per-class req/s; classes it lacks keep their rate.
    """

    def __init__(self, snapshot: Any, floor_rps: dict[str, float]) -> None:
        self._snapshot = snapshot
        rates = np.asarray(snapshot.arrival_rates_rps, dtype=float).reshape(-1).copy()
        for i, name in enumerate(snapshot.class_names):
            if i < rates.shape[0]:
                rates[i] = max(rates[i], float(floor_rps.get(name, 0.0)))
        self.arrival_rates_rps = rates

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshot, name)


@dataclass(frozen=True)
class QuietAfter:
    """A surge decision that changed no replica: until ``until_s``, surges whose utilization is not above
    ``utilization * REPEAT_GROWTH`` are skipped (the next control tick still decides as usual).

    Attributes:
        until_s: end of the quiet period, seconds (the caller's clock).
        utilization: the surge's utilization when it decided.
    """

    until_s: float
    utilization: float

    def skips(self, check: SurgeCheck, now_s: float) -> bool:
        """True when ``check`` repeats the quiet surge (see the class docstring)."""
        return now_s < self.until_s and check.utilization <= self.utilization * REPEAT_GROWTH
