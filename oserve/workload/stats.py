"""Summary statistics of a trace (what ``oserve trace-stats`` prints)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oserve.errors import ConfigError, TraceError
from oserve.types import DEFAULT_SCHEME, ClassScheme
from oserve.workload.trace import Trace

__all__ = ["trace_stats", "token_quantiles", "bucket_mean_lengths", "SUMMARY_KEYS"]

SUMMARY_KEYS = ("requests", "duration_s", "rate_rps", "rate_per_minute", "interarrival_cv",
                "input_tokens", "output_tokens", "classes")
"""Top-level keys of :func:`trace_stats`' summary, in order."""


def token_quantiles(tokens: np.ndarray) -> dict[str, float]:
    """``p50``, ``p90``, ``p99`` and ``max`` of token counts.

    Quantiles use numpy's default linear interpolation (``np.percentile``, so ``p50`` is
    ``np.median``: on the Azure 2023 conv trace, 1,020 input tokens).
    """
    a = np.asarray(tokens, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": _num(p50), "p90": _num(p90), "p99": _num(p99), "max": _num(a.max())}


def _num(x: float) -> float | int:
    x = float(x)
    return int(x) if x.is_integer() else round(x, 3)


def trace_stats(trace: Trace, scheme: ClassScheme = DEFAULT_SCHEME, window_s: float = 600.0,
                by: str = "class") -> dict[str, Any]:
    """Summarise a trace.

    Args:
        trace: the trace (at least one request).
        scheme: request classes used for the ``classes`` section when ``by="class"``.
        window_s: width of the time windows of the ``classes`` section, seconds.
        by: ``"class"`` (the scheme's request classes, by input tokens and actual output tokens) or
            ``"source"`` (the trace's source tags, e.g. code vs conv of a merged Azure trace).

    Returns:
        A JSON-serialisable dict with keys :data:`SUMMARY_KEYS`:
        ``requests`` (count, failed rows included), ``duration_s`` (first to last arrival),
        ``rate_rps`` (requests / duration), ``rate_per_minute`` (``min``/``median``/``max`` requests
        in each complete minute from the first request; the trailing partial minute is dropped
        unless the trace is shorter than a minute), ``interarrival_cv`` (std / mean of the gaps,
        population std; 1 for a Poisson process), ``input_tokens`` and ``output_tokens``
        (``p50``/``p90``/``p99``/``max``), and ``classes``: ``by``, ``names``, ``window_s``,
        ``counts`` and ``shares`` over the whole trace, ``windows`` (per window: ``start_s``,
        ``requests``, ``counts``, ``shares``) and ``share_range`` (per name: ``min``/``max`` share
        over complete windows, all windows when none is complete). ``failed`` requests are counted
        in ``classes.failed`` when the trace flags any.

    Raises:
        ConfigError: empty trace, bad ``window_s`` or ``by``, or ``by="source"`` without source tags.
    """
    n = len(trace)
    if n == 0:
        raise ConfigError("cannot summarise an empty trace", field="trace", allowed=">= 1 request")
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ConfigError(f"window_s must be positive, got {window_s}", field="window_s", allowed="> 0 seconds")
    if by not in ("class", "source"):
        raise ConfigError(f"unknown grouping {by!r}", field="by", allowed="class, source")
    t = np.asarray(trace.arrival_s, dtype=np.float64)
    t = t - t[0]
    duration = float(t[-1])
    gaps = np.diff(t)
    cv = float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else 0.0
    minute = (t // 60.0).astype(np.int64)
    per_min = np.bincount(minute)
    n_complete = int(duration // 60.0)
    if n_complete >= 1:
        per_min = per_min[:n_complete]

    if by == "class":
        names = scheme.names
        idx = scheme.classify_many(trace.input_tokens, trace.output_tokens)
    else:
        if trace.source is None:
            raise ConfigError("trace has no source tags", field="by", allowed="class")
        src = np.asarray(trace.source).astype(str)
        names = sorted(set(src.tolist()))
        idx = np.searchsorted(np.asarray(names), src)
    k = len(names)
    n_win = max(1, int(math.ceil(duration / window_s)))  # an arrival at the very end joins the last window
    win = np.minimum((t // window_s).astype(np.int64), n_win - 1)
    table = np.bincount(win * k + idx, minlength=n_win * k).reshape(n_win, k)
    windows = []
    for w in range(n_win):
        tot = int(table[w].sum())
        windows.append({
            "start_s": round(w * window_s, 3),
            "requests": tot,
            "counts": {nm: int(table[w, j]) for j, nm in enumerate(names)},
            "shares": {nm: round(table[w, j] / tot, 4) if tot else 0.0 for j, nm in enumerate(names)},
        })
    complete = int(duration // window_s)
    rows = table[:complete] if complete >= 1 else table
    tots = rows.sum(axis=1, keepdims=True)
    shares = np.divide(rows, tots, out=np.zeros(rows.shape, dtype=np.float64), where=tots > 0)
    totals = table.sum(axis=0)
    classes: dict[str, Any] = {
        "by": by,
        "names": names,
        "window_s": window_s,
        "counts": {nm: int(totals[j]) for j, nm in enumerate(names)},
        "shares": {nm: round(float(totals[j]) / n, 4) for j, nm in enumerate(names)},
        "windows": windows,
        "share_range": {nm: {"min": round(float(shares[:, j].min()), 4), "max": round(float(shares[:, j].max()), 4)}
                        for j, nm in enumerate(names)},
    }
    if by == "class":
        classes["edges"] = {"input": list(scheme.input_edges), "output": list(scheme.output_edges)}
    if trace.failed is not None:
        classes["failed"] = int(np.sum(trace.failed))
    return {
        "requests": n,
        "duration_s": round(duration, 3),
        "rate_rps": round(n / duration, 4) if duration > 0 else None,
        "rate_per_minute": {"min": int(per_min.min()), "median": _num(np.median(per_min)), "max": int(per_min.max())},
        "interarrival_cv": round(cv, 4),
        "input_tokens": token_quantiles(trace.input_tokens),
        "output_tokens": token_quantiles(trace.output_tokens),
        "classes": classes,
    }


def bucket_mean_lengths(trace: Trace, scheme: ClassScheme) -> tuple[list[int], list[int]]:
    """Mean prompt tokens per input bucket and mean output tokens per output bucket of ``trace``
    under ``scheme``'s edges, rounded: the representative lengths to put in a config's
    ``classes.expected_input_tokens`` / ``expected_output_tokens`` (profile capacities are
    computed at them, see :mod:`oserve.profiles.rescore`).

    Returns:
        ``(inputs, outputs)``, one entry per bucket, tokens; a bucket the trace never reaches keeps
        the scheme's own expected length.

    Raises:
        TraceError: an empty trace.
    """
    if len(trace) == 0:
        raise TraceError("bucket_mean_lengths needs a non-empty trace")
    inp, out = np.asarray(trace.input_tokens), np.asarray(trace.output_tokens)

    def means(x: np.ndarray, edges: tuple[int, ...], default: tuple[int, ...]) -> list[int]:
        b = np.searchsorted(np.asarray(edges), x, side="right")
        return [int(round(float(x[b == i].mean()))) if np.any(b == i) else int(default[i]) for i in range(len(default))]

    return (means(inp, scheme.input_edges, scheme.expected_input_tokens),
            means(out, scheme.output_edges, scheme.expected_output_tokens))
