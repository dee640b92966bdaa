"""The measured part of a capacity study's trace: the requests from ``measure_from_s`` on (a warm-up before it is
served by every policy but not counted), its span, its mean demand and the summary of its requests.

Used by :mod:`oserve.compose.capacity` (which re-exports the public names) and :mod:`oserve.compose.window_oracle`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.types import ClassScheme, Demand
from oserve.workload.trace import Trace

__all__ = ["mean_demand", "measured_part", "measured_span_s", "check_measure_from", "measured_summary"]


def mean_demand(trace: Trace, scheme: ClassScheme, *, measure_from_s: float = 0.0) -> Demand:
    """Mean per-class arrival rate of the measured part of ``trace``, req/s (the hindsight demand of ``static-mix``).

    The requests arriving at or after ``measure_from_s`` (seconds of ``trace``'s clock; all of them when it is
    <= 0) over their span from the clock's 0 (:func:`measured_span_s`, at least 1 s): with a warm-up the span
    starts at ``measure_from_s``, not at the first counted arrival, so a quiet gap after the warm-up lowers the
    rate; :func:`measured_part`'s result, whose clock starts at the warm-up's end, gets the same rates with
    ``measure_from_s`` 0; a thinned trace (:func:`oserve.workload.transforms.scale_rate` keeps the time axis)
    is rated from 0, not from its first kept arrival.
    """
    part = measured_part(trace, measure_from_s)
    cls = scheme.classify_many(np.asarray(part.input_tokens), np.asarray(part.output_tokens))
    counts = np.bincount(cls, minlength=len(scheme))
    span = max(measured_span_s(trace, measure_from_s), 1.0)
    return Demand(rates_rps={c: float(counts[i] / span) for i, c in enumerate(scheme.names)})


def measured_part(trace: Trace, measure_from_s: float) -> Trace:
    """The requests of ``trace`` arriving at or after ``measure_from_s`` seconds, on a clock whose 0 is
    ``measure_from_s`` (the gap from it to the first counted arrival is kept; ``trace`` itself when
    ``measure_from_s`` <= 0).

    Raises:
        TraceError: no request arrives after ``measure_from_s``.
    """
    if measure_from_s <= 0:
        return trace
    from dataclasses import replace

    from oserve.workload.transforms import select

    part = select(trace, np.asarray(trace.arrival_s) >= measure_from_s, rebase=False)
    meta = dict(part.meta)
    if "t0_s" in meta:
        meta["t0_s"] = float(meta["t0_s"]) + measure_from_s
    return replace(part, arrival_s=part.arrival_s - measure_from_s, meta=meta)


def measured_span_s(trace: Trace, measure_from_s: float) -> float:
    """Seconds the measured part of ``trace`` spans: from ``measure_from_s`` (seconds of ``trace``'s clock; when it
    is <= 0, the clock's 0, or the first arrival if that is earlier) to the last arrival (0 for an empty trace or a
    start past the last arrival)."""
    if not len(trace):
        return 0.0
    start = measure_from_s if measure_from_s > 0 else min(float(trace.arrival_s[0]), 0.0)
    return max(float(trace.arrival_s[-1]) - start, 0.0)


def check_measure_from(trace: Trace, value: float, name: str) -> None:
    """Refuse a measured part's start (``value``, seconds of ``trace``'s clock) that is not finite, negative, or at
    or past the last arrival (nothing would be counted: SLO attainment reads 1.0, vacuously, at every scale).

    Raises:
        ConfigError: field ``name``, allowed ``[0, last arrival)`` seconds.
    """
    end = float(trace.arrival_s[-1]) if len(trace) else 0.0
    if not (math.isfinite(value) and 0 <= value < end):
        raise ConfigError(f"{name} must be in [0, {end:g}) seconds (before the trace's last arrival), got {value}",
                          field=name, allowed=f"[0, {end:g}) seconds")


def measured_summary(res: Any, slo: Any, measure_from_s: float) -> dict[str, Any]:
    """:func:`oserve.sim.metrics.summarise` of the requests of ``res`` arriving at or after ``measure_from_s``
    (``res`` None: of no request), over the span from ``measure_from_s`` to the trace's last arrival (``span_s``,
    the average rates' denominator, seconds; the peaks' windows start at ``measure_from_s``). The switch fields
    (``switches*``, ``reconfig*``, ``transitions*``) and the memory fields (``memory_*``) are of the whole run,
    warm-up included (``res``'s targets, transitions and timeline): a switch decided in the warm-up may still be
    under way when the counted requests arrive."""
    from oserve.sim.metrics import summarise

    if measure_from_s <= 0:
        return summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
    records = res.requests if res is not None else []
    whole_run: dict[str, Any] = {} if res is None else {
        "span_s": max(float(res.duration_s) - measure_from_s, 0.0), "timeline": res.timeline,
        "total_memory_bytes": res.total_memory_bytes, "transitions": res.transitions,
        "targets": getattr(res, "targets", None)}
    return summarise([r for r in records if float(r["arrival_s"]) >= measure_from_s],
                     slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s, start_s=measure_from_s, **whole_run)
