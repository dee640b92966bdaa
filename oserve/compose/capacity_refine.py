"""Continue a finished capacity search to a tighter bracket, and restate a study's ratios from its rows.

A capacity study bisects each policy's scale until the bracket ``hi / lo`` is within ``rel_tol``; its
ratios (oserve over plain vLLM, over the best fixed plan, over the oracle) carry that tolerance. At
``rel_tol = 0.05`` two policies whose true capacities are equal can read 5% apart, so a 0.97 goal on
their ratio cannot be resolved: on Llama-2-70B conv, oserve met the target at 6.189x and missed it at
6.463x (0.890), so its capacity lies anywhere in between (bench/results/capacity_router_requests.json, 55d2db5).
Bisection from the same bracket with a smaller ``rel_tol`` probes exactly the scales a search run with
that ``rel_tol`` from the same start would have probed next, so refining a finished search equals re-running
it, at the cost of the new probes only. (Within a study each policy's search starts at the previous
policy's capacity, so a study re-run from scratch at the finer tolerance may take other paths for the later
policies: another bisection to the same tolerance, not the same probes.)
"""

from __future__ import annotations

from typing import Any

from oserve.compose.capacity import CapacityResult, Probe, _ratio, find_capacity
from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig
from oserve.types import ClassScheme, ClusterSpec
from oserve.workload.trace import Trace

__all__ = ["bracket_of", "refine_capacity", "recalibrate_lp_bound", "restate_study"]


def bracket_of(probes: list[list[float]] | list[tuple[float, float]], target: float) -> tuple[float, float] | None:
    """``(lo, hi)`` of a finished search: the largest probed scale that met ``target`` and the smallest probed
    scale above it that missed it; None when the search was capped (nothing missed above) or floored (nothing met).
    """
    met = [float(s) for s, a in probes if float(a) >= target]
    if not met:
        return None
    lo = max(met)
    above = [float(s) for s, a in probes if float(s) > lo and float(a) < target]
    return (lo, min(above)) if above else None


def refine_capacity(policy: str, probes: list[list[float]], trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                    scheme: ClassScheme, cfg: SimConfig, *, target: float, rel_tol: float, seed: int = 0,
                    planning_table: ProfileTable | None = None, measure_from_s: float = 0.0) -> CapacityResult | None:
    """Bisect ``policy`` further from its finished search's bracket (``probes``: ``[scale, attainment]``) until
    ``hi / lo <= 1 + rel_tol``, with the same scaler, seed and simulation as
    :func:`oserve.compose.capacity.find_capacity` (``trace`` clipped to the context as the study's was).

    Returns:
        The result with the earlier probes first (their summaries empty), or None when the search had no
        bracket (capped or floored) or its bracket is already within ``rel_tol``.

    Raises:
        ConfigError: as :func:`oserve.compose.capacity.find_capacity`.
    """
    bracket = bracket_of(probes, target)
    if bracket is None or bracket[1] / bracket[0] <= 1.0 + rel_tol:
        return None
    r = find_capacity(policy, trace, table, cluster, scheme, cfg, target=target, seed=seed, rel_tol=rel_tol,
                      planning_table=planning_table, measure_from_s=measure_from_s, bracket=bracket)
    r.probes = [Probe(float(s), float(a)) for s, a in probes] + r.probes
    return r


def recalibrate_lp_bound(study: dict[str, Any], trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                         scheme: ClassScheme) -> bool:
    """Recompute a ``table-calibrated`` LP bound from the rows' current ``static:V`` scales, in place; call it
    after refining them and before :func:`restate_study`.

    The calibration scales each variant's table capacities by its simulated static capacity over its table-units
    one (:func:`oserve.compose.oracle.sound_oracle`), so the bound moves with those rows: refining every
    ``static:V`` 4% up moves it 4% up, and a bound left at the coarse scales reads every ``oracle_fraction``
    up to the coarse ``rel_tol`` high. ``trace``: as :func:`refine_capacity`'s (the study's, clipped); its part
    from ``study["warmup_s"]`` on is the bound's. Updates ``oracle``'s ``window_bound_scale``, ``static_scales``,
    ``variant_factors``, ``capacities_rps`` and ``best_class_variant``.

    Returns:
        Whether the bound was recomputed (False: another source, whose capacities do not depend on the rows).
    """
    from oserve.compose.measured import measured_part
    from oserve.compose.oracle import oracle_bound, sound_oracle

    oracle = study["oracle"]
    if oracle.get("source") != "table-calibrated":
        return False
    measured = measured_part(trace, float(study.get("warmup_s", 0.0)))
    target = float(study["target"])
    fixed = {r["policy"]: float(r["capacity_scale"]) for r in study["rows"]
             if r["policy"].startswith("static:") or r["policy"] == "static-mix"}
    tb = oracle_bound(measured, table, cluster, scheme, window_s=float(oracle["window_s"]), target=target)
    b = sound_oracle(tb, measured, table, cluster, scheme, fixed, target=target)
    oracle.update(window_bound_scale=b.lp_scale, static_scales=b.static_scales, variant_factors=b.variant_factors,
                  capacities_rps=b.capacities, best_class_variant=b.best_class_variant)
    return True


def restate_study(study: dict[str, Any]) -> None:
    """Recompute a capacity study's oracle, every row's ratios and the summary from the rows' capacities, in place.

    The oracle is the LP bound (``oracle["window_bound_scale"]``, in the simulator's units) floored by the best
    fixed plan (``static:V`` or ``static-mix``), raised to the simulated window oracle where that is higher
    (``oracle["window_oracle"]["scale"]``, :mod:`oserve.compose.window_oracle`). The summary also gives the
    *simulated* oracle, the best of the window oracle and the fixed plans (``simulated_oracle_scale``,
    ``simulated_oracle_fraction``, also per row): every number in it comes from the same simulator as the policies', while the
    LP bound prices per-class capacities that no plan was simulated to reach. ``window_oracle_lead_in_s``: the
    window oracle's lead-in (``"inf"``, seconds, 0 for one recorded without it, which served each window from
    an idle cluster and rates even one fixed plan above itself; None without a window oracle).

    Raises:
        KeyError: a study without ``rows``, ``oracle``, ``summary`` or a ``plain-vllm`` row.
    """
    rows, oracle, summary = study["rows"], study["oracle"], study["summary"]
    by = {r["policy"]: r for r in rows}
    fixed = {k: float(r["capacity_scale"]) for k, r in by.items() if k.startswith("static:") or k == "static-mix"}
    best_label = max(fixed, key=lambda k: fixed[k]) if fixed else None
    best = fixed[best_label] if best_label else 0.0
    singles = {k: v for k, v in fixed.items() if k.startswith("static:")}
    # the LP bound; a study without it (hand-made) has its oracle before any window oracle, or its oracle
    lp = float(oracle["window_bound_scale"] if "window_bound_scale" in oracle
               else oracle.get("without_window_oracle", {"scale": oracle["scale"]})["scale"])
    base, floored_by = (best, best_label) if best > lp else (lp, None)
    oracle["without_window_oracle"] = {"scale": base, "floored_by": floored_by}
    wo = float(oracle["window_oracle"]["scale"]) if oracle.get("window_oracle") else 0.0
    bound, oracle["floored_by"] = (wo, "window-oracle") if wo > base else (base, floored_by)
    oracle["scale"] = bound
    simulated = max(wo, best)
    plain = float(by["plain-vllm"]["capacity_scale"])
    rate = float(study["mean_rate_rps"])
    for r in rows:
        s = bound if r["policy"] == "oracle" else float(r["capacity_scale"])
        r.update(capacity_scale=s, capacity_rps=s * rate, vs_plain=_ratio(s, plain), vs_best_static=_ratio(s, best),
                 oracle_fraction=_ratio(s, bound), simulated_oracle_fraction=_ratio(s, simulated))
    oserve = {k: float(r["capacity_scale"]) for k, r in by.items() if k.startswith("oserve")}
    summary.update(
        plain_vllm_scale=plain, best_static=best_label, best_static_scale=best,
        best_single_static=max(singles, key=lambda k: singles[k]) if singles else None, oracle_scale=bound,
        oserve_vs_plain={k: _ratio(v, plain) for k, v in oserve.items()},
        oserve_vs_best_static={k: _ratio(v, best) for k, v in oserve.items()},
        oracle_fraction={k: _ratio(v, bound) for k, v in oserve.items()},
        best_static_oracle_fraction=_ratio(best, bound),
        simulated_oracle_scale=simulated,
        simulated_oracle_fraction={k: _ratio(v, simulated) for k, v in oserve.items()},
        # 0: a window oracle recorded before the lead-in, each window from an idle cluster (biased high)
        window_oracle_lead_in_s=oracle["window_oracle"].get("lead_in_s", 0.0) if oracle.get("window_oracle") else None)
