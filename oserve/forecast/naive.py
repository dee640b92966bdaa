"""Naive baselines: the last value, and the value one season ago."""

from __future__ import annotations

import math

import numpy as np

from oserve.forecast.base import Forecaster, require

__all__ = ["LastValueForecaster", "SeasonalNaiveForecaster"]


class LastValueForecaster(Forecaster):
    """Forecasts the last finite reading of each class, at every horizon (the naive baseline).

    The band is the robust spread of the history's h-step differences plus Poisson noise
    (:func:`oserve.forecast.base.spread_rps`).
    """

    def __init__(self) -> None:
        pass

    def _fit(self) -> None:
        pass

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        pass

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        level = self.last_level()
        lower, upper = self._band(level, steps)
        return level, lower, upper


class SeasonalNaiveForecaster(Forecaster):
    """Forecasts the reading one season before the target time, averaged over past seasons.

    The forecast for ``t + h`` is the mean of the readings at ``t + h - j * period_s`` for
    ``j = 1 .. n_seasons`` that lie in the history. While the history is shorter than one period
    (plus the horizon), the last value answers instead.

    Args:
        period_s: season length, seconds (> 0), e.g. 86,400 for a daily cycle.
        n_seasons: how many past seasons to average (>= 1).
    """

    def __init__(self, period_s: float = 86_400.0, n_seasons: int = 1) -> None:
        self.period_s = period_s
        self.n_seasons = n_seasons

    def _validate_params(self) -> None:
        require(isinstance(self.period_s, int | float) and math.isfinite(self.period_s) and self.period_s > 0,
                "period_s", "> 0 seconds", self.period_s)
        require(isinstance(self.n_seasons, int) and self.n_seasons >= 1, "n_seasons", "integer >= 1", self.n_seasons)

    def _fit(self) -> None:
        pass

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        pass

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        filled = self.history_filled()
        n = filled.shape[0]
        period = max(1, int(round(self.period_s / self.step_s())))
        # index of the target bin is n - 1 + steps; look back whole periods from there
        rows = [n - 1 + steps - j * period for j in range(1, self.n_seasons + 1)]
        rows = [r for r in rows if 0 <= r < n]
        if not rows:
            point = self.last_level()
        else:
            point = filled[rows].mean(axis=0)
        lower, upper = self._band(point, steps)
        return point, lower, upper
