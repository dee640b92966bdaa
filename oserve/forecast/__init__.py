"""Per-class arrival-rate forecasting.

``make(name, **params)`` builds a forecaster by registry name; ``register(name, cls)`` adds one.
Built-in names: ``"last"``, ``"ewma"``, ``"ewma-auto"``, ``"seasonal-naive"``, ``"arima"``, ``"ensemble"``,
``"guarded"`` (fallback chain) and ``"spike-guard"`` (follows bursts at once).
:func:`make_default` builds the configuration recommended by the backtests (docs/forecasting.md).
"""

from __future__ import annotations

from oserve.forecast.arima import ARIMAForecaster
from oserve.forecast.base import (
    Forecast,
    Forecaster,
    ForecastFailedError,
    ForecastInputError,
    NotFittedError,
)
from oserve.forecast.ensemble import EnsembleForecaster
from oserve.forecast.guard import GuardedForecaster
from oserve.forecast.naive import LastValueForecaster, SeasonalNaiveForecaster
from oserve.forecast.registry import available, make, register
from oserve.forecast.smoothing import AutoEWMAForecaster, EWMAForecaster
from oserve.forecast.spike import SpikeGuard

__all__ = [
    "Forecast",
    "Forecaster",
    "NotFittedError",
    "ForecastFailedError",
    "ForecastInputError",
    "LastValueForecaster",
    "EWMAForecaster",
    "AutoEWMAForecaster",
    "SeasonalNaiveForecaster",
    "ARIMAForecaster",
    "EnsembleForecaster",
    "GuardedForecaster",
    "SpikeGuard",
    "make",
    "register",
    "available",
    "make_default",
    "DEFAULT_FORECASTER",
]

for _name, _cls in (
    ("last", LastValueForecaster),
    ("ewma", EWMAForecaster),
    ("ewma-auto", AutoEWMAForecaster),
    ("seasonal-naive", SeasonalNaiveForecaster),
    ("arima", ARIMAForecaster),
    ("ensemble", EnsembleForecaster),
    ("guarded", GuardedForecaster),
    ("spike-guard", SpikeGuard),
):
    register(_name, _cls)

DEFAULT_FORECASTER = "ewma-auto"
"""Registry name of the forecaster that won the backtests on the Azure 2023 traces (see
docs/forecasting.md and bench/results/forecast.json)."""


def make_default(registry: object = None, spike_margin: float | None = 3.0) -> Forecaster:
    """The recommended planning forecaster: :data:`DEFAULT_FORECASTER` behind a fallback guard (to
    ``last``), optionally behind a spike guard.

    Args:
        registry: ``prometheus_client.CollectorRegistry`` for the fallback counter (None: default).
        spike_margin: ``margin`` of the :class:`SpikeGuard`; None leaves the spike guard out (lowest
            MAE; with it, fewer requests are under-forecast during bursts, at some MAE cost: see
            docs/forecasting.md).
    """
    guarded = GuardedForecaster(members=(DEFAULT_FORECASTER, "last"), registry=registry)
    if spike_margin is None:
        return guarded
    return SpikeGuard(inner=guarded, margin=spike_margin)
