"""Calibrate a profile table's per-class capacities against the simulator on real request lengths.

The analytical table (:mod:`oserve.profiles.capacity`) and the simulator disagree by 0.5-2x per
variant and class (``docs/capacity.md``, finding 2), so no uniform headroom corrects it, and the
table's cliffs (e.g. Llama-2-70B int8 TP2 rated 0 for long prompts that the simulator serves at
87-93% attainment) steer plans to variants the simulator rates worse. :func:`calibrated_table`
returns a copy of the table whose every ``capacity_rps`` is measured with the same scheduler the
simulator runs, on the lengths of a workload's requests of that class:

1. ``a0[v, c]``: SLO attainment of one replica at a light load (``light_fraction`` of the table's
   capacity, at least ``light_rate_rps``), requests drawn from the workload's class ``c`` (prompts
   clipped to the replica's context, :func:`oserve.sim.capacity_check.check_capacity`).
2. ``a0 < min_attainment``: the variant cannot serve the class within the SLO (capacity 0).
3. Otherwise the capacity is the largest Poisson rate at which attainment stays
   ``>= target * a0`` (bisected, ``rel_tol``): the class keeps ``target`` of the attainment the
   variant gives it unloaded. A variant that misses the SLO for the longest prompts of a class
   even unloaded (int8 TP2 above) keeps that class, as a pooled deployment does; the loss is the
   ``1 - a0`` the metric also counts.

Only the lengths of the workload enter (not its arrival pattern). Cost: one bisection (~8
single-replica simulations of ``duration_s``) per (variant, class); ~1-3 minutes for the 11
Llama-2-70B variants on this 2-core machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import MIN_CAPACITY_RPS, ProfileTable
from oserve.types import SLO, ClassScheme
from oserve.workload.trace import Trace

__all__ = ["calibrated_capacities", "calibrated_table"]


def calibrated_capacities(table: ProfileTable, trace: Trace, scheme: ClassScheme, variants: Sequence[str] | None = None,
                          *, target: float = 0.9, slo: SLO | None = None, duration_s: float = 300.0, seed: int = 0,
                          rel_tol: float = 0.05, light_fraction: float = 0.05, light_rate_rps: float = 0.02,
                          min_attainment: float = 0.5) -> dict[str, dict[str, dict[str, float]]]:
    """Simulator-measured capacity of one replica per (variant, class), req/s (module docstring).

    Args:
        table: the profile table whose iteration models drive the simulated replicas.
        trace: the workload whose request lengths are drawn per class (already clipped or not).
        scheme: request classes.
        variants: variants to calibrate (default: all of the table's).
        target: fraction of the unloaded attainment to keep, in (0, 1].
        slo: SLO (default: the table's).
        duration_s: length of each single-replica run, seconds (at least 100 requests per run).
        seed: seed of arrivals and length sampling.
        rel_tol: relative tolerance of the bisection.
        light_fraction / light_rate_rps: the light load of step 1, fraction of the table capacity /
            floor in req/s.
        min_attainment: unloaded attainment below which the variant gets capacity 0, in [0, 1].

    Returns:
        ``{variant: {class: {"capacity_rps", "unloaded_attainment", "target_attainment"}}}``; classes
        absent from ``trace`` are left out.

    Raises:
        ConfigError: ``target`` outside (0, 1], ``min_attainment`` outside [0, 1], an unknown variant.
    """
    from oserve.compose.capacity import bisect_scale
    from oserve.sim.capacity_check import check_capacity

    if not 0 < target <= 1:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target", allowed="(0, 1]")
    if not 0 <= min_attainment <= 1:
        raise ConfigError(f"min_attainment must be in [0, 1], got {min_attainment}", field="min_attainment",
                          allowed="[0, 1]")
    names = list(variants) if variants is not None else sorted(table.variants)
    for v in names:
        if v not in table.variants:
            raise ConfigError(f"unknown variant {v!r}", field="variants", allowed=", ".join(sorted(table.variants)))
    inp = np.asarray(trace.input_tokens)
    out = np.asarray(trace.output_tokens)
    cls = scheme.classify_many(inp, out)
    result: dict[str, dict[str, dict[str, float]]] = {v: {} for v in names}
    for j, c in enumerate(scheme.names):
        sel = cls == j
        if not sel.any():
            continue
        lengths = (inp[sel], out[sel])
        for v in names:
            prof = table.variants[v].classes.get(c)
            table_cap = prof.capacity_rps if prof is not None else 0.0
            light = max(light_rate_rps, light_fraction * table_cap)

            def att(rate: float, v: str = v, c: str = c, lengths: tuple = lengths) -> float:
                return float(check_capacity(table, v, c, rate_rps=rate, duration_s=duration_s, scheme=scheme,
                                            seed=seed, lengths=lengths, slo=slo, min_requests=100)["slo_attainment"])

            a0 = att(light)
            goal = target * a0
            if a0 < min_attainment or goal <= 0:
                result[v][c] = {"capacity_rps": 0.0, "unloaded_attainment": a0, "target_attainment": goal}
                continue
            start = min(max(table_cap, 0.25, light), 100.0)
            b = bisect_scale(att, target=goal, start=start, rel_tol=rel_tol, min_scale=light, max_scale=512.0)
            cap = float(b.scale) if b.scale >= MIN_CAPACITY_RPS else 0.0
            result[v][c] = {"capacity_rps": cap, "unloaded_attainment": a0, "target_attainment": goal}
    return result


def calibrated_table(table: ProfileTable, capacities: dict[str, dict[str, dict[str, float]]]) -> ProfileTable:
    """A copy of ``table`` with ``capacity_rps`` replaced where ``capacities`` (of
    :func:`calibrated_capacities`) has a value; other classes and every iteration model unchanged.
    The copy's ``source`` stays; ``software["calibrated"]`` records that capacities were calibrated.
    """
    variants = {}
    for name, v in table.variants.items():
        per = capacities.get(name, {})
        classes = {c: (p.model_copy(update={"capacity_rps": per[c]["capacity_rps"]}) if c in per else p)
                   for c, p in v.classes.items()}
        variants[name] = v.model_copy(update={"classes": classes})
    software = {**table.software, "calibrated": "capacity_rps measured with the simulator on a workload's lengths "
                                                "(oserve.compose.calibrate)"}
    return table.model_copy(update={"variants": variants, "software": software})
