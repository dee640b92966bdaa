"""The oracle bound on capacity: the catalogue's best plan per window, perfect demand knowledge, free switches.

For every window of ``window_s`` seconds the true per-class arrival rates ``d[w, c]`` (req/s at
scale 1) are known. With per-replica, per-class capacities ``cap[v, c]`` (req/s a replica of
variant ``v`` serves of class ``c`` alone within the SLO) and ``dev[v]`` devices per replica, the
largest scale ``lam[w]`` any deployment of the catalogue carries in window ``w`` is bounded by the
linear relaxation of the planners' problem (fractional replicas, node packing ignored, each
class's traffic split freely over variants):

    lam[w] = D / sum_c d[w, c] * min_v (dev[v] / cap[v, c])

(D: devices of the cluster). The relaxation separates by class: each class is served by the
variant that gives it the most capacity per device. Every integer plan the planners can build is a
feasible point of it, so ``lam[w]`` upper-bounds them all, including a fixed static deployment of
``N[v]`` replicas of one variant, which carries ``N[v] / sum_c d[w, c] / cap[v, c]`` (used for the
same-units comparison, :func:`static_window_scales`). No switch is simulated: switching is free.

Capacity at SLO attainment ``target``: requests in windows whose ``lam[w]`` is at least the scale
are counted as served within the SLO, the others as missed; the bound is the largest scale at which
those windows hold at least ``target`` of the requests (a request-weighted quantile of ``lam``).
Queueing across windows is ignored, so this too is optimistic: a bound.

Capacities come from the profile table (:func:`table_class_capacities`, what the planners see) or
are measured with the simulator on the trace's own requests of each class
(:func:`simulated_class_capacities`, one replica, Poisson arrivals, bisected to the same attainment
target), so that the bound is in the simulator's units and can be compared with simulated
capacities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.types import SLO, ClassScheme, ClusterSpec
from oserve.workload.trace import Trace

__all__ = ["OracleBound", "window_rates", "oracle_window_scales", "static_window_scales", "quantile_scale",
           "table_class_capacities", "simulated_class_capacities", "oracle_bound", "sound_oracle"]


def window_rates(trace: Trace, scheme: ClassScheme, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """True per-class arrival rates per window.

    Returns:
        ``(rates, counts)``: ``rates`` of shape ``(W, C)`` in req/s, ``counts`` of shape ``(W,)``
        (requests arriving in each window); windows of ``window_s`` seconds from the first arrival.

    Raises:
        ConfigError: ``window_s`` not positive.
    """
    if not window_s > 0:
        raise ConfigError(f"window_s must be > 0, got {window_s}", field="window_s", allowed="> 0 s")
    arr = np.asarray(trace.arrival_s, float)
    cls = scheme.classify_many(np.asarray(trace.input_tokens), np.asarray(trace.output_tokens))
    nw = max(1, int(np.ceil((arr[-1] - arr[0]) / window_s + 1e-12))) if arr.size else 1
    w = np.minimum(((arr - (arr[0] if arr.size else 0.0)) // window_s).astype(np.int64), nw - 1)
    counts = np.zeros((nw, len(scheme)))
    np.add.at(counts, (w, cls), 1.0)
    return counts / window_s, counts.sum(axis=1)


def _need(rates: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Resources needed per window: ``sum_c rates[w, c] * cost[c]``, with 0 * inf = 0."""
    with np.errstate(invalid="ignore"):
        return np.where(rates > 0, rates * cost[None, :], 0.0).sum(axis=1)


def oracle_window_scales(rates: np.ndarray, caps: np.ndarray, devices: np.ndarray, total_devices: float) -> np.ndarray:
    """``lam[w]`` of the module docstring.

    Args:
        rates: ``(W, C)`` per-class rates at scale 1, req/s.
        caps: ``(V, C)`` per-replica capacities, req/s (0: the variant cannot serve the class).
        devices: ``(V,)`` devices per replica.
        total_devices: devices of the cluster.

    Returns:
        ``(W,)`` largest carried scale per window (inf for an empty window, 0 when a class with
        demand has no variant).
    """
    with np.errstate(divide="ignore", over="ignore"):
        per_dev = np.where(caps > 0, devices[:, None] / np.where(caps > 0, caps, 1.0), np.inf)
    cost = per_dev.min(axis=0)
    need = _need(rates, cost)
    with np.errstate(divide="ignore"):
        return np.where(need > 0, total_devices / need, np.inf)


def static_window_scales(rates: np.ndarray, caps: np.ndarray, replicas: int) -> np.ndarray:
    """Largest scale ``replicas`` replicas of one variant with per-class ``caps`` (``(C,)``) carry per window."""
    with np.errstate(divide="ignore", over="ignore"):
        cost = np.where(caps > 0, 1.0 / np.where(caps > 0, caps, 1.0), np.inf)
    need = _need(rates, cost)
    with np.errstate(divide="ignore"):
        return np.where(need > 0, replicas / need, np.inf)


def quantile_scale(lam: np.ndarray, counts: np.ndarray, target: float) -> float:
    """Largest ``s`` such that windows with ``lam >= s`` hold at least ``target`` of the requests.

    Raises:
        ConfigError: ``target`` outside (0, 1].
    """
    if not 0 < target <= 1:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target", allowed="(0, 1]")
    keep = counts > 0
    lam, counts = lam[keep], counts[keep]
    if lam.size == 0:
        return float("inf")
    order = np.argsort(-lam, kind="stable")
    cum = np.cumsum(counts[order])
    i = int(np.searchsorted(cum, target * cum[-1] - 1e-9))
    return float(lam[order][min(i, lam.size - 1)])


def table_class_capacities(table: ProfileTable, variants: list[str], classes: list[str]) -> np.ndarray:
    """``(V, C)`` capacities from the table's ``capacity_rps`` (what the planners see), req/s."""
    return np.array([[table.variants[v].classes[c].capacity_rps if c in table.variants[v].classes else 0.0
                      for c in classes] for v in variants])


def simulated_class_capacities(table: ProfileTable, trace: Trace, scheme: ClassScheme, variants: list[str], *,
                               target: float, slo: SLO | None = None, duration_s: float = 300.0, seed: int = 0,
                               rel_tol: float = 0.05) -> np.ndarray:
    """``(V, C)`` per-replica capacities measured with the simulator, req/s.

    For each variant and each class present in ``trace``: one replica, Poisson arrivals for
    ``duration_s`` of requests whose lengths are drawn from the trace's requests of that class
    (clipped to the replica's context, :func:`oserve.sim.capacity_check.check_capacity`, at least
    100 requests per run); the rate
    is bisected (:func:`oserve.compose.capacity.bisect_scale`, from the table's capacity) to the largest
    with attainment >= ``target``. Classes absent from the trace get 0.

    Raises:
        ConfigError: bad ``target`` or ``rel_tol``.
    """
    from oserve.compose.capacity import bisect_scale
    from oserve.sim.capacity_check import check_capacity

    inp = np.asarray(trace.input_tokens)
    out = np.asarray(trace.output_tokens)
    cls = scheme.classify_many(inp, out)
    caps = np.zeros((len(variants), len(scheme)))
    for j, c in enumerate(scheme.names):
        sel = cls == j
        if not sel.any():
            continue
        lengths = (inp[sel], out[sel])
        for i, v in enumerate(variants):
            start = min(max(table.variants[v].classes[c].capacity_rps if c in table.variants[v].classes else 0.0,
                            0.25), 100.0)
            b = bisect_scale(lambda r, v=v, c=c, lengths=lengths: check_capacity(
                table, v, c, rate_rps=r, duration_s=duration_s, scheme=scheme, seed=seed, lengths=lengths,
                slo=slo, min_requests=100)["slo_attainment"],
                target=target, start=start, rel_tol=rel_tol, min_scale=1.0 / 64, max_scale=512.0)
            caps[i, j] = b.scale
    return caps


@dataclass
class OracleBound:
    """The oracle bound and, in the same units, each static deployment's.

    Attributes:
        scale: the oracle's capacity scale (see the module docstring).
        static_scales: ``{variant: capacity scale}`` of each single-variant static deployment in
            the same model (same capacities, same windows).
        window_s: window length, seconds.
        window_scales: ``lam[w]`` per window (inf for empty windows).
        variants / classes: the order of ``capacities``' rows and columns.
        capacities: ``(V, C)`` per-replica capacities used, req/s.
        source: ``"table"``, ``"simulated"`` or ``"table-calibrated"`` (:func:`sound_oracle`).
        lp_scale: the window bound before :func:`sound_oracle`'s floor (None: not floored).
        floored_by: the simulated fixed plan that set the scale (its capacity was above the window
            bound), or None.
        variant_factors: ``{variant: simulated / table-units static capacity}`` of ``table-calibrated``.
    """

    scale: float
    static_scales: dict[str, float]
    window_s: float
    window_scales: list[float]
    variants: list[str]
    classes: list[str]
    capacities: list[list[float]]
    source: str
    best_class_variant: dict[str, str] = field(default_factory=dict)
    lp_scale: float | None = None
    floored_by: str | None = None
    variant_factors: dict[str, float] = field(default_factory=dict)


def oracle_bound(trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme, *,
                 capacities: np.ndarray | None = None, variants: list[str] | None = None, window_s: float = 60.0,
                 target: float = 0.9, source: str = "table") -> OracleBound:
    """The oracle bound on ``trace`` (scale 1 = the trace as given) for the variants that fit ``cluster``.

    Args:
        trace: the workload at scale 1.
        table: the profile table.
        cluster: the cluster (its device count is ``D``; a variant fits if one static replica does).
        scheme: request classes.
        capacities: ``(V, C)`` per-replica capacities for ``variants`` (default: the table's).
        variants: the catalogue (default: every variant that fits the cluster).
        window_s: window of the perfect demand knowledge, seconds.
        target: SLO attainment target, in (0, 1].
        source: label of the capacities, reported.

    Raises:
        ConfigError: no variant fits, shapes disagree, bad ``window_s`` or ``target``.
    """
    from oserve.sim.policies import static_plan

    if variants is None:
        variants = []
        for v in sorted(table.variants):
            try:
                static_plan(cluster, table, v)
            except ConfigError:
                continue
            variants.append(v)
    if not variants:
        raise ConfigError("no variant fits the cluster", field="variants", allowed="variants that fit a node")
    caps = table_class_capacities(table, variants, scheme.names) if capacities is None else np.asarray(capacities)
    if caps.shape != (len(variants), len(scheme)):
        raise ConfigError(f"capacities must have shape {(len(variants), len(scheme))}, got {caps.shape}",
                          field="capacities", allowed="(variants, classes)")
    rates, counts = window_rates(trace, scheme, window_s)
    devices = np.array([table.variants[v].devices_per_replica for v in variants], float)
    total = float(cluster.total_devices)
    lam = oracle_window_scales(rates, caps, devices, total)
    statics = {}
    for i, v in enumerate(variants):
        n = len(static_plan(cluster, table, v).replicas)
        statics[v] = quantile_scale(static_window_scales(rates, caps[i], n), counts, target)
    with np.errstate(divide="ignore", over="ignore"):
        per_dev = np.where(caps > 0, devices[:, None] / np.where(caps > 0, caps, 1.0), np.inf)
    best = {c: variants[int(np.argmin(per_dev[:, j]))] for j, c in enumerate(scheme.names)
            if np.isfinite(per_dev[:, j]).any()}
    return OracleBound(scale=quantile_scale(lam, counts, target), static_scales=statics, window_s=window_s,
                       window_scales=[float(x) for x in lam], variants=list(variants), classes=list(scheme.names),
                       capacities=caps.tolist(), source=source, best_class_variant=best)


def sound_oracle(bound: OracleBound, trace: Trace, table: ProfileTable, cluster: ClusterSpec, scheme: ClassScheme,
                 fixed_scales: dict[str, float], *, target: float = 0.9) -> OracleBound:
    """The oracle in the simulator's units, never below a plan the simulator shows the catalogue carries.

    A window bound whose capacities come from the table is in the table's units, not the simulator's:
    on the shipped A100 tables it read 1.90 on Llama-2-70B merged, *below* the simulated static int8
    TP2 deployment (1.99), and 1.30x the best static deployment on Llama-3-8B merged where the table's
    own bound over any mix is 1.00x (the table rates int8 TP1 ~30% above what the simulator serves).
    Two corrections, both keeping the relaxation's structure (``docs/capacity.md``):

    1. ``bound.source == "table"``: each variant's per-class capacities are scaled by
       ``k[v] = S[v] / T[v]``, its simulated static capacity scale (``fixed_scales["static:v"]``) over
       its static scale in the table's units (``bound.static_scales[v]``), so every static
       deployment's window bound equals its simulated capacity; a variant without both (``T = 0``:
       the table gives it no capacity for a class the trace has) gets the largest ``k`` (optimistic,
       as a bound must be). Source ``"table-calibrated"``.
    2. The scale is at least every simulated fixed plan's (``fixed_scales``: ``static:V``,
       ``static-mix``): with perfect knowledge the oracle may hold that plan in every window, so a
       bound below it is not a bound. ``floored_by`` names the plan when it sets the scale.

    The result is still a relaxation (fractional replicas, per-class capacities, windows independent);
    what it is not any more is a number below what the simulator already showed.

    Args:
        bound: :func:`oracle_bound`'s result.
        trace / table / cluster / scheme: as :func:`oracle_bound`.
        fixed_scales: ``{policy label: simulated capacity scale}`` of plans held fixed all trace long.
        target: SLO attainment target, in (0, 1].

    Raises:
        ConfigError: ``target`` outside (0, 1].
    """
    if not 0 < target <= 1:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target", allowed="(0, 1]")
    out = dataclasses.replace(bound)
    if bound.source == "table":
        factors = {v: fixed_scales[f"static:{v}"] / t for v, t in bound.static_scales.items()
                   if t > 0 and np.isfinite(t) and fixed_scales.get(f"static:{v}", 0.0) > 0}
        if factors:
            k_max = max(factors.values())
            k = np.array([factors.get(v, k_max) for v in bound.variants])
            caps = np.asarray(bound.capacities) * k[:, None]
            out = oracle_bound(trace, table, cluster, scheme, capacities=caps, variants=bound.variants,
                               window_s=bound.window_s, target=target, source="table-calibrated")
            out.variant_factors = {v: float(x) for v, x in zip(bound.variants, k, strict=True)}
    best_label = max(fixed_scales, key=lambda k: fixed_scales[k]) if fixed_scales else None
    best = fixed_scales[best_label] if best_label is not None else 0.0
    out.lp_scale = out.scale
    if best > out.scale:
        out.scale, out.floored_by = best, best_label
    return out
