"""Spike handling: when demand jumps above the forecast's band, plan for the observation at once.

Statistical forecasters lag a flash crowd by several bins (the seed paper names bursts as its
forecaster's weak point). :class:`SpikeGuard` compares each new reading with the upper end of the
one-bin-ahead band the wrapped forecaster gave for it (widened by ``margin``). If the reading is
above it, the class is in
a *spike*: until a reading is back inside the band, every forecast for that class is at least the
latest reading (its band widened to contain it). Once the model has caught up (or the burst is
over) the reading falls inside the band and the wrapped forecaster answers alone again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oserve.forecast.base import Forecast, Forecaster, require
from oserve.forecast.registry import build

__all__ = ["SpikeGuard"]


class SpikeGuard(Forecaster):
    """Wraps a forecaster so its planning forecast follows readings above its upper band at once.

    Args:
        inner: the wrapped forecaster spec (name, ``(name, params)``, dict or instance).
        margin: a reading is a spike when it exceeds ``point + margin * (upper - point)`` of the
            one-bin-ahead forecast made for it (>= 1; 1 is the band's upper end itself, about
            1.64 sigma; the default 3 is about 4.9 sigma, so Poisson noise rarely triggers it).

    Attributes (after fit):
        inner_: the fitted wrapped forecaster.
        spike_rps_: latest reading of each class in a spike, NaN for classes not in one, shape ``(k,)``.
        n_spikes_: how many times a class entered a spike.
    """

    def __init__(self, inner: Any = "ewma", margin: float = 3.0) -> None:
        self.inner = inner
        self.margin = margin

    def _validate_params(self) -> None:
        require(isinstance(self.margin, int | float) and self.margin >= 1, "margin", ">= 1", self.margin)

    def _fit(self) -> None:
        self.inner_ = build(self.inner)
        self.inner_.fit(self.history_.t, self.history_.y)
        self.spike_rps_ = np.full(self.history_.k, np.nan)
        self.n_spikes_ = 0
        self._expected_upper_ = self._next_upper()

    def _next_upper(self) -> np.ndarray:
        fc = self.inner_.predict(self.step_s())
        return fc.rates_rps + float(self.margin) * (fc.upper_rps - fc.rates_rps)

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        k = self.history_.k
        for i in range(y_new.shape[0]):
            row = y_new[i]
            upper = self._expected_upper_
            if upper.shape[0] < k:
                upper = np.concatenate([upper, np.zeros(k - upper.shape[0])])
            seen = ~np.isnan(row)
            above = seen & (np.nan_to_num(row) > upper[:k])
            entering = above & np.isnan(self.spike_rps_)
            self.n_spikes_ += int(entering.sum())
            self.spike_rps_[above] = row[above]
            self.spike_rps_[seen & ~above] = np.nan
            self.inner_.update(t_new[i:i + 1], y_new[i:i + 1])
            self._expected_upper_ = self._next_upper()

    @property
    def in_spike(self) -> np.ndarray:
        """Boolean mask ``(k,)`` of classes currently in a spike."""
        return ~np.isnan(self.spike_rps_)

    def predict_strict(self, horizon_s: float) -> Forecast:
        """The wrapped forecaster's forecast, raised to the latest reading for classes in a spike.

        Raises:
            NotFittedError: before fit.
            ForecastInputError: bad horizon.
            ForecastFailedError: the spike guard's own state failed.
        """
        base = super().predict_strict(horizon_s)
        fc: Forecast | None = getattr(self, "_chosen_", None)
        if fc is None:
            return base
        del self._chosen_
        return self._make_forecast(base.horizon_s, base.rates_rps, base.lower_rps, base.upper_rps,
                                   fc.source + ("+spike" if self.in_spike.any() else ""))

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fc = self.inner_.predict(horizon_s)
        self._chosen_ = fc
        k = self.history_.k
        point, lower, upper = fc.rates_rps[:k].copy(), fc.lower_rps[:k].copy(), fc.upper_rps[:k].copy()
        spike = np.nan_to_num(self.spike_rps_[:k], nan=0.0)
        point = np.maximum(point, spike)
        upper = np.maximum(upper, point)
        return point, lower, upper
