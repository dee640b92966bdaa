"""Per-class arrival-rate binning of a trace: the time series forecasters train and test on."""

from __future__ import annotations

import math

import numpy as np

from oserve.errors import ConfigError
from oserve.types import DEFAULT_SCHEME, ClassScheme
from oserve.workload.trace import Trace

__all__ = ["rates_per_class", "FILL_EMPTY"]

FILL_EMPTY = ("nan", "expected", "zero")
"""Allowed values of ``fill_empty``: what the token means of a bin with no request of a class hold."""


def rates_per_class(
    trace: Trace,
    scheme: ClassScheme = DEFAULT_SCHEME,
    window_s: float = 60.0,
    *,
    fill_empty: str = "nan",
    include_partial: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin a trace into per-class arrival rates and token means over fixed windows.

    Requests are classified with ``scheme.classify_many(input_tokens, output_tokens)`` using the
    trace's actual output tokens. Bin ``i`` covers ``[i * window_s, (i + 1) * window_s)`` seconds
    from the trace's first request (``arrival_s`` is relative to it). A bin with no request of a
    class has rate 0 (no traffic is zero demand, not missing data). There are
    ``max(1, ceil(duration / window_s))`` bins; a request exactly at the end of the last one counts in it.

    Args:
        trace: the trace (``arrival_s`` sorted, seconds from the first request).
        scheme: request classes (``k = len(scheme)`` columns).
        window_s: bin width in seconds (> 0).
        fill_empty: token mean reported for a (bin, class) with no request: ``"nan"`` (default),
            ``"expected"`` (the class's ``expected_input_tokens`` / ``expected_output_tokens``) or
            ``"zero"``.
        include_partial: keep the last bin when it is shorter than ``window_s``; its rate is then
            divided by its true length (``duration - start``). By default a trailing partial bin is
            dropped, unless it is the only bin (a trace shorter than one window). A zero-length
            bin (all requests at one instant) is divided by ``window_s``.

    Returns:
        ``(timestamps_s, rates_rps, mean_input_tokens, mean_output_tokens)``:
        ``timestamps_s`` shape ``(n,)``, bin start times in seconds; ``rates_rps`` shape ``(n, k)``,
        arrivals per second of each class; ``mean_input_tokens`` and ``mean_output_tokens`` shape
        ``(n, k)``, mean tokens of the class's requests in the bin.

    Raises:
        ConfigError: ``window_s`` not positive or ``fill_empty`` unknown.
    """
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ConfigError(f"window_s must be a positive number of seconds, got {window_s}",
                          field="window_s", allowed="> 0 seconds")
    if fill_empty not in FILL_EMPTY:
        raise ConfigError(f"unknown fill_empty {fill_empty!r}", field="fill_empty", allowed=", ".join(FILL_EMPTY))
    k = len(scheme)
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    if arrival.size == 0:
        empty = np.zeros((0, k))
        return np.zeros(0), empty, empty.copy(), empty.copy()
    t0 = float(arrival[0]) if arrival[0] < 0 else 0.0
    rel = arrival - t0
    duration = float(rel[-1])
    # n bins cover [0, duration]; an arrival exactly at a bin edge at the end joins the last bin
    n = max(1, int(math.ceil(duration / window_s)))
    bins = np.minimum((rel // window_s).astype(np.int64), n - 1)
    cls = scheme.classify_many(trace.input_tokens, trace.output_tokens)
    flat = bins * k + cls
    counts = np.bincount(flat, minlength=n * k).reshape(n, k).astype(np.float64)
    sum_in = np.bincount(flat, weights=np.asarray(trace.input_tokens, dtype=np.float64),
                         minlength=n * k).reshape(n, k)
    sum_out = np.bincount(flat, weights=np.asarray(trace.output_tokens, dtype=np.float64),
                          minlength=n * k).reshape(n, k)
    lengths = np.full(n, float(window_s))
    last_len = duration - (n - 1) * window_s
    partial = last_len < window_s - 1e-9
    if partial:
        lengths[-1] = last_len if last_len > 0 else window_s
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = sum_in / counts
        mean_out = sum_out / counts
    empty_mask = counts == 0
    if fill_empty == "zero":
        mean_in[empty_mask] = 0.0
        mean_out[empty_mask] = 0.0
    elif fill_empty == "expected":
        exp_in = np.array([c.expected_input_tokens for c in scheme.classes], dtype=np.float64)
        exp_out = np.array([c.expected_output_tokens for c in scheme.classes], dtype=np.float64)
        mean_in = np.where(empty_mask, exp_in[None, :], mean_in)
        mean_out = np.where(empty_mask, exp_out[None, :], mean_out)
    rates = counts / lengths[:, None]
    timestamps = t0 + np.arange(n, dtype=np.float64) * window_s
    if partial and not include_partial and n > 1:
        return timestamps[:-1], rates[:-1], mean_in[:-1], mean_out[:-1]
    return timestamps, rates, mean_in, mean_out
