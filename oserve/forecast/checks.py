"""Conformance checks every forecaster must pass (in the spirit of scikit-learn's ``check_estimator``).

Run ``check_forecaster(lambda: MyForecaster(...))`` in your own tests; it raises ``AssertionError``
naming the first broken rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oserve.forecast.base import Forecast, Forecaster, ForecastInputError, NotFittedError

__all__ = ["check_forecaster", "check_forecast"]


def check_forecast(fc: Forecast, k: int) -> None:
    """Assert ``fc`` has finite, non-negative arrays of shape ``(k,)`` with lower <= rates <= upper."""
    for name in ("rates_rps", "lower_rps", "upper_rps"):
        a = getattr(fc, name)
        assert isinstance(a, np.ndarray) and a.shape == (k,), f"{name} has shape {np.shape(a)}, expected ({k},)"
        assert np.all(np.isfinite(a)), f"{name} is not finite: {a}"
        assert np.all(a >= 0), f"{name} is negative: {a}"
    assert np.all(fc.lower_rps <= fc.rates_rps + 1e-9), f"lower {fc.lower_rps} above rates {fc.rates_rps}"
    assert np.all(fc.upper_rps >= fc.rates_rps - 1e-9), f"upper {fc.upper_rps} below rates {fc.rates_rps}"


def check_forecaster(factory: Callable[[], Forecaster], horizons_s: tuple[float, ...] = (10.0, 60.0)) -> None:
    """Check the Forecaster contract on a few awkward inputs.

    Checks: ``__init__`` learns nothing; predicting before fit raises :class:`NotFittedError`;
    ``fit``/``update`` return self; forecasts are finite, non-negative, ``(k,)``-shaped on a normal
    series, a constant series, a series with NaN/inf readings, an all-zero series and an empty
    history; a negative horizon raises :class:`ForecastInputError`; ``clone()`` is unfitted.
    """
    f = factory()
    assert not f.is_fitted, "a new forecaster must not be fitted"
    try:
        f.predict(10.0)
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict before fit must raise NotFittedError")
    rng = np.random.default_rng(0)
    t = np.arange(40) * 10.0
    cases = {
        "normal": rng.poisson(30, size=(40, 2)) / 10.0,
        "constant": np.ones((40, 2)),
        "zeros": np.zeros((40, 2)),
        "non-finite": np.where(rng.random((40, 2)) < 0.2, np.nan, 3.0),
    }
    cases["non-finite"][5, 0] = np.inf
    cases["non-finite"][6, 1] = -np.inf
    for label, y in cases.items():
        g = factory()
        assert g.fit(t[:30], y[:30]) is g, "fit must return self"
        for h in horizons_s:
            check_forecast(g.predict(h), 2)
        assert g.update(t[30:], y[30:]) is g, "update must return self"
        for h in horizons_s:
            try:
                check_forecast(g.predict(h), 2)
            except AssertionError as exc:
                raise AssertionError(f"case {label!r}, horizon {h}: {exc}") from exc
    g = factory().fit(np.zeros(0), np.zeros((0, 3)))
    check_forecast(g.predict(60.0), 3)
    try:
        g.predict(-1.0)
    except ForecastInputError:
        pass
    else:
        raise AssertionError("a negative horizon must raise ForecastInputError")
    assert not g.clone().is_fitted, "clone() must return an unfitted forecaster"
