"""The live default forecaster, registered as ``default`` so serve and simulator configs name the same one."""

from __future__ import annotations

from typing import Any

import numpy as np

from oserve.forecast.base import require
from oserve.forecast.guard import GuardedForecaster
from oserve.forecast.spike import SpikeGuard

__all__ = ["DEFAULT_FORECASTER", "DefaultForecaster"]

DEFAULT_FORECASTER = "ewma-auto"
"""Registry name of the forecaster that won the backtests on the Azure 2023 traces (see
docs/forecasting.md and bench/results/forecast.json)."""


class DefaultForecaster(SpikeGuard):
    """The recommended planning forecaster: :data:`DEFAULT_FORECASTER` behind a fallback guard (to
    ``last``), behind a spike guard. Registry name ``default``.

    Args:
        spike_margin: ``margin`` of the :class:`~oserve.forecast.spike.SpikeGuard` (>= 1); None turns
            the spike guard off (lowest MAE; with it, fewer requests are under-forecast during bursts,
            at some MAE cost: docs/forecasting.md).
        registry: ``prometheus_client.CollectorRegistry`` for the fallback counter (None: the default).

    Raises:
        ConfigError: ``spike_margin`` below 1 (on :func:`oserve.forecast.make` or ``fit``).
    """

    def __init__(self, spike_margin: float | None = 3.0, registry: Any = None) -> None:
        self.spike_margin = spike_margin
        self.registry = registry
        super().__init__(inner=GuardedForecaster(members=(DEFAULT_FORECASTER, "last"), registry=registry),
                         margin=3.0 if spike_margin is None else spike_margin)

    def _validate_params(self) -> None:
        require(self.spike_margin is None or (isinstance(self.spike_margin, int | float) and self.spike_margin >= 1),
                "spike_margin", ">= 1 or None", self.spike_margin)

    def _next_upper(self) -> np.ndarray:
        if self.spike_margin is None:  # no reading is ever above an infinite band: the guard stays off
            return np.full(self.history_.k, np.inf)
        return super()._next_upper()
