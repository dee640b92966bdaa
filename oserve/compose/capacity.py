"""Capacity under SLO: the largest arrival-rate scale at which a policy keeps SLO attainment >= a target.

The paper's headline is how much more load a cluster serves within its SLOs. Throughput at one
fixed offered load cannot show it (every policy that carries the load ties), so this module
bisects the trace's arrival-rate scale (:func:`oserve.workload.transforms.scale_rate`, seeded:
thinning below 1, jittered duplication above) for the largest scale at which SLO attainment
(requests with TTFT <= SLO and TPOT <= SLO, over all requests, refused and aborted included) is at
least ``target`` (default 0.9).

Policies (``--capacity`` labels):

* ``plain-vllm``: the paper's baseline (:func:`oserve.sim.policies.plain_vllm_variant`);
* ``static:VARIANT``: the cluster filled with one variant, never changed;
* ``static-mix``: a mix planned once by the config's planner for the whole (scaled) trace's mean
  per-class demand (hindsight) and never switched, routed by the plan's weights;
* ``oserve`` / ``oserve:PLANNER``: the live loop (forecaster + planner + switcher) with the
  config's planner or the named one.

The oracle bound (:mod:`oserve.compose.oracle`) is computed without simulating switches, then put in the
simulator's units and floored at every simulated fixed plan (:func:`oserve.compose.oracle.sound_oracle`).

The simulations go through the simulator's public entry point (:func:`oserve.compose.simulation.run_policy`)
and, for the fixed mix, :class:`oserve.sim.engine.Simulation`. Decisions here are pure functions of
the probes; the search itself (:func:`bisect_scale`) takes the attainment as a function of the scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.compose.capacity_report import finite_json, format_capacity_table
from oserve.compose.measured import check_measure_from, mean_demand, measured_part, measured_span_s, measured_summary
from oserve.compose.paired_probe import paired_probes as _paired_probes
from oserve.compose.simulation import check_initial_window
from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig
from oserve.types import ClassScheme, ClusterSpec
from oserve.workload.trace import Trace

__all__ = ["DEFAULT_TARGET", "Probe", "BisectResult", "CapacityResult", "CapacityPolicy", "parse_capacity_policy",
           "bisect_scale", "mean_demand", "simulate_policy", "find_capacity", "default_policies", "capacity_study",
           "format_capacity_table", "finite_json", "measured_part", "measured_span_s", "check_measure_from",
           "check_capacity_policy"]

#: Default SLO attainment target of the capacity search (the issue's and DistServe's 90%).
DEFAULT_TARGET = 0.9
_FORMS = "plain-vllm, static:VARIANT, static-mix, oserve, oserve:PLANNER"


@dataclass(frozen=True)
class Probe:
    """One simulation of the search.

    Attributes:
        scale: arrival-rate scale of the trace.
        attainment: SLO attainment (0..1).
        summary: :func:`oserve.sim.metrics.summarise` of the run (``{}`` for pure searches).
    """

    scale: float
    attainment: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BisectResult:
    """Outcome of :func:`bisect_scale`.

    Attributes:
        scale: the largest scale probed whose attainment met the target (0.0 if none did).
        probes: ``(scale, attainment)`` in the order evaluated.
        capped: the target was still met at ``max_scale`` (``scale`` is a lower bound).
        floored: the target was missed even at ``min_scale`` (``scale`` is 0).
    """

    scale: float
    probes: list[tuple[float, float]]
    capped: bool = False
    floored: bool = False


def bisect_scale(attainment_at: Callable[[float], float], *, target: float = DEFAULT_TARGET, start: float = 1.0,
                 rel_tol: float = 0.02, min_scale: float = 1.0 / 64, max_scale: float = 256.0,
                 bracket: tuple[float, float] | None = None) -> BisectResult:
    """Largest scale with ``attainment_at(scale) >= target``, assuming attainment falls with the scale.

    Brackets by doubling / halving from ``start``, then bisects geometrically until the bracket's
    ratio ``hi / lo`` is at most ``1 + rel_tol``. Returns the lower end (a scale actually observed to
    meet the target). ``ceil(log2(ln 2 / ln(1 + rel_tol)))`` bisection steps follow the bracketing
    (6 for 2%).

    Args:
        attainment_at: SLO attainment (0..1) at a scale.
        target: attainment to meet, in (0, 1].
        start: first scale probed, in [min_scale, max_scale].
        rel_tol: relative width of the final bracket, > 0.
        min_scale / max_scale: search range, 0 < min_scale < max_scale.
        bracket: ``(lo, hi)``, a scale already seen to meet the target and a larger one seen to miss it (an
            earlier search's probes, :mod:`oserve.compose.capacity_refine`): bisection starts there, ``start``
            and the bracketing are skipped, and only new probes are returned.

    Raises:
        ConfigError: a parameter outside its range (names it).
    """
    if not 0 < target <= 1:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target", allowed="(0, 1]")
    if not rel_tol > 0:
        raise ConfigError(f"rel_tol must be > 0, got {rel_tol}", field="rel_tol", allowed="> 0")
    if not 0 < min_scale < max_scale:
        raise ConfigError(f"need 0 < min_scale < max_scale, got {min_scale}, {max_scale}", field="min_scale",
                          allowed="0 < min_scale < max_scale")
    if not min_scale <= start <= max_scale:
        raise ConfigError(f"start must be in [{min_scale}, {max_scale}], got {start}", field="start",
                          allowed=f"[{min_scale}, {max_scale}]")
    probes: list[tuple[float, float]] = []
    if bracket is not None and not (math.isfinite(bracket[0]) and math.isfinite(bracket[1])
                                    and 0 < bracket[0] < bracket[1]):
        raise ConfigError(f"bracket must be (lo, hi) with 0 < lo < hi, got {bracket}", field="bracket",
                          allowed="0 < lo < hi")

    def ok(s: float) -> bool:
        a = float(attainment_at(s))
        probes.append((s, a))
        return a >= target

    lo: float | None = bracket[0] if bracket else None
    hi: float | None = bracket[1] if bracket else None
    if lo is not None:
        pass  # bracketed already
    elif ok(start):
        lo = start
        while hi is None:
            if lo >= max_scale:
                return BisectResult(lo, probes, capped=True)
            s = min(lo * 2.0, max_scale)
            if ok(s):
                lo = s
            else:
                hi = s
    else:
        hi = start
        while lo is None:
            if hi <= min_scale:
                return BisectResult(0.0, probes, floored=True)
            s = max(hi / 2.0, min_scale)
            if ok(s):
                lo = s
            else:
                hi = s
    while hi / lo > 1.0 + rel_tol:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return BisectResult(lo, probes)


@dataclass(frozen=True)
class CapacityPolicy:
    """A policy of the capacity search.

    Attributes:
        kind: ``plain-vllm``, ``static``, ``static-mix`` or ``oserve``.
        variant: the variant of ``static:VARIANT``.
        planner: ``oserve:PLANNER``'s planner registry name (None: the config's).
    """

    kind: str
    variant: str | None = None
    planner: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "static":
            return f"static:{self.variant}"
        if self.kind == "oserve" and self.planner:
            return f"oserve:{self.planner}"
        return self.kind


def parse_capacity_policy(text: str) -> CapacityPolicy:
    """Parse ``plain-vllm``, ``static:VARIANT``, ``static-mix``, ``oserve`` or ``oserve:PLANNER``.

    Raises:
        ConfigError: anything else (names the allowed forms).
    """
    t = text.strip()
    if t in ("plain-vllm", "static-mix", "oserve"):
        return CapacityPolicy(t)
    for kind in ("static", "oserve"):
        if t.startswith(kind + ":") and len(t) > len(kind) + 1:
            rest = t.split(":", 1)[1]
            return CapacityPolicy(kind, variant=rest) if kind == "static" else CapacityPolicy(kind, planner=rest)
    raise ConfigError(f"unknown capacity policy {text!r}", field="policy", allowed=_FORMS)


def check_capacity_policy(policy: CapacityPolicy, table: ProfileTable) -> None:
    """Refuse a policy that names a variant the table lacks (``static:V``) or an unknown planner (``oserve:P``).

    Raises:
        ConfigError: naming the field ``policy`` and the allowed variants, or ``planner.kind`` and the planners.
    """
    if policy.kind == "static" and policy.variant not in table.variants:
        raise ConfigError(f"unknown variant {policy.variant!r} in capacity policy 'static:{policy.variant}'",
                          field="policy", allowed=", ".join(sorted(table.variants)))
    if policy.kind == "oserve" and policy.planner is not None:
        from oserve.policies import make_planner

        make_planner(policy.planner)


def simulate_policy(policy: CapacityPolicy, trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                    scheme: ClassScheme, cfg: SimConfig, *, seed: int = 0,
                    planning_table: ProfileTable | None = None,
                    measure_from_s: float = 0.0) -> tuple[dict[str, Any], str | None]:
    """Simulate one policy on one (already scaled) trace.

    ``planning_table`` is the table the planners of ``static-mix`` and ``oserve`` see (default ``table``).
    ``measure_from_s``: the requests arriving before it (seconds of the trace's clock) are served but not
    counted (a warm-up: oserve's monitor, forecaster and plan have that history, and its sim-scored guard draws
    request lengths from the warm-up's requests only, :func:`oserve.compose.simulation.run_policy`'s
    ``lengths_before_s``; ``static-mix`` keeps its hindsight: it plans for the mean demand of the counted part,
    over ``[measure_from_s, last arrival)``, :func:`mean_demand`, and its guard sees the whole trace's lengths).

    Returns:
        ``(summary, variant)``: :func:`oserve.sim.metrics.summarise` of the run (SLO: the config's,
        else the table's; with ``measure_from_s`` > 0, of the counted requests, its switch and memory fields
        still of the whole run, warm-up included) with ``"replicas"`` (``{variant: count}``: static-mix's plan, else the ready set held
        longest from ``measure_from_s`` on, :func:`oserve.sim.metrics.held_longest`) and the static variant
        (None for mixes and oserve).

    Raises:
        ConfigError: an unknown variant or planner, or a policy the table cannot support.
    """
    from oserve.compose.simulation import run_policy
    from oserve.sim.metrics import held_longest
    from oserve.sim.policies import PolicySpec

    if policy.kind == "static-mix":
        from oserve.compose.simulation import sim_options
        from oserve.policies import make_planner
        from oserve.sim.capacity_check import derate_table
        from oserve.sim.engine import Simulation

        planning = derate_table(planning_table or table, cfg.planner_capacity_factor)
        planner = make_planner(policy.planner or cfg.planner.kind, **(cfg.planner.params if not policy.planner else {}))
        from oserve.compose.simulation import sim_scored

        if measure_from_s > 0 and not (np.asarray(trace.arrival_s) >= measure_from_s).any():
            # a low scale thinned the measured part away: nothing to count (met, vacuously), nothing to plan for
            return {**measured_summary(None, cfg.slo or table.slo, measure_from_s), "replicas": {}}, None
        planner = sim_scored(planner, cfg, scheme, trace)
        plan = planner.plan(cluster, planning, mean_demand(trace, scheme, measure_from_s=measure_from_s), None)
        res = Simulation(trace, table, cluster, plan, routing="plan", scheme=scheme, options=sim_options(cfg),
                         policy=policy.label).run()
        return {**measured_summary(res, cfg.slo or table.slo, measure_from_s), "replicas": plan.replica_counts()}, None
    if policy.kind == "oserve" and policy.planner:
        cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"kind": policy.planner,
                                                                                "params": {}})})
    spec = PolicySpec("static", policy.variant) if policy.kind == "static" else PolicySpec(policy.kind)
    run = run_policy(spec, trace, table, cluster, scheme, cfg, seed=seed, planning_table=planning_table,
                     lengths_before_s=measure_from_s if measure_from_s > 0 else None)
    summary = measured_summary(run.result, cfg.slo or table.slo, measure_from_s) if measure_from_s > 0 else run.summary
    return {**summary, "replicas": held_longest(run.result.timeline, from_s=measure_from_s)}, run.variant


@dataclass
class CapacityResult:
    """The capacity of one policy on one trace.

    Attributes:
        policy: the policy label.
        capacity_scale: the largest arrival-rate scale found with attainment >= ``target``.
        target: the attainment target.
        probes: every simulation of the search, in order.
        variant: the static variant (static policies and plain vLLM).
        capped / floored: see :class:`BisectResult`.
        wall_s: wall-clock time of the search, seconds.
    """

    policy: str
    capacity_scale: float
    target: float
    probes: list[Probe]
    variant: str | None = None
    capped: bool = False
    floored: bool = False
    wall_s: float = 0.0

    def probe_at(self, scale: float) -> Probe | None:
        """The probe at exactly ``scale``, if the search made one."""
        return next((p for p in self.probes if p.scale == scale), None)


def default_scaler(seed: int) -> Callable[[Trace, float], Trace]:
    """``scale_rate`` with a fixed seed (scale 1 returns the trace itself)."""
    from oserve.workload.transforms import scale_rate

    def scale(trace: Trace, s: float) -> Trace:
        return trace if s == 1.0 else scale_rate(trace, s, seed=seed)

    return scale


def find_capacity(policy: CapacityPolicy | str, trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                  scheme: ClassScheme, cfg: SimConfig, *, target: float = DEFAULT_TARGET, seed: int = 0,
                  start_scale: float = 1.0, rel_tol: float = 0.02, min_scale: float = 1.0 / 64,
                  max_scale: float = 256.0, scale_trace: Callable[[Trace, float], Trace] | None = None,
                  planning_table: ProfileTable | None = None, measure_from_s: float = 0.0,
                  bracket: tuple[float, float] | None = None) -> CapacityResult:
    """Bisect the largest arrival-rate scale at which ``policy`` keeps SLO attainment >= ``target``.

    Each probe scales ``trace`` (default :func:`oserve.workload.transforms.scale_rate` with
    ``seed``, so the same inputs give the same probes) and simulates the policy on it. Deterministic.

    Args:
        policy: a :class:`CapacityPolicy` or its label (see :func:`parse_capacity_policy`).
        trace / table / cluster / scheme / cfg: as for :func:`oserve.compose.simulation.run_policy`; the SLO is
            ``cfg.slo`` or the table's.
        target: SLO attainment to keep, in (0, 1].
        seed: seed of the rate scaling and the engine.
        start_scale / rel_tol / min_scale / max_scale / bracket: see :func:`bisect_scale`.
        scale_trace: ``(trace, scale) -> trace``; replaces the seeded ``scale_rate``.
        planning_table: the table the planners see (default ``table``), see :func:`simulate_policy`.
        measure_from_s: SLO attainment counts the requests arriving from this second on (a warm-up before it),
            see :func:`simulate_policy`.

    Raises:
        ConfigError: bad search parameters, unknown policy, variant or planner; for ``oserve``, a first-plan
            window ``cfg.initial_window_s`` longer than the trace (:func:`~oserve.compose.simulation.check_initial_window`).
    """
    pol = parse_capacity_policy(policy) if isinstance(policy, str) else policy
    check_measure_from(trace, measure_from_s, "measure_from_s")
    if pol.kind == "oserve":
        check_initial_window(cfg, trace, warmup_s=measure_from_s)
    scaler = scale_trace or default_scaler(seed)
    probes: list[Probe] = []
    variant: list[str | None] = [None]
    t0 = time.perf_counter()

    def attainment(s: float) -> float:
        summary, v = simulate_policy(pol, scaler(trace, s), table, cluster, scheme, cfg, seed=seed,
                                     planning_table=planning_table, measure_from_s=measure_from_s)
        variant[0] = v
        probes.append(Probe(s, float(summary["slo_attainment"]), summary))
        return float(summary["slo_attainment"])

    b = bisect_scale(attainment, target=target, start=start_scale, rel_tol=rel_tol, min_scale=min_scale,
                     max_scale=max_scale, bracket=bracket)
    return CapacityResult(pol.label, b.scale, target, probes, variant=variant[0], capped=b.capped,
                          floored=b.floored, wall_s=time.perf_counter() - t0)


def default_policies(table: ProfileTable, cluster: ClusterSpec, planners: tuple[str, ...]) -> list[str]:
    """``plain-vllm``, ``static:V`` for every variant that fits, ``static-mix``, ``oserve:P`` per planner."""
    from oserve.sim.policies import static_plan

    statics = []
    for v in sorted(table.variants):
        try:
            static_plan(cluster, table, v)
        except ConfigError:
            continue
        statics.append(f"static:{v}")
    return ["plain-vllm", *statics, "static-mix", *(f"oserve:{p}" for p in planners)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b > 0 or not math.isfinite(b) else a / b


def capacity_study(trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme, cfg: SimConfig, *,
                   policies: list[str] | None = None, planners: tuple[str, ...] = ("milp", "greedy", "flow"),
                   target: float = DEFAULT_TARGET, seed: int = 0, rel_tol: float = 0.02,
                   oracle_capacities: str = "simulated", oracle_window_s: float = 60.0,
                   oracle_duration_s: float = 300.0, clip_to_context: bool = True,
                   log: Callable[[str], None] | None = None, planner_capacities: str = "table",
                   window_oracle: bool = False, warmup_s: float = 0.0) -> dict[str, Any]:
    """Capacity of every policy on one trace, ratios, the oracle bound, and latencies at a common load.

    The trace's token lengths are clipped to the table's longest ``max_model_len`` first (input cut
    first, :func:`oserve.workload.transforms.clip_tokens`) unless ``clip_to_context`` is False.
    The common load is plain vLLM's capacity scale (every better policy carries it); p99 TTFT,
    TPOT and E2E of each policy are reported there.

    Args:
        trace / table / cluster / scheme / cfg: as :func:`find_capacity`.
        policies: labels (default :func:`default_policies` with ``planners``).
        planners: planner registry names of the ``oserve:P`` policies.
        target / seed / rel_tol: as :func:`find_capacity`.
        oracle_capacities: ``"simulated"`` (per-class capacities measured with the simulator,
            :func:`oserve.compose.oracle.simulated_class_capacities`) or ``"table"``.
        oracle_window_s: window of the oracle's perfect demand knowledge, seconds.
        oracle_duration_s: length of each per-class calibration run, seconds.
        clip_to_context: clip token lengths to the context first.
        log: called with one line per finished policy.
        planner_capacities: ``"table"`` (the planners see the table's capacities) or ``"calibrated"``
            (capacities measured with the simulator on the trace's lengths per variant and class,
            :mod:`oserve.compose.calibrate`; the same calibrated table for ``static-mix`` and ``oserve``).
        window_oracle: also bisect the simulated per-window oracle (windows of ``oracle_window_s``) and never
            report an oracle below it (:func:`oserve.compose.window_oracle.add_window_oracle`).
        warmup_s: the requests arriving in the trace's first ``warmup_s`` seconds are served by every policy but
            not counted (:func:`simulate_policy`'s ``measure_from_s``): oserve starts the measured part with that
            history instead of a plan made with hindsight of it, while ``static-mix`` keeps its hindsight of the
            measured part; the oracle, rates and request counts are of the measured part, whose span (``duration_s``,
            the rates' denominator) runs from ``warmup_s`` to the last arrival (:func:`measured_span_s`). In
            [0, trace span).

    Returns:
        ``{"requests", "duration_s", "mean_rate_rps", "target", "common_scale", "rows": [...],
        "oracle": {...}, "summary": {...}, "wall_s"}`` (``duration_s``: the measured span, seconds;
        ``mean_rate_rps``: the measured requests over it, req/s); each row: ``policy``, ``variant``,
        ``capacity_scale``, ``capacity_rps``, ``vs_plain``, ``vs_best_static``, ``oracle_fraction``,
        ``probes``, ``capped``, ``floored``, ``wall_s``, ``at_common_load``, ``replicas`` (``{variant: count}`` of the
        probe at the capacity scale, see :func:`simulate_policy`; None for the oracle or no such probe).

    Raises:
        ConfigError: bad parameters, unknown policies, no plain-vLLM variant, or (with an ``oserve`` policy)
            ``cfg.initial_window_s`` longer than the trace; all before any simulation.
    """
    from oserve.compose.oracle import oracle_bound, simulated_class_capacities
    from oserve.workload.transforms import clip_tokens

    if planner_capacities not in ("table", "calibrated"):
        raise ConfigError(f"unknown planner_capacities {planner_capacities!r}", field="planner_capacities",
                          allowed="table, calibrated")
    if oracle_capacities not in ("simulated", "table"):
        raise ConfigError(f"unknown oracle_capacities {oracle_capacities!r}", field="oracle_capacities",
                          allowed="simulated, table")
    check_measure_from(trace, warmup_s, "warmup_s")
    t_start = time.perf_counter()
    say = log or (lambda _line: None)
    if clip_to_context:
        trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
    measured = measured_part(trace, warmup_s)
    labels = policies or default_policies(table, cluster, planners)
    if "plain-vllm" not in labels:
        labels = ["plain-vllm", *labels]
    from oserve.sim.policies import plain_vllm_variant

    # the baseline every ratio needs, every label and oserve's first window: refuse bad ones before the oracle's
    # simulations run (an unknown static variant or planner was refused only at its own bisection)
    plain_vllm_variant(table, min_kv_fraction=cfg.plain_vllm.min_kv_fraction)
    for label in labels:
        check_capacity_policy(parse_capacity_policy(label), table)
    if any(label.startswith("oserve") for label in labels):
        check_initial_window(cfg, trace, warmup_s=warmup_s)
    slo = cfg.slo or table.slo
    t0 = time.perf_counter()
    table_bound = oracle_bound(measured, table, cluster, scheme, window_s=oracle_window_s, target=target)
    if oracle_capacities == "simulated":
        caps = simulated_class_capacities(table, measured, scheme, table_bound.variants, target=target, slo=slo,
                                          duration_s=oracle_duration_s, seed=seed)
        bound = oracle_bound(measured, table, cluster, scheme, capacities=caps, variants=table_bound.variants,
                             window_s=oracle_window_s, target=target, source="simulated")
    else:
        bound = table_bound
    oracle_wall = time.perf_counter() - t0
    say(f"oracle ({bound.source} capacities): scale {bound.scale:.3g} ({oracle_wall:.0f} s)")
    planning_table: ProfileTable | None = None
    calibration: dict[str, Any] | None = None
    if planner_capacities == "calibrated":
        from oserve.compose.calibrate import calibrated_capacities, calibrated_table

        t0 = time.perf_counter()
        cal = calibrated_capacities(table, measured, scheme, table_bound.variants, target=target, slo=slo,
                                    duration_s=oracle_duration_s, seed=seed)
        planning_table = calibrated_table(table, cal)
        calibration = {"capacities": cal, "wall_s": time.perf_counter() - t0}
        say(f"planner capacities calibrated ({calibration['wall_s']:.0f} s)")
    results: dict[str, CapacityResult] = {}
    last = 1.0
    for label in labels:
        pol = parse_capacity_policy(label)
        hint = bound.static_scales.get(pol.variant or "", 0.0) if pol.kind == "static" else 0.0
        start = hint if 1.0 / 64 <= hint <= 256.0 and math.isfinite(hint) else min(max(last, 1.0 / 64), 256.0)
        r = find_capacity(pol, trace, table, cluster, scheme, cfg, target=target, seed=seed, start_scale=start,
                          rel_tol=rel_tol, planning_table=planning_table, measure_from_s=warmup_s)
        results[label] = r
        if r.capacity_scale > 0:
            last = r.capacity_scale
        say(f"{label}: capacity scale {r.capacity_scale:.3g} ({len(r.probes)} runs, {r.wall_s:.0f} s)")
    paired = _paired_probes(results, trace, table, cluster, scheme, cfg, target=target, seed=seed,
                            planning_table=planning_table, measure_from_s=warmup_s)
    for label, pp in paired.items():
        say(f"{label}: paired probe at {pp['against']}'s scale {pp['scale']:.4g}: attainment {pp['attainment']:.4f}"
            f"{' (met: capacity raised to it)' if pp['met'] else ''}")
    from oserve.compose.oracle import sound_oracle

    fixed = {k: r.capacity_scale for k, r in results.items() if k.startswith("static:") or k == "static-mix"}
    bound = sound_oracle(bound, measured, table, cluster, scheme, fixed, target=target)
    if bound.floored_by or bound.source != table_bound.source:
        say(f"oracle ({bound.source}): scale {bound.scale:.3g} (window bound {bound.lp_scale:.3g}, floored by "
            f"{bound.floored_by or '-'})")
    plain = results["plain-vllm"]
    common = plain.capacity_scale if plain.capacity_scale > 0 else 1.0
    statics = {k: r for k, r in results.items() if k.startswith("static:") or k == "static-mix"}
    best_label = max(statics, key=lambda k: statics[k].capacity_scale) if statics else None
    best = statics[best_label].capacity_scale if best_label else None
    singles = {k: r for k, r in statics.items() if k.startswith("static:")}
    best_single = max(singles, key=lambda k: singles[k].capacity_scale) if singles else None
    span = measured_span_s(trace, warmup_s)
    rate = len(measured) / max(span, 1e-9)
    rows = []
    for label, r in results.items():
        p = r.probe_at(common)
        if p is None:
            summary, _ = simulate_policy(parse_capacity_policy(label), default_scaler(seed)(trace, common), table,
                                         cluster, scheme, cfg, seed=seed, planning_table=planning_table,
                                         measure_from_s=warmup_s)
        else:
            summary = p.summary
        rows.append({
            "policy": label, "variant": r.variant, "capacity_scale": r.capacity_scale,
            "capacity_rps": r.capacity_scale * rate, "vs_plain": _ratio(r.capacity_scale, plain.capacity_scale),
            "vs_best_static": _ratio(r.capacity_scale, best), "oracle_fraction": _ratio(r.capacity_scale, bound.scale),
            "probes": [[p.scale, p.attainment] for p in r.probes], "capped": r.capped, "floored": r.floored,
            "wall_s": r.wall_s, "paired_probe": paired.get(label),
            "replicas": (r.probe_at(r.capacity_scale) or Probe(0.0, 0.0)).summary.get("replicas"),
            "at_common_load": {"scale": common, **{k: summary.get(k) for k in (
                "slo_attainment", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "goodput_avg_rps", "goodput_peak_rps",
                "throughput_avg_rps")}},
        })
    rows.append({"policy": "oracle", "variant": None, "capacity_scale": bound.scale, "capacity_rps": bound.scale * rate,
                 "vs_plain": _ratio(bound.scale, plain.capacity_scale), "vs_best_static": _ratio(bound.scale, best),
                 "oracle_fraction": 1.0, "probes": [], "capped": False, "floored": False, "wall_s": oracle_wall,
                 "at_common_load": None, "replicas": None})
    oserve = {k: r.capacity_scale for k, r in results.items() if k.startswith("oserve")}
    summary = {
        "plain_vllm_scale": plain.capacity_scale, "plain_vllm_variant": plain.variant,
        "best_static": best_label, "best_static_scale": best, "best_single_static": best_single,
        "oracle_scale": bound.scale,
        "oserve_vs_plain": {k: _ratio(v, plain.capacity_scale) for k, v in oserve.items()},
        "oserve_vs_best_static": {k: _ratio(v, best) for k, v in oserve.items()},
        "oracle_fraction": {k: _ratio(v, bound.scale) for k, v in oserve.items()},
        "best_static_oracle_fraction": _ratio(best, bound.scale),
    }
    study = {
        "requests": len(measured), "duration_s": span, "mean_rate_rps": rate, "target": target,
        "warmup_s": warmup_s,
        "slo": slo.model_dump(), "seed": seed, "rel_tol": rel_tol, "common_scale": common, "rows": rows,
        "oracle": {"source": bound.source, "scale": bound.scale, "window_s": bound.window_s,
                   "window_bound_scale": bound.lp_scale, "floored_by": bound.floored_by,
                   "variant_factors": bound.variant_factors,
                   "static_scales": bound.static_scales, "variants": bound.variants, "classes": bound.classes,
                   "capacities_rps": bound.capacities, "best_class_variant": bound.best_class_variant,
                   "table_units": {"scale": table_bound.scale, "static_scales": table_bound.static_scales,
                                   "capacities_rps": table_bound.capacities}},
        "summary": summary, "wall_s": time.perf_counter() - t_start,
        "planner_capacities": planner_capacities, "calibration": calibration,
    }
    from oserve.compose.capacity_refine import restate_study

    restate_study(study)  # adds the simulated oracle (the best fixed plan until a window oracle is added)
    if window_oracle:
        from oserve.compose.window_oracle import add_window_oracle

        add_window_oracle(study, trace, table, cluster, scheme, cfg, window_s=oracle_window_s, seed=seed,
                          planning_table=planning_table, log=say)
        study["wall_s"] = time.perf_counter() - t_start
    return study
