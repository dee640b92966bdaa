"""Fit the iteration-time model to measured timings (non-negative least squares).

``prefill_s(t) = a + b t + c t^2`` from (prompt tokens, prefill seconds) pairs and
``decode_step_s(B, K) = d + e B + f K`` from (batch, KV tokens, step seconds) triples. Each row is
divided by its measured time, so the fit minimises squared *relative* error (short and long
timings weigh alike); columns are scaled to unit norm for conditioning. ``scipy.optimize.nnls``
keeps every coefficient >= 0, as :class:`~oserve.profiles.iteration.IterationTimeModel` requires.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oserve.errors import ProfileError
from oserve.profiles.iteration import IterationTimeModel

__all__ = ["fit_prefill", "fit_decode", "fit_iteration_model", "relative_errors"]


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ProfileError("timings must be finite and > 0 seconds")
    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(a / scale, np.ones_like(y))
    return coef / scale


def fit_prefill(tokens: Sequence[float], seconds: Sequence[float]) -> tuple[float, float, float]:
    """Fit ``(a, b, c)`` of ``prefill_s(t) = a + b t + c t^2``.

    Args:
        tokens: prompt tokens per measurement, shape ``(n,)``.
        seconds: prefill time (TTFT of a lone request), s, shape ``(n,)``.

    Raises:
        ProfileError: fewer than 3 points, mismatched lengths, or non-positive timings.
    """
    t = np.asarray(tokens, dtype=float)
    y = np.asarray(seconds, dtype=float)
    if t.shape != y.shape or t.size < 3:
        raise ProfileError(f"prefill fit needs >= 3 (tokens, seconds) pairs of equal length, got {t.size}/{y.size}")
    coef = _nnls_relative(np.column_stack([np.ones_like(t), t, t * t]), y)
    return float(coef[0]), float(coef[1]), float(coef[2])


def fit_decode(
    batch: Sequence[float], kv_tokens: Sequence[float], seconds: Sequence[float]
) -> tuple[float, float, float]:
    """Fit ``(d, e, f)`` of ``decode_step_s(B, K) = d + e B + f K``.

    Args:
        batch: sequences in the decode batch, shape ``(n,)``.
        kv_tokens: KV tokens held by the batch at that step, shape ``(n,)``.
        seconds: step time (inter-token latency), s, shape ``(n,)``.

    Raises:
        ProfileError: fewer than 3 points, mismatched lengths, or non-positive timings.
    """
    b = np.asarray(batch, dtype=float)
    k = np.asarray(kv_tokens, dtype=float)
    y = np.asarray(seconds, dtype=float)
    if not (b.shape == k.shape == y.shape) or b.size < 3:
        raise ProfileError(f"decode fit needs >= 3 (batch, kv, seconds) triples of equal length, got {b.size}")
    coef = _nnls_relative(np.column_stack([np.ones_like(b), b, k]), y)
    return float(coef[0]), float(coef[1]), float(coef[2])


def relative_errors(model: IterationTimeModel, prefill: np.ndarray, decode: np.ndarray) -> np.ndarray:
    """Relative errors ``pred/measured - 1`` over prefill rows ``(t, s)`` and decode rows ``(B, K, s)``."""
    errs = []
    for t, s in prefill:
        errs.append(model.prefill_s(t) / s - 1.0)
    for b, k, s in decode:
        errs.append(model.decode_step_s(int(b), k) / s - 1.0)
    return np.asarray(errs)


def fit_iteration_model(
    prefill: Sequence[tuple[float, float]], decode: Sequence[tuple[float, float, float]]
) -> IterationTimeModel:
    """Fit both parts and record the median absolute relative error over all points.

    Args:
        prefill: ``(prompt tokens, seconds)`` pairs.
        decode: ``(batch, KV tokens, seconds)`` triples.

    Returns:
        ``IterationTimeModel`` with ``fit_error`` = median |pred/measured - 1| (fraction).
    """
    p = np.asarray(prefill, dtype=float).reshape(-1, 2)
    d = np.asarray(decode, dtype=float).reshape(-1, 3)
    a, b, c = fit_prefill(p[:, 0], p[:, 1])
    dd, e, f = fit_decode(d[:, 0], d[:, 1], d[:, 2])
    model = IterationTimeModel(a=a, b=b, c=c, d=dd, e=e, f=f)
    err = float(np.median(np.abs(relative_errors(model, p, d))))
    return model.model_copy(update={"fit_error": err})
