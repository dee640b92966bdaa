"""A guard that falls back along a chain of forecasters when one fails or answers garbage."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from oserve.errors import OserveError
from oserve.forecast.base import Forecast, Forecaster, ForecastFailedError, require
from oserve.forecast.registry import build

__all__ = ["GuardedForecaster", "FALLBACK_METRIC"]

logger = logging.getLogger("oserve.forecast")

FALLBACK_METRIC = "oserve_forecast_fallbacks"
"""Prometheus counter (exported as ``oserve_forecast_fallbacks_total``), labels ``forecaster``
(the member that failed) and ``cause`` (e.g. ``fit:LinAlgError``, ``non-finite``)."""

_COUNTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _counter(registry: Any) -> Any:
    from prometheus_client import REGISTRY, Counter

    reg = REGISTRY if registry is None else registry
    c = _COUNTERS.get(reg)
    if c is None:
        c = Counter(FALLBACK_METRIC, "Forecasts answered by a fallback because a forecaster failed",
                    ["forecaster", "cause"], registry=reg)
        _COUNTERS[reg] = c
    return c


class GuardedForecaster(Forecaster):
    """Answers with the first member whose forecast is usable.

    Each tick, members are tried in order through :meth:`Forecaster.predict_strict`; a member that
    raised during fit/update/predict or answered non-finite, negative or wrongly shaped rates is
    skipped. Every skip increments the Prometheus counter ``oserve_forecast_fallbacks_total``
    ``{forecaster, cause}`` and is logged once per (member, cause). The last member answers through
    its safe :meth:`Forecaster.predict` (its own last-level fallback), so the guard never raises for
    data reasons.

    Args:
        members: member specs in order of preference (names, ``(name, params)``, dicts or instances).
        registry: ``prometheus_client.CollectorRegistry`` for the counter; None uses the default.

    Attributes (after fit):
        members_: the fitted members.
        fallbacks_: ``{(member name, cause): count}`` of skips so far.
        active_: name of the member that answered the last prediction.
    """

    def __init__(self, members: Sequence[Any] = ("arima", "ewma", "last"), registry: Any = None) -> None:
        self.members = members
        self.registry = registry

    def _validate_params(self) -> None:
        require(isinstance(self.members, Sequence) and not isinstance(self.members, str) and len(self.members) >= 1,
                "members", "a non-empty list of forecaster specs", self.members)

    def _fit(self) -> None:
        self.members_ = [build(m) for m in self.members]
        for m in self.members_:
            m.fit(self.history_.t, self.history_.y)
        self.fallbacks_: dict[tuple[str, str], int] = {}
        self.active_ = ""
        self._counter_ = _counter(self.registry)

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        for m in self.members_:
            m.update(t_new, y_new)

    def _record(self, member: Forecaster, cause: str, message: str) -> None:
        key = (member.name, cause)
        first = key not in self.fallbacks_
        self.fallbacks_[key] = self.fallbacks_.get(key, 0) + 1
        self._counter_.labels(forecaster=member.name, cause=cause).inc()
        if first:
            logger.warning("forecaster %s failed (%s), falling back: %s", member.name, cause, message)

    def predict_strict(self, horizon_s: float) -> Forecast:
        """Forecast from the first usable member (see the class docstring).

        Raises:
            NotFittedError: before fit.
            ForecastInputError: bad horizon.
            ForecastFailedError: only if the guard itself failed (it has no model of its own).
        """
        base = super().predict_strict(horizon_s)  # validates, handles the empty history
        if not hasattr(self, "_chosen_"):
            return base
        fc: Forecast = self._chosen_
        del self._chosen_
        k = self.history_.k
        return self._make_forecast(base.horizon_s, fc.rates_rps[:k], fc.lower_rps[:k], fc.upper_rps[:k],
                                   f"{self.name}:{fc.source}")

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        for m in self.members_[:-1]:
            try:
                fc = m.predict_strict(horizon_s)
            except ForecastFailedError as exc:
                self._record(m, exc.cause, str(exc))
                continue
            except OserveError:
                raise
            except Exception as exc:  # noqa: BLE001 - a member overriding predict_strict misbehaved
                self._record(m, f"predict:{type(exc).__name__}", str(exc))
                continue
            break
        else:
            fc = self.members_[-1].predict(horizon_s)
        self.active_ = fc.source
        self._chosen_ = fc
        return fc.rates_rps, fc.lower_rps, fc.upper_rps
