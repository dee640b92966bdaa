"""The simulated per-window oracle: the best plan of each window for its true demand, switched for free.

The issue's oracle is "the catalogue's best plan per window with perfect knowledge of demand, no
switching cost". The LP bound of :mod:`oserve.compose.oracle` relaxes that with per-class
capacities; on the shipped A100 tables, even calibrated to the simulator, it reads *below* the best
fixed plan (2.09 vs 2.41 on Llama-2-70B merged, bench/results/capacity_integrated.json), because
per-class capacities do not price how classes pool on a replica. So that bound is floored by the best
fixed plan and cannot show what switching could win.

This module simulates the definition instead. The (scaled) trace is cut into ``window_s`` windows.
For each window, every candidate plan serves that window's requests after a *lead-in*: starting from an
idle cluster at the trace's start (``lead_in_s``, default the whole trace before the window), it serves the
earlier requests too, uncounted, so it enters the window with the backlog it would have had had it run
all along:

* the planner's plan for the window's true mean per-class demand (hindsight per window, the same
  planner and guard as ``static-mix``, :func:`oserve.compose.simulation.sim_scored`);
* ``static-mix``'s plan (the planner's plan for the whole trace's mean demand);
* every single-variant static deployment given (the cluster filled with one variant; a capacity study
  gives those with at least half the best fixed plan's capacity).

The window keeps its best candidate's count of requests within the SLO. The oracle's SLO attainment
is the sum of those counts over all requests. Its capacity is the largest rate scale where that
attainment meets the target (:func:`oserve.compose.capacity.bisect_scale`).

It is optimistic, as an oracle should be: switching is free (the window's winner takes over at the window's
start, with no start time and the backlog of its own run rather than the previous winner's) and each window
picks its winner with hindsight. Since a fixed plan's windows sum to its whole-run count (up to how later
arrivals slow earlier requests in a batch), the oracle is at least every candidate's attainment, static-mix's
included. It is not a proof of optimality: the candidates are the planner's plans and the static ones, not
every plan of the catalogue.

Why the lead-in: the first version served each window alone from an idle cluster. A window after a burst
then looked met even for a plan still working off the burst's backlog, so one fixed plan out-scored itself.
On the Azure 2023 conv trace at 6.749x (Llama-2-70B, 4 x 8 A100), 8 x int8 TP4 kept 0.689 of requests within
the SLO served whole, 0.872 window by window from idle and 0.775 after a one-window lead-in; 16 x int8 TP2
0.830, 0.904 (above the 0.9 target) and 0.853 (bench/results/window_idle_bias.json). The first window oracle's
6.749 (9% above static-mix) was that bias, not switching. A one-window lead-in is not enough under overload
(the backlog builds over several windows), hence the whole trace by default (test
``test_a_window_served_after_its_lead_in_rates_one_fixed_plan_at_its_own_attainment``); its cost is
``W (W + 1) / 2`` windows of simulation for ``W`` windows instead of ``W``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig
from oserve.types import ClassScheme, ClusterSpec, Demand, Plan
from oserve.workload.trace import Trace

__all__ = ["WindowOracleResult", "window_demands", "window_oracle_attainment", "window_oracle_capacity",
           "add_window_oracle"]


@dataclass
class WindowOracleResult:
    """The simulated per-window oracle's capacity on one trace.

    Attributes:
        capacity_scale: the largest arrival-rate scale whose oracle attainment met ``target`` (0 if none).
        target: the SLO attainment target.
        window_s: window length, seconds.
        probes: ``[scale, attainment]`` per probe, in search order.
        picks: per probe scale (``"%.6g"``), the winning candidate of each window.
        wall_s: wall-clock time of the search, seconds.
        capped / floored: see :class:`oserve.compose.capacity.BisectResult`.
        lead_in_s: the seconds of requests each candidate served before each window, uncounted.
    """

    capacity_scale: float
    target: float
    window_s: float
    probes: list[list[float]] = field(default_factory=list)
    picks: dict[str, list[str]] = field(default_factory=dict)
    wall_s: float = 0.0
    capped: bool = False
    floored: bool = False
    lead_in_s: float = 0.0


def _check_lead_in(lead_in_s: float) -> float:
    if np.isnan(lead_in_s) or lead_in_s < 0:
        raise ConfigError(f"lead_in_s must be a number of seconds >= 0 (inf: all of the trace before the window), "
                          f"got {lead_in_s}", field="lead_in_s", allowed=">= 0 seconds, or inf")
    return float(lead_in_s)


def _check_measure_from(measure_from_s: float) -> float:
    # not check_measure_from: a scaled trace may be thinned to no request past it (met vacuously, as the policies)
    if not (math.isfinite(measure_from_s) and measure_from_s >= 0):
        raise ConfigError(f"measure_from_s must be a finite number of seconds >= 0, got {measure_from_s}",
                          field="measure_from_s", allowed="[0, inf) seconds")
    return float(measure_from_s)


def window_demands(trace: Trace, scheme: ClassScheme, window_s: float) -> list[tuple[np.ndarray, Demand]]:
    """Per ``window_s`` window of ``trace`` that has requests: (their row indices, their mean per-class rate, req/s).

    The last window, cut by the trace's end, is rated over the seconds it covers up to the last arrival (at least
    1 s), not over ``window_s``.

    Raises:
        ConfigError: ``window_s`` not a positive finite number of seconds.
    """
    if not (np.isfinite(window_s) and window_s > 0):
        raise ConfigError(f"window_s must be a finite number of seconds > 0, got {window_s}", field="window_s",
                          allowed="> 0 seconds")
    arr = np.asarray(trace.arrival_s)
    cls = scheme.classify_many(np.asarray(trace.input_tokens), np.asarray(trace.output_tokens))
    idx = (arr // window_s).astype(np.int64)
    end = float(arr[-1]) if arr.size else 0.0
    out = []
    for w in np.unique(idx):
        rows = np.flatnonzero(idx == w)
        counts = np.bincount(cls[rows], minlength=len(scheme))
        # the last window ends at the trace's last arrival (at least 1 s, as oserve's first window)
        width = min(window_s, max(end - w * window_s, 1.0))
        out.append((rows, Demand(rates_rps={c: float(counts[i] / width) for i, c in enumerate(scheme.names)})))
    return out


def _met(plan: Plan, routing: str, trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme,
         cfg: SimConfig, label: str, count_from_s: float = 0.0) -> int:
    """Requests of ``trace`` arriving at or after ``count_from_s`` (seconds of ``trace``'s clock) within the SLO,
    when ``plan`` serves all of ``trace`` from an idle start (the earlier requests are its lead-in)."""
    from oserve.compose.simulation import sim_options
    from oserve.sim.engine import Simulation
    from oserve.sim.metrics import summarise

    if not plan.replicas:
        return 0
    slo = cfg.slo or table.slo
    res = Simulation(trace, table, cluster, plan, routing=routing, scheme=scheme, options=sim_options(cfg),
                     policy=label).run()
    counted = [r for r in res.requests if float(r["arrival_s"]) >= count_from_s] if count_from_s > 0 else res.requests
    s = summarise(counted, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
    return int(round(float(s["slo_attainment"]) * int(s["requests"])))


def window_oracle_attainment(trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme,
                             cfg: SimConfig, planner: Any, planning_table: ProfileTable, *, window_s: float,
                             static_variants: list[str], lead_in_s: float | None = None,
                             measure_from_s: float = 0.0) -> tuple[float, list[str]]:
    """The per-window oracle's SLO attainment (0-1) on ``trace`` (already scaled), and each window's winner.

    Args:
        planner: the planner of the window plans and of static-mix's plan (``plan(cluster, table, demand,
            current)``); one instance may serve every call (its caches are keyed by the demand).
        planning_table: the table the planner sees.
        window_s: window length, seconds.
        static_variants: variants whose single-variant static deployment is a candidate in every window.
        lead_in_s: each candidate first serves the requests of the ``lead_in_s`` seconds before the window (not
            counted), so it enters the window with the backlog it would have built itself (default ``inf``: the
            whole trace before the window, so one fixed plan's windows sum to its whole-run attainment, up to how
            later arrivals slow earlier requests; 0: every window from an idle cluster, which rates even one fixed
            plan above its own attainment).
        measure_from_s: only the requests arriving from then on (seconds of ``trace``'s clock) are counted and
            windowed; earlier ones (a capacity study's warm-up) serve only as the first windows' lead-in.

    Raises:
        ConfigError: ``window_s`` <= 0, ``lead_in_s`` < 0, ``measure_from_s`` not finite or < 0, or an unknown
            variant.
    """
    from oserve.compose.capacity import mean_demand, measured_part
    from oserve.sim.policies import static_plan
    from oserve.workload.transforms import select

    measure_from_s = _check_measure_from(measure_from_s)
    routing_static = "round-robin" if cfg.routing.static == "round-robin" else "plan"
    hindsight = mean_demand(trace, scheme, measure_from_s=measure_from_s)
    fixed: list[tuple[str, Plan, str]] = [("static-mix", planner.plan(cluster, planning_table, hindsight, None), "plan")]
    fixed += [(f"static:{v}", static_plan(cluster, table, v), routing_static) for v in static_variants]
    lead = _check_lead_in(math.inf if lead_in_s is None else lead_in_s)
    arr = np.asarray(trace.arrival_s)
    counted = np.flatnonzero(arr >= measure_from_s)
    if not counted.size:
        return 1.0, []  # nothing to count: met, vacuously (as the policies' runs)
    measured = trace if measure_from_s <= 0 else measured_part(trace, measure_from_s)
    met_total, picks = 0, []
    for rows, demand in window_demands(measured, scheme, window_s):
        rows = counted[rows]  # rows of ``trace``
        first = float(arr[rows[0]])
        start = measure_from_s + (first - measure_from_s) // window_s * window_s  # the window's start, seconds
        with_lead = np.flatnonzero((arr >= start - lead) & (arr < start)) if lead > 0 else rows[:0]
        part = select(trace, np.concatenate([with_lead, rows]))
        count_from = first - float(arr[with_lead[0]]) if with_lead.size else 0.0  # the window's first, rebased
        cands = [("window-plan", planner.plan(cluster, planning_table, demand, None), "plan"), *fixed]
        met = {label: _met(plan, routing, part, table, cluster, scheme, cfg, f"window-oracle:{label}", count_from)
               for label, plan, routing in cands}
        best = max(met, key=lambda k: met[k])  # ties: the window's own plan first, then static-mix
        met_total += met[best]
        picks.append(best)
    return met_total / counted.size, picks


def window_oracle_capacity(trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme,
                           cfg: SimConfig, *, static_variants: list[str], window_s: float = 60.0,
                           target: float = 0.9, seed: int = 0, start_scale: float = 1.0, rel_tol: float = 0.05,
                           planning_table: ProfileTable | None = None,
                           measure_from_s: float = 0.0, lead_in_s: float | None = None) -> WindowOracleResult:
    """Bisect the largest arrival-rate scale at which the per-window oracle keeps SLO attainment >= ``target``.

    Each probe scales ``trace`` as every other policy's search does
    (:func:`oserve.compose.capacity.default_scaler` with ``seed``) and evaluates
    :func:`window_oracle_attainment`. The planner is the config's, wrapped as ``static-mix``'s is
    (:func:`oserve.compose.simulation.sim_scored`, drawing request lengths from the probe's scaled trace), and
    sees ``planning_table`` (default ``table``) derated by ``cfg.planner_capacity_factor``. ``measure_from_s``: only the scaled trace's requests arriving from then
    on are windowed (:func:`oserve.compose.capacity.measured_part`, a capacity study's warm-up left out).
    ``lead_in_s``: see :func:`window_oracle_attainment` (default ``inf``, the whole trace before each window).

    Raises:
        ConfigError: a bad search parameter (:func:`oserve.compose.capacity.bisect_scale`), ``window_s`` <= 0,
            ``lead_in_s`` < 0, ``measure_from_s`` not finite or < 0, an unknown variant or planner.
    """
    from oserve.compose.capacity import bisect_scale, default_scaler
    from oserve.compose.simulation import sim_scored
    from oserve.policies import make_planner
    from oserve.sim.capacity_check import derate_table

    lead = _check_lead_in(math.inf if lead_in_s is None else lead_in_s)
    measure_from_s = _check_measure_from(measure_from_s)
    t0 = time.perf_counter()
    planning = derate_table(planning_table or table, cfg.planner_capacity_factor)
    scaler = default_scaler(seed)
    picks: dict[str, list[str]] = {}

    def attainment(s: float) -> float:
        scaled = scaler(trace, s)
        if measure_from_s > 0 and not (np.asarray(scaled.arrival_s) >= measure_from_s).any():
            picks[f"{s:.6g}"] = []  # thinned away: nothing counted, met vacuously (as the other policies' runs)
            return 1.0
        # the guard draws lengths from the probe's scaled trace, as static-mix's does (simulate_policy): the same plan
        planner = sim_scored(make_planner(cfg.planner.kind, **cfg.planner.params), cfg, scheme, scaled)
        a, p = window_oracle_attainment(scaled, table, cluster, scheme, cfg, planner, planning, window_s=window_s,
                                        static_variants=static_variants, lead_in_s=lead, measure_from_s=measure_from_s)
        picks[f"{s:.6g}"] = p
        return a

    b = bisect_scale(attainment, target=target, start=start_scale, rel_tol=rel_tol)
    return WindowOracleResult(b.scale, target, float(window_s), [[s, a] for s, a in b.probes], picks,
                              time.perf_counter() - t0, b.capped, b.floored, lead)


def add_window_oracle(study: dict[str, Any], trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                      scheme: ClassScheme, cfg: SimConfig, *, window_s: float = 60.0, seed: int = 0,
                      planning_table: ProfileTable | None = None, lead_in_s: float | None = None,
                      rel_tol: float | None = None, log: Callable[[str], None] | None = None) -> WindowOracleResult:
    """Bisect the per-window oracle for a finished capacity study and put it in the study, in place.

    ``study`` is :func:`oserve.compose.capacity.capacity_study`'s result on the same ``trace`` (its ``rows``
    give the fixed plans' scales, its ``target``, ``rel_tol`` (unless ``rel_tol`` is given) and ``warmup_s`` the
    search's). ``lead_in_s``: :func:`window_oracle_attainment`'s (default ``inf``). Adds a
    ``window-oracle`` row (replacing an earlier one) and ``study["oracle"]["window_oracle"]`` (scale, probes, each
    probe's window winners, wall time), then restates the oracle, every row's ratios and the summary
    (:func:`oserve.compose.capacity_refine.restate_study`): the oracle is the highest of the LP bound, the best
    fixed plan and the window oracle (``floored_by = "window-oracle"`` when it is the last), and the summary adds
    the simulated oracle (the window oracle or the best fixed plan).

    Raises:
        ConfigError: a study without the fixed plans' rows or plain vLLM's, or a bad search parameter.
    """
    from oserve.compose.capacity_refine import restate_study
    from oserve.workload.transforms import clip_tokens

    rows = study.get("rows") or []
    by = {r["policy"]: r for r in rows}
    if "plain-vllm" not in by or "oracle" not in by:
        raise ConfigError("study needs its plain-vllm and oracle rows (capacity_study's result)", field="study",
                          allowed="a capacity_study result")
    fixed = {k: float(r["capacity_scale"]) for k, r in by.items() if k.startswith("static:") or k == "static-mix"}
    # a single-variant deployment below half the best fixed plan's capacity cannot win a window near the oracle's
    singles = [str(r["variant"]) for k, r in by.items() if k.startswith("static:") and r.get("variant")
               and float(r["capacity_scale"]) >= 0.5 * max(fixed.values(), default=0.0) > 0]
    trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
    start = min(max(max(fixed.values(), default=1.0), 1.0 / 64), 256.0)
    wo = window_oracle_capacity(trace, table, cluster, scheme, cfg, static_variants=singles, window_s=window_s,
                                target=float(study["target"]), seed=seed, start_scale=start,
                                rel_tol=float(study["rel_tol"] if rel_tol is None else rel_tol),
                                planning_table=planning_table,
                                measure_from_s=float(study.get("warmup_s", 0.0)), lead_in_s=lead_in_s)
    if log:
        log(f"window-oracle: capacity scale {wo.capacity_scale:.3g} ({len(wo.probes)} runs, {wo.wall_s:.0f} s)")
    study["oracle"]["window_oracle"] = {
        "scale": wo.capacity_scale, "window_s": wo.window_s,
        "lead_in_s": wo.lead_in_s if math.isfinite(wo.lead_in_s) else "inf",  # inf: the whole trace before
        "rel_tol": float(study["rel_tol"] if rel_tol is None else rel_tol), "probes": wo.probes, "picks": wo.picks,
        "wall_s": wo.wall_s, "capped": wo.capped}
    rows[:] = [r for r in rows if r["policy"] != "window-oracle"]
    rows.append({"policy": "window-oracle", "variant": None, "capacity_scale": wo.capacity_scale, "probes": wo.probes,
                 "capped": wo.capped, "floored": wo.floored, "wall_s": wo.wall_s, "at_common_load": None,
                 "replicas": None})
    restate_study(study)
    return wo
