"""Exponential smoothing: EWMA level, optionally with Holt's damped linear trend.

Holt's linear method with a damped trend (Gardner & McKenzie 1985; Hyndman & Athanasopoulos,
*Forecasting: Principles and Practice*, 3rd ed., section 8.2)::

    level_t = alpha * y_t + (1 - alpha) * (level_{t-1} + phi * trend_{t-1})
    trend_t = beta * (level_t - level_{t-1}) + (1 - beta) * phi * trend_{t-1}
    y_hat_{t+h} = level_t + (phi + phi^2 + ... + phi^h) * trend_t

With ``beta = 0`` (the default) the trend stays 0 and this is the plain EWMA of the rate. Written
in NumPy (one vectorised step per observation, all classes at once) so an update costs
microseconds; missing readings (NaN) leave a class's state unchanged.
"""

from __future__ import annotations

import numpy as np

from oserve.forecast.base import Forecaster, require

__all__ = ["EWMAForecaster", "AutoEWMAForecaster"]


class EWMAForecaster(Forecaster):
    """EWMA of each class's rate (optionally Holt's damped trend).

    Args:
        alpha: level smoothing weight in (0, 1]; 1 is the last value. The default 0.3 gives a
            half-life of about two bins.
        beta: trend smoothing weight in [0, 1]; 0 (default) disables the trend.
        phi: trend damping in (0, 1].
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.0, phi: float = 0.9) -> None:
        self.alpha = alpha
        self.beta = beta
        self.phi = phi

    def _validate_params(self) -> None:
        require(isinstance(self.alpha, int | float) and 0 < self.alpha <= 1, "alpha", "0 < alpha <= 1", self.alpha)
        require(isinstance(self.beta, int | float) and 0 <= self.beta <= 1, "beta", "0 <= beta <= 1", self.beta)
        require(isinstance(self.phi, int | float) and 0 < self.phi <= 1, "phi", "0 < phi <= 1", self.phi)

    def _fit(self) -> None:
        k = self.history_.k
        self.level_ = np.full(k, np.nan)
        self.trend_ = np.zeros(k)
        self._absorb(self.history_.y)

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        k = self.history_.k
        if self.level_.shape[0] < k:  # defensive: base refits on new classes
            self._fit()
            return
        self._absorb(y_new)

    def _absorb(self, y: np.ndarray) -> None:
        a, b, phi = float(self.alpha), float(self.beta), float(self.phi)
        level, trend = self.level_, self.trend_
        for row in y:
            ok = ~np.isnan(row)
            first = ok & np.isnan(level)
            level[first] = row[first]
            rest = ok & ~first
            if rest.any():
                prev = level[rest]
                damped = phi * trend[rest]
                new = a * row[rest] + (1 - a) * (prev + damped)
                level[rest] = new
                trend[rest] = b * (new - prev) + (1 - b) * damped

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        level = np.nan_to_num(self.level_, nan=0.0)
        if self.beta > 0:
            phi = float(self.phi)
            gain = steps if phi == 1.0 else phi * (1 - phi**steps) / (1 - phi)
            point = np.maximum(level + gain * self.trend_, 0.0)
        else:
            point = np.maximum(level, 0.0)
        lower, upper = self._band(point, steps)
        return point, lower, upper


class AutoEWMAForecaster(Forecaster):
    """A bank of EWMAs per class; each forecast uses the smoothing weight with the lowest recent error.

    For every class it keeps one EWMA level per ``alphas`` entry and, for each ``lags`` entry ``l``,
    an exponentially weighted mean (weight ``error_decay``) of ``|level from l bins ago - reading|``:
    the error that EWMA would have made forecasting ``l`` bins ahead. A forecast ``steps`` bins ahead
    uses the lag nearest to ``steps`` (on a log scale) and, per class, the alpha with the smallest
    such error. Bursty classes thereby get a short memory, steady ones a long one, and the choice
    can differ by horizon. Selection is online (only past errors), so the backtest has no lookahead.

    Args:
        alphas: candidate smoothing weights, each in (0, 1].
        lags: horizons (bins) at which errors are tracked, each >= 1.
        error_decay: weight of the newest error in the error EWMAs, in (0, 1].
    """

    def __init__(self, alphas: tuple[float, ...] = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
                 lags: tuple[int, ...] = (1, 3, 6, 12, 30), error_decay: float = 0.02) -> None:
        self.alphas = alphas
        self.lags = lags
        self.error_decay = error_decay

    def _validate_params(self) -> None:
        a = np.asarray(self.alphas, dtype=np.float64) if len(self.alphas) else np.zeros(0)
        require(a.ndim == 1 and a.size >= 1 and bool(np.all((a > 0) & (a <= 1))), "alphas",
                "one or more numbers in (0, 1]", self.alphas)
        require(len(self.lags) >= 1 and all(isinstance(v, int) and v >= 1 for v in self.lags), "lags",
                "one or more integers >= 1", self.lags)
        require(isinstance(self.error_decay, int | float) and 0 < self.error_decay <= 1, "error_decay",
                "0 < error_decay <= 1", self.error_decay)

    def _fit(self) -> None:
        k = self.history_.k
        a = np.asarray(self.alphas, dtype=np.float64)
        self.alpha_arr_ = a[:, None]
        self.lag_arr_ = np.asarray(self.lags, dtype=np.int64)
        self.bank_ = np.full((a.size, k), np.nan)
        self.errors_ = np.zeros((self.lag_arr_.size, a.size, k))
        self._past_ = np.full((int(self.lag_arr_.max()), a.size, k), np.nan)  # ring of past banks
        self._n_rows_ = 0
        self._absorb(self.history_.y)

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        if self.bank_.shape[1] < self.history_.k:
            self._fit()
            return
        self._absorb(y_new)

    def _absorb(self, y: np.ndarray) -> None:
        ring = self._past_.shape[0]
        d = float(self.error_decay)
        for row in y:
            ok = ~np.isnan(row)
            if ok.any():
                r = row[ok]
                for li, lag in enumerate(self.lag_arr_):
                    if self._n_rows_ >= lag:
                        snap = self._past_[(self._n_rows_ - lag) % ring][:, ok]
                        e = np.abs(np.nan_to_num(snap, nan=0.0) - r[None, :])
                        self.errors_[li][:, ok] = (1 - d) * self.errors_[li][:, ok] + d * e
                bank = self.bank_[:, ok]
                first = np.isnan(bank)
                bank = np.where(first, r[None, :], (1 - self.alpha_arr_) * bank + self.alpha_arr_ * r[None, :])
                self.bank_[:, ok] = bank
            self._past_[self._n_rows_ % ring] = self.bank_
            self._n_rows_ += 1

    def chosen_alpha(self, steps: int) -> np.ndarray:
        """The alpha used per class for a forecast ``steps`` bins ahead, shape ``(k,)``."""
        li = int(np.argmin(np.abs(np.log(self.lag_arr_) - np.log(max(steps, 1)))))
        best = np.argmin(self.errors_[li], axis=0)
        return self.alpha_arr_[best, 0]

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        li = int(np.argmin(np.abs(np.log(self.lag_arr_) - np.log(max(steps, 1)))))
        best = np.argmin(self.errors_[li], axis=0)
        point = np.maximum(np.nan_to_num(self.bank_[best, np.arange(self.bank_.shape[1])], nan=0.0), 0.0)
        lower, upper = self._band(point, steps)
        return point, lower, upper
