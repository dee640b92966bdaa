"""The Forecaster contract, the registry and the conformance checks."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError, OserveError
from oserve.forecast import (
    EWMAForecaster,
    Forecaster,
    ForecastInputError,
    LastValueForecaster,
    NotFittedError,
    available,
    make,
    make_default,
    register,
)
from oserve.testing import check_forecaster

FAST = ["last", "ewma", "ewma-auto", "seasonal-naive", "ensemble", "spike-guard"]


def test_registry_has_the_issue_names():
    for name in ("arima", "last", "ewma", "seasonal-naive", "ensemble"):
        assert name in available()
    assert isinstance(make("ewma", alpha=0.5), EWMAForecaster)
    assert make("ewma", alpha=0.5).alpha == 0.5


def test_unknown_and_duplicate_names_are_config_errors():
    with pytest.raises(ConfigError) as exc:
        make("prophet")
    assert "ewma" in exc.value.allowed
    with pytest.raises(ConfigError):
        register("last", LastValueForecaster)
    with pytest.raises(ConfigError):
        register("not-a-forecaster", dict)  # type: ignore[arg-type]


def test_bad_hyper_parameters_name_the_field():
    with pytest.raises(ConfigError) as exc:
        make("ewma", alpha=1.5)
    assert exc.value.field == "alpha"
    with pytest.raises(ConfigError):
        make("ewma", gamma=0.1)
    with pytest.raises(ConfigError) as exc:
        make("arima", warmup=2)
    assert exc.value.field == "warmup"


def test_user_subclass_can_be_registered_and_built():
    class DoubleLast(Forecaster):
        def __init__(self, factor: float = 2.0) -> None:
            self.factor = factor

        def _fit(self) -> None:
            pass

        def _update(self, t_new, y_new) -> None:
            pass

        def _predict(self, steps, horizon_s):
            p = self.factor * self.last_level()
            return p, p, p

    register("test-double-last", DoubleLast)
    f = make("test-double-last", factor=3.0).fit([0.0, 10.0], [[1.0], [2.0]])
    assert f.predict(10).rates_rps.tolist() == [6.0]
    check_forecaster(lambda: make("test-double-last"))


def test_predict_before_fit_raises_not_fitted():
    f = make("ewma")
    with pytest.raises(NotFittedError) as exc:
        f.predict(60)
    assert isinstance(exc.value, OserveError)
    with pytest.raises(NotFittedError):
        f.update([0.0], [[1.0]])


def test_init_only_stores_params_and_clone_is_unfitted():
    f = make("ewma", alpha=0.2, beta=0.1)
    assert f.get_params() == {"alpha": 0.2, "beta": 0.1, "phi": 0.9}
    assert not [a for a in vars(f) if a.endswith("_")]
    f.fit([0.0, 10.0], [[1.0], [2.0]])
    g = f.clone()
    assert not g.is_fitted and g.get_params() == f.get_params()


def test_shape_mismatch_is_a_typed_error():
    with pytest.raises(ForecastInputError) as exc:
        make("last").fit([0.0, 1.0, 2.0], np.ones((2, 2)))
    assert exc.value.field == "rates_rps"
    f = make("last").fit([0.0], [[1.0]])
    with pytest.raises(ForecastInputError):
        f.predict(-5)
    with pytest.raises(ForecastInputError):
        f.predict(float("nan"))


def test_horizon_maps_to_steps_of_the_observed_spacing():
    t = np.arange(10) * 10.0
    y = np.arange(10, dtype=float).reshape(-1, 1)
    f = make("seasonal-naive", period_s=50.0).fit(t, y)
    # target bin index 9 + 3 = 12 -> one period (5 bins) earlier is index 7
    assert f.predict(30.0).rates_rps.tolist() == [7.0]


def test_token_means_are_forecast_when_fed():
    t = np.arange(4) * 10.0
    rates = np.ones((4, 2))
    tin = np.array([[100, np.nan], [100, 2000], [100, 2000], [100, np.nan]])
    tout = np.full((4, 2), 50.0)
    fc = make("ewma").fit(t, rates, tin, tout).predict(60)
    assert fc.mean_input_tokens is not None and fc.mean_input_tokens.tolist() == [100.0, 2000.0]
    assert fc.mean_output_tokens.tolist() == [50.0, 50.0]
    assert make("ewma").fit(t, rates).predict(60).mean_input_tokens is None


def test_stale_and_non_finite_timestamps_are_dropped():
    f = make("last").fit([0.0, 10.0], [[1.0], [2.0]])
    f.update([5.0, np.nan, 20.0], [[9.0], [9.0], [3.0]])
    assert f.predict(10).rates_rps.tolist() == [3.0]
    assert f.history_.t.tolist() == [0.0, 10.0, 20.0]


def test_empty_history_forecasts_zero():
    f = make("ewma").fit(np.zeros(0), np.zeros((0, 2)))
    fc = f.predict(60)
    assert fc.rates_rps.tolist() == [0.0, 0.0]
    f.update([0.0], [[4.0, 0.0]])
    assert f.predict(60).rates_rps.tolist() == [4.0, 0.0]


@pytest.mark.parametrize("name", FAST)
def test_conformance_fast_forecasters(name):
    check_forecaster(lambda: make(name))


def test_conformance_arima_and_guard():
    fast = {"warmup": 20, "fit_window": 30, "refit_mode": "inline", "max_p": 1, "max_q": 0}
    check_forecaster(lambda: make("arima", **fast))
    check_forecaster(lambda: make("guarded", members=(("arima", fast), "ewma")))


def test_make_default_builds_a_guarded_planning_forecaster():
    from prometheus_client import CollectorRegistry

    f = make_default(registry=CollectorRegistry())
    f.fit(np.arange(5) * 10.0, np.full((5, 2), 3.0))
    fc = f.predict(60)
    assert np.allclose(fc.rates_rps, 3.0)
