"""Compose a simulation from a config: load table and traces, build a policy, run, summarise.

This is the simulator's composition root (the only module that imports the concrete forecaster
and planner registries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig
from oserve.sim.engine import SimOptions, SimResult, Simulation
from oserve.sim.metrics import summarise
from oserve.sim.policies import PolicySpec, plain_vllm_variant, restrict_table, static_plan
from oserve.types import DEFAULT_SCHEME, ClassScheme, ClusterSpec, Demand, Plan
from oserve.workload.trace import Trace

__all__ = ["PolicyRun", "build_scheme", "load_table", "load_traces", "sim_options", "run_policy",
           "build_controller", "initial_demand"]

log = logging.getLogger(__name__)


@dataclass
class PolicyRun:
    """One policy's simulation.

    Attributes:
        label: the policy as given (``oserve``, ``static:V``, ``best-static``, ``plain-vllm``).
        variant: the static variant used (static policies), else None.
        result: the simulation result.
        summary: :func:`oserve.sim.metrics.summarise` of it.
        candidates: for ``best-static``: summary per variant tried.
    """

    label: str
    variant: str | None
    result: SimResult
    summary: dict[str, Any]
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_scheme(cfg: SimConfig) -> ClassScheme:
    """The class scheme of the config, with the serve config's defaults (``oserve.launch.build_scheme``):
    two buckets per axis are named short/long, expected lengths default to bucket midpoints."""
    c = cfg.scheme
    ie, oe = tuple(c.input_edges), tuple(c.output_edges)
    if ie == DEFAULT_SCHEME.input_edges and oe == DEFAULT_SCHEME.output_edges and not (
            c.input_names or c.output_names or c.expected_input_tokens or c.expected_output_tokens):
        return DEFAULT_SCHEME
    n_in, n_out = len(ie) + 1, len(oe) + 1
    in_names = tuple(c.input_names or (["short-in", "long-in"] if n_in == 2 else [f"in{i}" for i in range(n_in)]))
    out_names = tuple(c.output_names or (["short-out", "long-out"] if n_out == 2 else
                                         [f"out{j}" for j in range(n_out)]))
    in_b, out_b = [0, *ie], [0, *oe]

    def mid(b: list[int], i: int) -> int:
        return max(1, (b[i] + (b[i + 1] if i + 1 < len(b) else 2 * b[i])) // 2)

    exp_in = tuple(c.expected_input_tokens or [mid(in_b, i) for i in range(n_in)])
    exp_out = tuple(c.expected_output_tokens or [mid(out_b, j) for j in range(n_out)])
    return ClassScheme(ie, oe, in_names, out_names, exp_in, exp_out)


def load_table(cfg: SimConfig) -> ProfileTable:
    """The profile table named by the config, restricted to its model / variants."""
    table = ProfileTable.load(cfg.resolve(cfg.table))
    if cfg.model or cfg.variants:
        table = restrict_table(table, cfg.variants, cfg.model)
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
                      block_size=cfg.block_size, sample_interval_s=cfg.sample_interval_s, progress=progress)


def initial_demand(trace: Trace, scheme: ClassScheme, window_s: float) -> Demand:
    """Mean per-class arrival rate over the trace's first ``window_s`` seconds, req/s."""
    arr = np.asarray(trace.arrival_s)
    sel = arr < window_s
    cls = scheme.classify_many(np.asarray(trace.input_tokens)[sel], np.asarray(trace.output_tokens)[sel])
    counts = np.bincount(cls, minlength=len(scheme))
    span = min(window_s, max(float(arr[-1]), 1.0)) if arr.size else window_s
    return Demand(rates_rps={c: float(counts[i] / span) for i, c in enumerate(scheme.names)})


def build_controller(cfg: SimConfig, cluster: ClusterSpec, table: ProfileTable, scheme: ClassScheme) -> Any:
    """A fresh :class:`oserve.controller.Controller` with the config's forecaster and planner."""
    from oserve.controller import Controller
    from oserve.forecast import make as make_forecaster
    from oserve.policies import make_planner

    return Controller(make_forecaster(cfg.forecaster.name, **cfg.forecaster.params),
                      make_planner(cfg.planner.name, **cfg.planner.params), cluster, table, scheme,
                      horizon_s=cfg.control.horizon_s, min_history=cfg.control.min_history)


def _static_run(label: str, variant: str, trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                scheme: ClassScheme, cfg: SimConfig, seed: int, progress: bool) -> PolicyRun:
    plan = static_plan(cluster, table, variant)
    routing = "round-robin" if cfg.routing.static == "round-robin" else "plan"
    res = Simulation(trace, table, cluster, plan, routing=routing, scheme=scheme,
                     options=sim_options(cfg, progress=progress), policy=label, seed=seed).run()
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
               cfg: SimConfig, *, seed: int = 0, progress: bool = False, best_static_top: int = 0) -> PolicyRun:
    """Simulate one policy on ``trace``.

    Args:
        spec: the policy.
        trace / table / cluster / scheme / cfg: the set-up.
        seed: passed to the engine.
        progress: tqdm progress bar.
        best_static_top: for ``best-static``, simulate only the ``k`` variants with the highest
            table-predicted static capacity for the trace's class mix (0: every variant).

    Raises:
        ConfigError: unknown variant, no variant fits, or a policy the table cannot support.
    """
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

        planning_table = derate_table(table, cfg.planner_capacity_factor)
        ctrl = build_controller(cfg, cluster, planning_table, scheme)
        plan: Plan | None = cfg.initial_plan()
        if plan is None:
            demand = initial_demand(trace, scheme, cfg.initial_window_s)
            plan = ctrl.planner.plan(cluster, planning_table, demand, None)
        res = Simulation(trace, table, cluster, plan, controller=ctrl, routing="plan", scheme=scheme,
                         options=sim_options(cfg, progress=progress), policy="oserve", seed=seed).run()
        return PolicyRun("oserve", None, res, summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s))
    raise ConfigError(f"unknown policy kind {spec.kind!r}", field="policy",
                      allowed="oserve, static:VARIANT, best-static, plain-vllm")
