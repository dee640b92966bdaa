"""The paired probe of a capacity study: decide "oserve vs the best fixed deployment" off the bisection grid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oserve.profiles.table import ProfileTable
from oserve.sim.config import SimConfig
from oserve.types import ClassScheme, ClusterSpec
from oserve.workload.trace import Trace

if TYPE_CHECKING:
    from oserve.compose.capacity import CapacityResult

__all__ = ["paired_probes"]


def paired_probes(results: dict[str, CapacityResult], trace: Trace, table: ProfileTable, cluster: ClusterSpec,
                   scheme: ClassScheme, cfg: SimConfig, *, target: float, seed: int,
                   planning_table: ProfileTable | None, measure_from_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """Decide "oserve vs the best fixed deployment" with a simulation of the lower one at the higher one's scale.

    Every bisection stops at a bracket ``[lo, hi)`` with ``hi / lo <= 1 + rel_tol`` and reports ``lo``; two
    policies bisected from different starts land on different grids, so a policy whose bracket contains the
    other's capacity reads as up to ``rel_tol`` below it without a simulation saying so (70B merged,
    rel_tol 0.05: oserve's bracket [1.942, 2.028) held int8 TP2's 1.995 and read 0.973x). For each
    ``oserve`` policy and the best fixed deployment (``static:V`` or ``static-mix``), whichever reports the
    lower capacity is probed once at the other's capacity ``s*`` when its own bracket holds ``s*`` (no probe
    at or below ``s*`` missed the target): if it meets ``target`` its capacity becomes ``s*`` (a scale
    observed to meet it, as :func:`oserve.compose.capacity.bisect_scale` reports), else it stays ``lo``
    (below ``s*``, now measured).
    Symmetric, so neither side gains from the grid. Mutates ``results`` (capacity and probes).

    Returns:
        ``{label: {"scale", "attainment", "met", "against"}}`` of the policies probed (``against``: the
        policy whose capacity was the probed scale).
    """
    from oserve.compose import capacity as cap  # at call time: the capacity search is patched in tests

    out: dict[str, dict[str, Any]] = {}

    def probe(label: str, scale: float, against: str) -> None:
        r = results[label]
        above = [p.scale for p in r.probes if p.scale > r.capacity_scale and p.attainment < target]
        if r.capped or not scale > r.capacity_scale or not above or not scale < min(above):
            return  # nothing to decide: capped, already at s*, or a miss at or below s* is measured
        pol = cap.parse_capacity_policy(label)
        summary, _ = cap.simulate_policy(pol, cap.default_scaler(seed)(trace, scale), table, cluster, scheme, cfg,
                                         seed=seed, planning_table=planning_table, measure_from_s=measure_from_s)
        a = float(summary["slo_attainment"])
        r.probes.append(cap.Probe(scale, a, summary))
        if a >= target:
            r.capacity_scale, r.floored = scale, False
        out[label] = {"scale": scale, "attainment": a, "met": a >= target, "against": against}

    for label in [k for k in results if k.startswith("oserve")]:
        fixed = {k: r.capacity_scale for k, r in results.items() if k.startswith("static:") or k == "static-mix"}
        if not fixed:
            break
        best = max(fixed, key=lambda k: fixed[k])
        mine = results[label].capacity_scale
        if fixed[best] > mine:
            probe(label, fixed[best], best)
        elif mine > fixed[best]:
            probe(best, mine, label)
    return out
