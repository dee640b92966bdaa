"""Per-class arrival-rate forecasting.

``make(name, **params)`` builds a forecaster by registry name; ``register(name, cls)`` adds one.
Built-in names: ``"last"``, ``"ewma"``, ``"ewma-auto"``, ``"seasonal-naive"``, ``"arima"``, ``"ensemble"``,
``"guarded"`` (fallback chain), ``"spike-guard"`` (follows bursts at once) and ``"default"``
(:class:`DefaultForecaster`, the configuration recommended by the backtests, docs/forecasting.md).
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
from oserve.forecast.default import DEFAULT_FORECASTER, DefaultForecaster
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
    "DefaultForecaster",
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
    ("default", DefaultForecaster),
):
    register(_name, _cls)



def make_default(registry: object = None, spike_margin: float | None = 3.0) -> Forecaster:
    """The recommended planning forecaster (same as ``make("default", ...)``): :class:`DefaultForecaster`.

    Args:
        registry: ``prometheus_client.CollectorRegistry`` for the fallback counter (None: default).
        spike_margin: ``margin`` of the :class:`SpikeGuard`; None leaves the spike guard off.

    Raises:
        ConfigError: ``spike_margin`` below 1.
    """
    return make("default", registry=registry, spike_margin=spike_margin)
