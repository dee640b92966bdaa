"""Rolling-origin backtest of forecasters on per-class rate series.

Each forecaster is fitted on the first row of a series and then fed one row per tick, as the
control loop would. After each tick ``i >= eval_start`` it forecasts every horizon ``h``; the
forecast is scored against the reading ``steps = round(h / window_s)`` rows later (the rate in the
bin that starts ``h`` seconds after the current one). Scores per class and horizon:

* MAE, requests/s;
* sMAPE, percent: ``mean(200 |f - a| / (|f| + |a|))`` with a term of 0 when ``f = a = 0``
  (Makridakis 1993; bounded at 200 %, harsh on idle bins, so MAE is the primary score);
* ratios of both to the ``last`` forecaster on the same points;
* under-forecast requests: ``sum(max(a - f, 0)) * window_s`` (demand a plan sized to the forecast
  would not have had room for), also restricted to *burst* bins (total rate above the series'
  ``burst_quantile`` quantile of the total rate, at least ``1 / window_s``).

Timing needs a clock, which forecasters never read: pass ``timer`` (e.g. ``time.perf_counter``)
to measure milliseconds per tick (update plus the forecasts for all horizons) and per update plus
one forecast, reported per class (divided by ``k``) and split into ticks with and without a model
(re)fit (ARIMA's ``n_fits_``; with ``refit_mode="background"`` those fits leave the loop's thread).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.forecast.base import Forecaster
from oserve.forecast.registry import make

__all__ = ["RateSeries", "backtest_series", "backtest", "smape", "fit_count", "total_ticks", "summary_rows"]


@dataclass(frozen=True)
class RateSeries:
    """A per-class rate series to backtest on.

    Attributes:
        name: label (e.g. ``"code"``).
        timestamps_s: bin start times, seconds, shape ``(n,)``.
        rates_rps: arrival rate per bin and class, requests/s, shape ``(n, k)``.
        class_names: ``k`` labels.
        window_s: bin width, seconds.
    """

    name: str
    timestamps_s: np.ndarray
    rates_rps: np.ndarray
    class_names: tuple[str, ...]
    window_s: float


def smape(forecast: np.ndarray, actual: np.ndarray) -> float:
    """Symmetric MAPE in percent over all elements; pairs with ``f = a = 0`` count as 0 error."""
    f, a = np.asarray(forecast, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    den = np.abs(f) + np.abs(a)
    terms = np.where(den > 0, 200.0 * np.abs(f - a) / np.where(den > 0, den, 1.0), 0.0)
    return float(terms.mean()) if terms.size else float("nan")


def fit_count(f: Forecaster) -> int:
    """Total model fits done so far by ``f`` and the forecasters nested in it (``n_fits_``)."""
    n = int(getattr(f, "n_fits_", 0) or 0)
    for attr in ("members_", "inner_", "fallback_"):
        sub = getattr(f, attr, None)
        for s in (sub if isinstance(sub, list) else [sub]):
            if isinstance(s, Forecaster):
                n += fit_count(s)
    return n


def _pct(a: list[float], q: float) -> float | None:
    return float(np.percentile(a, q)) if a else None


def backtest_series(series: RateSeries, factory: Callable[[], Forecaster], horizons_s: Sequence[float],
                    *, eval_start: int = 30, timer: Callable[[], float] | None = None,
                    progress: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Replay one series through one forecaster.

    Args:
        series: the per-class series.
        factory: builds a fresh, unfitted forecaster.
        horizons_s: horizons to score, seconds (each >= ``series.window_s`` / 2).
        eval_start: first tick (row index) scored; earlier ticks only feed the forecaster.
        timer: clock for timing (seconds); None skips timing.
        progress: called with 1 after every tick (e.g. a progress bar's ``update``).

    Returns:
        ``{"per_horizon": {h: {"forecast": (m, k), "actual": (m, k)}}, "timing": {...}}`` with the
        raw arrays (callers turn them into scores with :func:`score`).
    """
    y = np.asarray(series.rates_rps, dtype=np.float64)
    t = np.asarray(series.timestamps_s, dtype=np.float64)
    n, k = y.shape
    steps = {float(h): max(1, int(round(float(h) / series.window_s))) for h in horizons_s}
    preds: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {h: [] for h in steps}
    tick_ms: list[float] = []
    update_ms: list[float] = []
    predict_ms: list[float] = []
    fit_ms: list[float] = []
    f = factory()
    for i in range(n):
        t0 = timer() if timer else 0.0
        fits_before = fit_count(f) if i else 0
        if i == 0:
            f.fit(t[:1], y[:1])
        else:
            f.update(t[i:i + 1], y[i:i + 1])
        t1 = timer() if timer else 0.0
        fcs = {h: f.predict(h) for h in steps} if i >= eval_start else {}
        if timer:
            t2 = timer()
            if i >= eval_start:
                if fit_count(f) != fits_before:
                    fit_ms.append((t2 - t0) * 1000.0)
                else:
                    tick_ms.append((t2 - t0) * 1000.0)
                    update_ms.append((t1 - t0) * 1000.0)
                    predict_ms.append((t2 - t1) * 1000.0 / max(len(steps), 1))
        for h, fc in fcs.items():
            j = i + steps[h]
            if j < n:
                preds[h].append((fc.rates_rps, y[j]))
        if progress is not None:
            progress(1)
    close = getattr(f, "close", None)
    if callable(close):
        close()
    out: dict[str, Any] = {"per_horizon": {}}
    for h, pairs in preds.items():
        fa = np.array([p[0] for p in pairs]).reshape(-1, k)
        aa = np.array([p[1] for p in pairs]).reshape(-1, k)
        out["per_horizon"][h] = {"forecast": fa, "actual": aa}
    out["timing"] = None if not timer else {
        "ms_per_tick_mean": float(np.mean(tick_ms)) if tick_ms else None,
        "ms_per_tick_p99": _pct(tick_ms, 99),
        "ms_per_class_mean": float(np.mean(tick_ms)) / k if tick_ms else None,
        "ms_per_class_p99": _pct(tick_ms, 99) / k if tick_ms else None,
        "update_ms_per_class_mean": float(np.mean(update_ms)) / k if update_ms else None,
        "predict_ms_per_class_mean": float(np.mean(predict_ms)) / k if predict_ms else None,
        "update_plus_one_forecast_ms_per_class_mean":
            (float(np.mean(update_ms)) + float(np.mean(predict_ms))) / k if update_ms else None,
        "update_plus_one_forecast_ms_per_class_p99":
            float(np.percentile(np.array(update_ms) + np.array(predict_ms), 99)) / k if update_ms else None,
        "ticks": len(tick_ms),
        "fit_ticks": len(fit_ms),
        "ms_per_fit_tick_mean": float(np.mean(fit_ms)) if fit_ms else None,
        "ms_per_fit_tick_max": float(np.max(fit_ms)) if fit_ms else None,
        "n_horizons_per_tick": len(steps),
    }
    return out


def score(forecast: np.ndarray, actual: np.ndarray, window_s: float, burst_mask: np.ndarray,
          class_names: Sequence[str]) -> dict[str, Any]:
    """Scores of one (forecaster, horizon): per class and for the total over classes."""
    res: dict[str, Any] = {}
    under = np.maximum(actual - forecast, 0.0)
    over = np.maximum(forecast - actual, 0.0)
    for c, name in enumerate(class_names):
        res[name] = {
            "mae_rps": float(np.mean(np.abs(forecast[:, c] - actual[:, c]))) if len(actual) else None,
            "smape_pct": smape(forecast[:, c], actual[:, c]),
            "bias_rps": float(np.mean(forecast[:, c] - actual[:, c])) if len(actual) else None,
            "under_requests": float(under[:, c].sum() * window_s),
        }
    ft, at = forecast.sum(axis=1), actual.sum(axis=1)
    res["total"] = {
        "mae_rps": float(np.mean(np.abs(ft - at))) if len(at) else None,
        "smape_pct": smape(ft, at),
        "class_mae_sum_rps": float(np.mean(np.abs(forecast - actual), axis=0).sum()) if len(at) else None,
        "under_requests": float(under.sum() * window_s),
        "over_requests": float(over.sum() * window_s),
        "burst_bins": int(burst_mask.sum()),
        "under_requests_in_bursts": float(under[burst_mask].sum() * window_s),
    }
    return res


def _make_deterministic(name: str) -> Forecaster:
    """``make(name)``, with ``refit_mode="inline"`` for forecasters that have that parameter, so a
    backtest gives the same numbers on every run (refit ticks are then timed separately)."""
    f = make(name)
    if "refit_mode" in f.get_params():
        return make(name, refit_mode="inline")
    return f


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b == 0:
        return None
    return a / b


def backtest(series_list: Sequence[RateSeries], forecasters: Mapping[str, Callable[[], Forecaster]] | Sequence[str],
             horizons_s: Sequence[float] = (30.0, 60.0, 300.0), *, eval_start: int = 30,
             timer: Callable[[], float] | None = None, burst_quantile: float = 0.9,
             baseline: str = "last", progress: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Backtest several forecasters on several series; the JSON-ready report.

    Args:
        series_list: the series.
        forecasters: ``{label: factory}`` or registry names (built with default parameters, except
            ``refit_mode="inline"`` where a forecaster has it). The ``baseline`` (a registry name)
            is added when missing.
        horizons_s: horizons in seconds (> 0).
        eval_start: first scored tick.
        timer: clock for timing (e.g. ``time.perf_counter``); None skips timing.
        burst_quantile: bins whose total rate exceeds this quantile of the series' total rate
            (and at least one request per bin) count as bursts, in (0, 1).
        baseline: label whose errors the ratios divide by.
        progress: called with 1 after every tick of every (series, forecaster) replay; there are
            :func:`total_ticks` of them.

    Returns:
        ``{"series": {name: {"n_bins", "window_s", "classes", "forecasters": {label: {"horizons":
        {h: {class or "total": {mae_rps, smape_pct, ..., mae_ratio_vs_last, smape_ratio_vs_last}}},
        "timing": {...}}}}}}``.

    Raises:
        ConfigError: an unknown forecaster name or a non-positive horizon.
    """
    if isinstance(forecasters, Mapping):
        factories = dict(forecasters)
    else:
        factories = {name: (lambda name=name: _make_deterministic(name)) for name in forecasters}
        for name in forecasters:
            make(name)  # fail fast on unknown names
    if baseline not in factories:
        factories = {baseline: (lambda: make(baseline)), **factories}
    if not 0 < burst_quantile < 1:
        raise ConfigError(f"burst_quantile must be in (0, 1), got {burst_quantile}", field="burst_quantile",
                          allowed="0 < q < 1")
    for h in horizons_s:
        if not (float(h) > 0):
            raise ConfigError(f"horizons must be > 0 seconds, got {h}", field="horizons", allowed="> 0 seconds")
    report: dict[str, Any] = {"horizons_s": [float(h) for h in horizons_s], "eval_start_ticks": eval_start,
                              "burst_quantile": burst_quantile, "baseline": baseline, "series": {}}
    for s in series_list:
        tot = s.rates_rps.sum(axis=1)
        thresh = max(float(np.quantile(tot, burst_quantile)), 1.0 / s.window_s)
        entry: dict[str, Any] = {"n_bins": int(s.rates_rps.shape[0]), "window_s": s.window_s,
                                 "classes": list(s.class_names), "burst_threshold_rps": thresh,
                                 "forecasters": {}}
        raw = {label: backtest_series(s, fac, horizons_s, eval_start=eval_start, timer=timer, progress=progress)
               for label, fac in factories.items()}
        for label, r in raw.items():
            hz: dict[str, Any] = {}
            for h, arrs in r["per_horizon"].items():
                burst = arrs["actual"].sum(axis=1) > thresh
                hz[f"{h:g}"] = score(arrs["forecast"], arrs["actual"], s.window_s, burst, s.class_names)
            entry["forecasters"][label] = {"horizons": hz, "timing": r["timing"]}
        base = entry["forecasters"][baseline]["horizons"]
        for fe in entry["forecasters"].values():
            for h, per in fe["horizons"].items():
                for cname, sc in per.items():
                    b = base[h][cname]
                    sc["mae_ratio_vs_last"] = _ratio(sc["mae_rps"], b["mae_rps"])
                    sc["smape_ratio_vs_last"] = _ratio(sc["smape_pct"], b["smape_pct"])
                    if cname == "total":
                        sc["class_mae_sum_ratio_vs_last"] = _ratio(sc["class_mae_sum_rps"], b["class_mae_sum_rps"])
        report["series"][s.name] = entry
    return report


def total_ticks(series_list: Sequence[RateSeries], forecasters: Sequence[str], baseline: str = "last") -> int:
    """Ticks :func:`backtest` replays (for a progress bar): bins of every series times forecasters."""
    n = len(set(forecasters) | {baseline})
    return sum(int(s.rates_rps.shape[0]) for s in series_list) * n


def summary_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (series, forecaster) of a :func:`backtest` report, for a short table.

    Each row: ``series``, ``forecaster``, per horizon ``h`` the class-MAE-sum ratio to the baseline
    (``ratio@h``; < 1 is better than ``last``) and the under-forecast requests in bursts
    (``burst_under@h``), and ``ms_per_tick`` (mean, None without a timer).
    """
    rows = []
    for sname, entry in report["series"].items():
        for label, fe in entry["forecasters"].items():
            row: dict[str, Any] = {"series": sname, "forecaster": label}
            for h, per in fe["horizons"].items():
                row[f"ratio@{h}"] = per["total"].get("class_mae_sum_ratio_vs_last")
                row[f"burst_under@{h}"] = per["total"]["under_requests_in_bursts"]
            timing = fe.get("timing") or {}
            row["ms_per_tick"] = timing.get("ms_per_tick_mean")
            rows.append(row)
    return rows
