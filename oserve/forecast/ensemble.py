"""Ensemble: a weighted mean of member forecasters, optionally weighted by inverse recent error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from oserve.forecast.base import Forecaster, require
from oserve.forecast.registry import build

__all__ = ["EnsembleForecaster"]


class EnsembleForecaster(Forecaster):
    """Averages the point forecasts and bands of its members, class by class.

    With ``weighting="inverse-error"`` a member's weight for a class is proportional to
    ``1 / (e + 1e-3)`` where ``e`` is an EWMA (weight 0.1) of its absolute one-bin-ahead error on
    that class, so the member that has recently been right counts most (Bates & Granger 1969 style
    combination). Members always answer through their safe :meth:`Forecaster.predict`.

    Args:
        members: member specs: registry names, ``(name, params)`` pairs, ``{"kind": ..., "params": {...}}``
            dicts or Forecaster instances (cloned). At least one.
        weights: fixed non-negative weights per member (``weighting="fixed"``); None means equal.
        weighting: ``"fixed"`` or ``"inverse-error"``.
    """

    def __init__(self, members: Sequence[Any] = ("ewma-auto", ("ewma", {"alpha": 0.1})), weights: Sequence[float] | None = None,
                 weighting: Literal["fixed", "inverse-error"] = "fixed") -> None:
        self.members = members
        self.weights = weights
        self.weighting = weighting

    def _validate_params(self) -> None:
        require(isinstance(self.members, Sequence) and not isinstance(self.members, str) and len(self.members) >= 1,
                "members", "a non-empty list of forecaster specs", self.members)
        require(self.weighting in ("fixed", "inverse-error"), "weighting", "fixed, inverse-error", self.weighting)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            require(w.shape == (len(self.members),) and bool(np.all(np.isfinite(w) & (w >= 0))) and w.sum() > 0,
                    "weights", f"{len(self.members)} non-negative numbers, not all 0", self.weights)

    def _fit(self) -> None:
        self.members_ = [build(m) for m in self.members]
        for m in self.members_:
            m.fit(self.history_.t, self.history_.y)
        k = self.history_.k
        self.errors_ = np.zeros((len(self.members_), k))
        self._pending_ = self._one_step() if self.weighting == "inverse-error" else None

    def _one_step(self) -> np.ndarray:
        h = self.step_s()
        return np.stack([m.predict(h).rates_rps for m in self.members_])

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        if self.weighting == "inverse-error" and self._pending_ is not None:
            obs = y_new[0]
            pend = self._pending_
            kk = min(pend.shape[1], obs.shape[0])
            ok = ~np.isnan(obs[:kk])
            err = np.abs(pend[:, :kk] - np.nan_to_num(obs[:kk]))
            self.errors_[:, :kk][:, ok] = 0.9 * self.errors_[:, :kk][:, ok] + 0.1 * err[:, ok]
        for m in self.members_:
            m.update(t_new, y_new)
        if self.weighting == "inverse-error":
            self._pending_ = self._one_step()

    def _member_weights(self, k: int) -> np.ndarray:
        n = len(self.members_)
        if self.weighting == "inverse-error":
            w = 1.0 / (self.errors_[:, :k] + 1e-3)
        else:
            base = np.ones(n) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
            w = np.repeat(base[:, None], k, axis=1)
        return w / w.sum(axis=0, keepdims=True)

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fcs = [m.predict(horizon_s) for m in self.members_]
        k = self.history_.k
        w = self._member_weights(k)
        point = np.sum(w * np.stack([f.rates_rps for f in fcs]), axis=0)
        lower = np.sum(w * np.stack([f.lower_rps for f in fcs]), axis=0)
        upper = np.sum(w * np.stack([f.upper_rps for f in fcs]), axis=0)
        return np.maximum(point, 0.0), np.maximum(lower, 0.0), np.maximum(upper, 0.0)
