"""Per-class ARIMA with pmdarima: order chosen once by ``auto_arima``, cheap Kalman updates per tick,
refits on a schedule or when the one-step error grows, off the control loop's thread.

Per class:

1. While fewer than ``warmup`` rows have been seen, the ``fallback`` forecaster (EWMA) answers.
2. After the warm-up, ``pmdarima.auto_arima`` (Hyndman & Khandakar 2008 stepwise search) picks the
   order on the last ``fit_window`` rows (optionally ``log1p``-transformed).
3. Each update appends the new readings to the fitted statsmodels state-space model with
   ``SARIMAXResults.extend`` (Kalman filter only, parameters fixed: milliseconds) and tracks an
   EWMA of the absolute one-step-ahead error.
4. Every ``refit_every`` updates the parameters are re-estimated with the same order; when the
   error EWMA exceeds ``refit_error_ratio`` times the error at fit time, the order is re-selected.
   With ``refit_mode="background"`` these fits run on one worker thread and the result is picked
   up by the first update after it finishes (then caught up with the rows that arrived meanwhile);
   with ``"inline"`` they run inside ``update`` (deterministic, for backtests and tests). Either way
   the optimiser is bounded by ``maxiter`` iterations.

Degenerate models are not passed on: a class whose fit window is constant (pmdarima 2.1.1's
``auto_arima`` fits ARIMA(0,0,0) without intercept to 20 x 1.0 and forecasts 0), whose model has
neither differencing nor an intercept while its readings average above 0 (it decays to 0), or whose
model forecasts outside ``[min - range, max + range]`` of its recent readings is answered by the
fallback, which forecasts the level.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from oserve.forecast.base import Forecaster, require
from oserve.forecast.registry import build

__all__ = ["ARIMAForecaster", "ModelFitError"]


class ModelFitError(RuntimeError):
    """An ARIMA fit did not converge or produced no usable model."""


@dataclass
class _ClassModel:
    res: Any  # statsmodels SARIMAXResults
    order: tuple[int, int, int]
    with_intercept: bool
    base_err: float  # mean |one-step error| in the fit's second half (transformed space)
    err_ewma: float


@dataclass
class _JobResult:
    models: list[_ClassModel | None]
    n_seen: int
    reselected: bool


_CONSTANT = "constant"


def _tf(y: np.ndarray, log1p: bool) -> np.ndarray:
    return np.log1p(y) if log1p else y


def _inv(z: np.ndarray, log1p: bool) -> np.ndarray:
    return np.expm1(np.minimum(z, 50.0)) if log1p else z


def _fit_one(y: np.ndarray, old: _ClassModel | None, reselect: bool, log1p: bool, max_p: int, max_q: int,
             max_d: int, maxiter: int) -> _ClassModel | None:
    """Fit one class; None when the window is constant or the model degenerate.

    Raises:
        ModelFitError: no converged model.
        Exception: whatever pmdarima / statsmodels raise.
    """
    import pmdarima as pm  # heavy import: only when an ARIMA is fitted

    if float(np.ptp(y)) < 1e-9:
        return None
    z = _tf(y, log1p)
    if reselect or old is None:
        order_kw: dict[str, Any] = {"max_d": max_d} if max_d > 0 else {"d": 0}
        model = pm.auto_arima(
            z, start_p=0, start_q=0, max_p=max_p, max_q=max_q, **order_kw, seasonal=False, stepwise=True,
            n_fits=10, maxiter=maxiter, method="lbfgs", suppress_warnings=True, error_action="ignore",
        )
    else:
        model = pm.ARIMA(order=old.order, with_intercept=old.with_intercept, maxiter=maxiter, method="lbfgs",
                         suppress_warnings=True)
        model.fit(z)
    if not _converged(model):  # one more try from where the optimiser stopped, 4x the iterations
        model = pm.ARIMA(order=model.order, with_intercept=model.with_intercept, maxiter=4 * maxiter,
                         method="lbfgs", start_params=model.params(), suppress_warnings=True)
        model.fit(z)
        if not _converged(model):
            raise ModelFitError(f"ARIMA{model.order} did not converge in {5 * maxiter} iterations")
    res = model.arima_res_
    errs = np.asarray(res.forecasts_error[0], dtype=np.float64)
    half = errs[len(errs) // 2:]
    half = half[np.isfinite(half)]
    base_err = float(np.mean(np.abs(half))) if half.size else 0.0
    cm = _ClassModel(res=res, order=tuple(model.order), with_intercept=bool(model.with_intercept),
                     base_err=base_err, err_ewma=base_err)
    if model.order[1] == 0 and not model.with_intercept and float(np.mean(z)) > 1e-6:
        return None  # a zero-mean model of a positive series decays to 0: the flat-series pitfall
    f1 = float(_inv(np.asarray(res.forecast(1)), log1p)[0])
    if not _plausible(f1, y):
        return None
    return cm


def _converged(model: Any) -> bool:
    """False only when the optimiser stopped at its iteration limit (L-BFGS ``warnflag == 1``); a line
    search that ends at the optimum to machine precision (``warnflag == 2``) counts as converged."""
    retvals = getattr(model.arima_res_, "mle_retvals", None) or {}
    return bool(retvals.get("converged", True)) or int(retvals.get("warnflag", 0)) != 1


def _plausible(point: float, recent: np.ndarray) -> bool:
    lo, hi = float(np.min(recent)), float(np.max(recent))
    span = max(hi - lo, 1e-6)
    return math.isfinite(point) and lo - span <= point <= hi + span


def _fit_all(window: np.ndarray, old: list[_ClassModel | None] | None, reselect: bool, n_seen: int,
             params: dict[str, Any]) -> _JobResult:
    models: list[_ClassModel | None] = []
    for j in range(window.shape[1]):
        prev = old[j] if old is not None and j < len(old) else None
        if prev is None or reselect:
            models.append(_fit_one(window[:, j], prev, True, **params))
        else:
            try:
                models.append(_fit_one(window[:, j], prev, False, **params))
            except Exception:  # noqa: BLE001 - a failed refit keeps the model that worked
                models.append(prev)
    return _JobResult(models=models, n_seen=n_seen, reselected=reselect or old is None)


class ARIMAForecaster(Forecaster):
    """One ARIMA model per class (pmdarima), with a fallback while warming up or degenerate.

    Args:
        warmup: rows seen before the first ``auto_arima`` (>= 8).
        fit_window: rows a fit looks at (>= warmup).
        refit_every: updates between scheduled re-estimations (>= 1).
        refit_error_ratio: re-select the order when the one-step error EWMA exceeds this multiple of
            the error at fit time (> 1).
        log1p: fit ``log1p(rate)`` (tames bursts, but ``expm1`` of the mean forecasts the median,
            which scored worse on the Azure traces, so off by default).
        max_p: largest AR order searched.
        max_q: largest MA order searched.
        max_d: largest differencing order searched; 0 (default, best on the Azure traces) fits
            ARMA models with a mean, which revert to the level instead of wandering off.
        maxiter: optimiser iterations per fit (bounds the time of a fit).
        refit_mode: ``"background"`` (fits on a worker thread) or ``"inline"`` (inside ``update``).
        fallback: registry name of the forecaster answering for a class without a usable model.
        interval_alpha: the band is the model's ``1 - interval_alpha`` prediction interval.
    """

    def __init__(self, warmup: int = 30, fit_window: int = 240, refit_every: int = 120,
                 refit_error_ratio: float = 2.0, log1p: bool = False, max_p: int = 2, max_q: int = 2,
                 max_d: int = 0, maxiter: int = 25, refit_mode: Literal["background", "inline"] = "background",
                 fallback: str = "ewma", interval_alpha: float = 0.1) -> None:
        self.warmup = warmup
        self.fit_window = fit_window
        self.refit_every = refit_every
        self.refit_error_ratio = refit_error_ratio
        self.log1p = log1p
        self.max_p = max_p
        self.max_q = max_q
        self.max_d = max_d
        self.maxiter = maxiter
        self.refit_mode = refit_mode
        self.fallback = fallback
        self.interval_alpha = interval_alpha

    def _validate_params(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        require(is_int(self.warmup) and self.warmup >= 8, "warmup", "integer >= 8", self.warmup)
        require(is_int(self.fit_window) and self.fit_window >= self.warmup, "fit_window", "integer >= warmup",
                self.fit_window)
        require(is_int(self.refit_every) and self.refit_every >= 1, "refit_every", "integer >= 1", self.refit_every)
        require(isinstance(self.refit_error_ratio, int | float) and self.refit_error_ratio > 1,
                "refit_error_ratio", "> 1", self.refit_error_ratio)
        for f in ("max_p", "max_q"):
            require(is_int(getattr(self, f)) and 0 <= getattr(self, f) <= 5, f, "integer 0..5", getattr(self, f))
        require(is_int(self.max_d) and 0 <= self.max_d <= 2, "max_d", "integer 0..2", self.max_d)
        require(is_int(self.maxiter) and self.maxiter >= 1, "maxiter", "integer >= 1", self.maxiter)
        require(self.refit_mode in ("background", "inline"), "refit_mode", "background, inline", self.refit_mode)
        require(isinstance(self.fallback, str), "fallback", "a registered forecaster name", self.fallback)
        require(isinstance(self.interval_alpha, float) and 0 < self.interval_alpha < 1, "interval_alpha",
                "0 < interval_alpha < 1", self.interval_alpha)

    # -- fitting ------------------------------------------------------------------------------

    def _fit(self) -> None:
        self.close()
        self.fallback_ = build(self.fallback)
        self.fallback_.fit(self.history_.t, self.history_.y)
        self.models_: list[_ClassModel | None] = [None] * self.history_.k
        self.selected_ = False
        self.updates_since_fit_ = 0
        self.n_fits_ = 0
        self.n_selections_ = 0
        self._job_: concurrent.futures.Future[_JobResult] | None = None
        self._executor_: concurrent.futures.ThreadPoolExecutor | None = None
        if self.history_.t.shape[0] >= self.warmup:
            self._start_job(reselect=True)

    def _params(self) -> dict[str, Any]:
        return {"log1p": bool(self.log1p), "max_p": self.max_p, "max_q": self.max_q, "max_d": self.max_d,
                "maxiter": self.maxiter}

    def _start_job(self, reselect: bool) -> None:
        window = self.history_filled()[-self.fit_window:]
        old = None if not self.selected_ else list(self.models_)
        args = (window, old, reselect, self.history_.n_seen, self._params())
        if self.refit_mode == "inline":
            self._apply(_fit_all(*args))
            return
        if self._executor_ is None:
            self._executor_ = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="oserve-arima")
        self._job_ = self._executor_.submit(_fit_all, *args)

    def _apply(self, result: _JobResult) -> None:
        behind = self.history_.n_seen - result.n_seen
        models = result.models + [None] * (self.history_.k - len(result.models))
        current = getattr(self, "models_", [])
        if behind > 0:  # catch new models up with the rows that arrived while the job ran
            new = self.history_filled()[-behind:]
            for j, m in enumerate(models):
                kept = j < len(current) and m is current[j]  # a failed refit kept it: already current
                if m is not None and not kept:
                    m.res = m.res.extend(_tf(new[:, j], bool(self.log1p)))
        self.models_ = models
        self.selected_ = True
        self.updates_since_fit_ = 0
        self.n_fits_ += 1
        self.n_selections_ += int(result.reselected)

    def close(self) -> None:
        """Stop the background worker (a running fit finishes; its result is dropped)."""
        ex = getattr(self, "_executor_", None)
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
            self._executor_ = None
            self._job_ = None

    # -- per tick -----------------------------------------------------------------------------

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        self.fallback_.update(t_new, y_new)
        filled_new = self.history_filled()[-y_new.shape[0]:]
        grow = False
        for j, m in enumerate(self.models_):
            if m is None:
                continue
            m.res = m.res.extend(_tf(filled_new[:, j], bool(self.log1p)))
            err = np.asarray(m.res.forecasts_error[0], dtype=np.float64)
            for e in err[np.isfinite(err)]:
                m.err_ewma = 0.9 * m.err_ewma + 0.1 * abs(float(e))
            if self.updates_since_fit_ >= 30 and m.err_ewma > self.refit_error_ratio * m.base_err + 1e-3:
                grow = True
        self.updates_since_fit_ += int(y_new.shape[0])
        job = self._job_
        if job is not None and job.done():
            self._job_ = None
            self._apply(job.result())  # re-raises a failed fit: the base records the cause
            return
        if self._job_ is not None:
            return
        if not self.selected_:
            if self.history_.t.shape[0] >= self.warmup:
                self._start_job(reselect=True)
        elif grow:
            self._start_job(reselect=True)
        elif self.updates_since_fit_ >= self.refit_every:
            self._start_job(reselect=False)

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fb = self.fallback_.predict(horizon_s)
        point, lower, upper = fb.rates_rps.copy(), fb.lower_rps.copy(), fb.upper_rps.copy()
        recent = self.history_filled()[-self.fit_window:]
        for j, m in enumerate(self.models_):
            if m is None or j >= point.shape[0]:
                continue
            fc = m.res.get_forecast(steps)
            mu = float(np.asarray(fc.predicted_mean)[-1])
            ci = np.asarray(fc.conf_int(alpha=self.interval_alpha))[-1]
            p, lo, hi = (float(v) for v in _inv(np.array([mu, ci[0], ci[1]]), bool(self.log1p)))
            if not (_plausible(p, recent[:, j]) and math.isfinite(lo) and math.isfinite(hi)):
                continue  # degenerate for this state: keep the fallback's answer
            p = max(p, 0.0)
            point[j], lower[j], upper[j] = p, min(max(lo, 0.0), p), max(hi, p)
        return point, lower, upper
