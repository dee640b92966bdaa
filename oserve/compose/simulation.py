"""Compose a simulation from a :class:`~oserve.sim.config.SimConfig`: load table and traces, build a
policy (forecaster and planner through :mod:`oserve.compose.components`), run, summarise.

:func:`simulate` is what ``oserve simulate`` runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oserve.compose.components import build_control_planner, build_forecaster
from oserve.control.surge import SurgeRule
from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig, load_config
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.metrics import summarise
from oserve.sim.policies import PolicySpec, plain_vllm_variant, restrict_table, static_plan
from oserve.sim.report import PolicyRun
from oserve.types import ClassScheme, ClusterSpec, Demand, Plan
from oserve.workload.trace import Trace

__all__ = ["simulate", "SimulationRuns", "load_table", "load_traces", "sim_options", "run_policy",
           "build_controller", "initial_demand", "check_initial_window", "class_lengths", "sim_scored"]

log = logging.getLogger(__name__)


def load_table(cfg: SimConfig) -> ProfileTable:
    """The profile table named by the config, restricted to its model / variants (capacities recomputed
    at the config's class lengths and SLO when ``recompute_capacities`` is set)."""
    table = ProfileTable.load(cfg.resolve(cfg.table))
    if cfg.model or cfg.variants:
        table = restrict_table(table, cfg.variants, cfg.model)
    if cfg.recompute_capacities:
        from oserve.profiles.rescore import planning_table

        table = planning_table(table, cfg.classes.to_scheme(), cfg.slo or table.slo)
    else:  # stored capacities: the config's classes must be the table's (the error names the missing ones)
        table.check_against([], cfg.classes.to_scheme().names)
    return table


def load_traces(paths: list[str], *, scale: float = 1.0, seed: int = 0, duration_s: float | None = None) -> Trace:
    """Load Azure-format (or auto-detected) traces, merge them on one clock, window and scale.

    Raises:
        ConfigError: no path given.
        TraceError: a malformed trace file.
    """
    from oserve.workload.loaders import load_trace
    from oserve.workload.transforms import merge, scale_rate, window

    if not paths:
        raise ConfigError("no trace given", field="trace", allowed="one or more trace files")
    traces = [load_trace(p) for p in paths]
    tr = traces[0] if len(traces) == 1 else merge(traces)
    if duration_s is not None:
        tr = window(tr, 0.0, float(duration_s))
    if scale != 1.0:
        tr = scale_rate(tr, scale, seed=seed)
    return tr


def sim_options(cfg: SimConfig, *, progress: bool = False) -> SimOptions:
    """The engine options of a config."""
    c, s = cfg.control, cfg.switching
    return SimOptions(control_interval_s=c.interval_s, monitor_window_s=c.monitor_window_s,
                      history_bin_s=c.history_bin_s, history_s=max(c.history_s, c.monitor_window_s),
                      drain_timeout_s=s.drain_timeout_s, stop_time_s=s.stop_time_s, warmup_s=s.warmup_s,
                      block_size=cfg.block_size, sample_interval_s=cfg.sample_interval_s, progress=progress,
                      contention=cfg.contention.model(),
                      surge=SurgeRule(**c.surge.model_dump()) if c.surge is not None else None,
                      migrate_on_drain=c.migrate_on_drain, migration_grace_s=c.migration_grace_s,
                      prefill_only_fixed=cfg.prefill_only_fixed, replica_load=cfg.routing.replica_load)


def initial_demand(trace: Trace, scheme: ClassScheme, window_s: float) -> Demand:
    """Mean per-class arrival rate over the trace's first ``window_s`` seconds, req/s."""
    arr = np.asarray(trace.arrival_s)
    sel = arr < window_s
    cls = scheme.classify_many(np.asarray(trace.input_tokens)[sel], np.asarray(trace.output_tokens)[sel])
    counts = np.bincount(cls, minlength=len(scheme))
    span = min(window_s, max(float(arr[-1]), 1.0)) if arr.size else window_s
    return Demand(rates_rps={c: float(counts[i] / span) for i, c in enumerate(scheme.names)})


def check_initial_window(cfg: SimConfig, trace: Trace, *, warmup_s: float = 0.0) -> None:
    """Refuse an oserve first-plan window (``cfg.initial_window_s``, seconds) longer than ``trace``, or, with a
    capacity study's warm-up of ``warmup_s`` > 0 seconds, longer than the warm-up.

    :func:`initial_demand` over a window past the last arrival is the whole trace's mean (hindsight),
    silently; one past the warm-up plans for part of the measured requests (hindsight the warm-up exists to
    remove). A configured first deployment (``cfg.deployment``) reads no window and is not checked.

    Raises:
        ConfigError: field ``initial_window_s``, allowed ``(0, E]`` seconds, ``E`` the trace's last
            arrival rounded up to whole seconds (a window equal to a trace's ``--duration`` passes), or
            ``warmup_s`` when it is > 0.
    """
    if cfg.initial_plan() is not None or not len(trace):
        return
    if warmup_s > 0:
        if not 0 < cfg.initial_window_s <= warmup_s:
            raise ConfigError(f"initial_window_s must be in (0, {warmup_s:g}] seconds with a warm-up of {warmup_s:g} s "
                              f"(a longer first window plans for the measured part: hindsight), got "
                              f"{cfg.initial_window_s:g}", field="initial_window_s", allowed=f"(0, {warmup_s:g}] s")
        return
    end = math.ceil(float(trace.arrival_s[-1]))
    if not 0 < cfg.initial_window_s <= end:
        raise ConfigError(f"initial_window_s must be in (0, {end}] seconds (the trace's last arrival, whole seconds "
                          f"up), got {cfg.initial_window_s:g}", field="initial_window_s", allowed=f"(0, {end}] s")


def class_lengths(trace: Trace, scheme: ClassScheme) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{class: (input_tokens, output_tokens)}`` of ``trace``'s requests of each class present (tokens)."""
    inp, out = np.asarray(trace.input_tokens), np.asarray(trace.output_tokens)
    cls = scheme.classify_many(inp, out)
    return {c: (inp[cls == j], out[cls == j]) for j, c in enumerate(scheme.names) if (cls == j).any()}


def sim_scored(planner: Any, cfg: SimConfig, scheme: ClassScheme, trace: Trace | None) -> Any:
    """``planner`` wrapped in :class:`oserve.sim.scored_planner.SimScoredPlanner` when ``cfg.sim_scored_plans``
    (lengths drawn from ``trace``'s requests per class), else ``planner`` itself.

    Raises:
        ConfigError: ``control.horizon_s`` (the guard's switch-pays horizon) outside (0, 86400] seconds.
    """
    if not cfg.sim_scored_plans:
        return planner
    from oserve.sim.scored_planner import SimScoredPlanner

    h = cfg.control.horizon_s
    if not (math.isfinite(h) and 0 < h <= 86400):  # the user set control.horizon_s, not a planner field
        raise ConfigError(f"control.horizon_s must be in (0, 86400] seconds with sim_scored_plans, got {h}",
                          field="control.horizon_s", allowed="(0, 86400] s")

    return SimScoredPlanner(planner, lengths=class_lengths(trace, scheme) if trace is not None else None,
                            scheme=scheme, slo=cfg.slo, horizon_s=cfg.control.horizon_s,
                            contention=cfg.contention.model(), prefill_only_fixed=cfg.prefill_only_fixed,
                            replica_load=cfg.routing.replica_load, split_fractions=cfg.sim_split_fractions)


def build_controller(cfg: SimConfig, cluster: ClusterSpec, table: ProfileTable, scheme: ClassScheme,
                     trace: Trace | None = None) -> Any:
    """A fresh :class:`oserve.control.controller.Controller` with the config's forecaster and planner
    (wrapped by :func:`sim_scored`, whose request lengths come from ``trace``)."""
    from oserve.control.controller import Controller

    h = cfg.control.hysteresis
    planner = build_control_planner(cfg.planner, h, cfg.control.horizon_s, cfg.control.parking,
                                    parking_field="control.parking")
    planner = sim_scored(planner, cfg, scheme, trace)
    return Controller(build_forecaster(cfg.forecaster), planner, cluster, table, scheme,
                      horizon_s=cfg.control.horizon_s, min_history=cfg.control.min_history,
                      scale_down_window_s=h.scale_down_window_s if h.enabled else 0.0)


def _arrived_before(trace: Trace, until_s: float | None) -> Trace | None:
    """The requests of ``trace`` arriving before ``until_s`` seconds (``trace`` when None; None when none does)."""
    if until_s is None:
        return trace
    mask = np.asarray(trace.arrival_s) < until_s
    if not mask.any():
        return None
    from oserve.workload.transforms import select

    return select(trace, mask, rebase=False)


def _static_run(label: str, variant: str, trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                scheme: ClassScheme, cfg: SimConfig, seed: int, progress: bool) -> PolicyRun:
    plan = static_plan(cluster, table, variant)
    routing = "round-robin" if cfg.routing.static == "round-robin" else "plan"
    res = Simulation(trace, table, cluster, plan, routing=routing, scheme=scheme,
                     options=sim_options(cfg, progress=progress), policy=label).run()
    slo = cfg.slo or table.slo
    return PolicyRun(label, variant, res, summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s))


def _static_capacity(table: ProfileTable, cluster: ClusterSpec, variant: str, mix: dict[str, float]) -> float:
    """Table-predicted goodput capacity of a static deployment of ``variant`` for the class mix, req/s
    (only the classes it can serve within the SLO count)."""
    try:
        n = len(static_plan(cluster, table, variant).replicas)
    except ConfigError:
        return 0.0
    v = table.variants[variant]
    inv = 0.0
    served = 0.0
    for c, share in mix.items():
        cap = v.classes[c].capacity_rps if c in v.classes else 0.0
        if share > 0 and cap > 0:  # classes the variant cannot serve within the SLO are left out
            inv += share / cap
            served += share
    return served * n / inv if inv > 0 else 0.0


def run_policy(spec: PolicySpec, trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme,
               cfg: SimConfig, *, seed: int = 0, progress: bool = False, best_static_top: int = 0,
               planning_table: ProfileTable | None = None, lengths_before_s: float | None = None) -> PolicyRun:
    """Simulate one policy on ``trace``.

    Args:
        spec: the policy.
        trace / table / cluster / scheme / cfg: the set-up.
        seed: passed to the engine.
        progress: tqdm progress bar.
        best_static_top: for ``best-static``, simulate only the ``k`` variants with the highest
            table-predicted static capacity for the trace's class mix (0: every variant).
        planning_table: the table oserve's planner sees (e.g. :func:`oserve.compose.calibrate.calibrated_table`;
            default ``table``); the simulated replicas always run ``table``'s iteration models.
        lengths_before_s: oserve's sim-scored guard (``cfg.sim_scored_plans``, :func:`sim_scored`) draws its
            per-class request lengths only from the requests arriving before this second of ``trace``'s clock (a
            capacity study's warm-up: no hindsight of the measured part's lengths; a class absent there gets the
            scheme's expected lengths). None: from the whole trace.

    Raises:
        ConfigError: unknown variant, no variant fits, a policy the table cannot support, or
            ``lengths_before_s`` not a finite number of seconds >= 0.
    """
    if lengths_before_s is not None and not (math.isfinite(lengths_before_s) and lengths_before_s >= 0):
        raise ConfigError(f"lengths_before_s must be a finite number of seconds >= 0, got {lengths_before_s}",
                          field="lengths_before_s", allowed="[0, inf) s or None")
    slo = cfg.slo or table.slo
    if spec.kind == "static":
        return _static_run(spec.label, spec.variant or "", trace, table, cluster, scheme, cfg, seed, progress)
    if spec.kind == "plain-vllm":
        v = plain_vllm_variant(table, min_kv_fraction=cfg.plain_vllm.min_kv_fraction)
        run = _static_run("plain-vllm", v, trace, table, cluster, scheme, cfg, seed, progress)
        return run
    if spec.kind == "best-static":
        cls = scheme.classify_many(np.asarray(trace.input_tokens), np.asarray(trace.output_tokens))
        counts = np.bincount(cls, minlength=len(scheme)) / max(1, len(trace))
        mix = {c: float(counts[i]) for i, c in enumerate(scheme.names)}
        caps = {v: _static_capacity(table, cluster, v, mix) for v in table.variants}
        fits = []
        for v in table.variants:
            try:
                static_plan(cluster, table, v)
                fits.append(v)
            except ConfigError:
                continue
        if not fits:
            raise ConfigError("no variant fits the cluster", field="policy", allowed="a table with a variant that fits")
        order = sorted(fits, key=lambda v: (-caps[v], v))
        if best_static_top > 0:
            order = order[:best_static_top]
        runs = {v: _static_run(f"static:{v}", v, trace, table, cluster, scheme, cfg, seed, progress) for v in order}
        best = max(order, key=lambda v: (runs[v].summary["goodput_avg_rps"], runs[v].summary["throughput_avg_rps"]))
        b = runs[best]
        b.label = "best-static"
        b.result.policy = "best-static"
        b.candidates = {v: {"predicted_capacity_rps": caps[v], **r.summary} for v, r in runs.items()}
        return b
    if spec.kind == "oserve":
        from oserve.sim.capacity_check import derate_table

        planning_table = derate_table(planning_table or table, cfg.planner_capacity_factor)
        ctrl = build_controller(cfg, cluster, planning_table, scheme, _arrived_before(trace, lengths_before_s))
        plan: Plan | None = cfg.initial_plan()
        if plan is None:
            demand = initial_demand(trace, scheme, cfg.initial_window_s)
            plan = ctrl.planner.plan(cluster, planning_table, demand, None)
        elif cfg.control.parking is not None:
            from oserve.policies.parking import park_plan

            plan = park_plan(plan, cfg.control.parking.keep_warm, cluster, planning_table, field="control.parking")
        res = Simulation(trace, table, cluster, plan, controller=ctrl, routing="plan", scheme=scheme,
                         options=sim_options(cfg, progress=progress), policy="oserve").run()
        return PolicyRun("oserve", None, res, summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s))
    raise ConfigError(f"unknown policy kind {spec.kind!r}", field="policy",
                      allowed="oserve, static:VARIANT, best-static, plain-vllm")


@dataclass
class SimulationRuns:
    """What :func:`simulate` returns.

    Attributes:
        config: the simulator config.
        trace: the replayed (merged, windowed, scaled) trace.
        paths: the trace files.
        seed: seed of the rate scaling.
        scale: arrival-rate scale factor.
        runs: one :class:`~oserve.sim.report.PolicyRun` per policy, in the order given.
    """

    config: SimConfig
    trace: Trace
    paths: list[str]
    seed: int
    scale: float
    runs: list[PolicyRun]


def simulate(config: SimConfig | str | Path, policies: list[str] | tuple[str, ...] = ("oserve",), *,
             trace_paths: list[str] | None = None, seed: int | None = None, scale: float | None = None,
             duration_s: float | None = None, progress: bool = False, best_static_top: int = 0) -> SimulationRuns:
    """Replay a trace on the config's simulated cluster under each policy.

    Args:
        config: a :class:`~oserve.sim.config.SimConfig` or the path of its YAML file.
        policies: ``oserve``, ``static:VARIANT``, ``best-static`` or ``plain-vllm`` (see docs/simulator.md).
        trace_paths: trace files (default: the config's ``trace.paths``).
        seed / scale / duration_s: override the config's ``trace`` section.
        progress: tqdm progress bars.
        best_static_top: see :func:`run_policy`.

    Returns:
        The runs, with the trace and settings used.

    Raises:
        ConfigError: an invalid config, no trace, an unknown policy or component.
        TraceError: a malformed trace file.
    """
    from oserve.sim.policies import parse_policy

    cfg = config if isinstance(config, SimConfig) else load_config(config)
    seed = cfg.trace.seed if seed is None else seed
    scale = cfg.trace.scale if scale is None else scale
    duration = cfg.trace.duration_s if duration_s is None else duration_s
    paths = list(trace_paths or [str(cfg.resolve(p)) for p in cfg.trace.paths])
    specs = [parse_policy(x) for x in policies]
    table = load_table(cfg)
    scheme = cfg.classes.to_scheme()
    cluster = cfg.cluster.spec()
    trace = load_traces(paths, scale=scale, seed=seed, duration_s=duration)
    runs = [run_policy(s, trace, table, cluster, scheme, cfg, seed=seed, progress=progress,
                       best_static_top=best_static_top) for s in specs]
    return SimulationRuns(config=cfg, trace=trace, paths=paths, seed=seed, scale=scale, runs=runs)
