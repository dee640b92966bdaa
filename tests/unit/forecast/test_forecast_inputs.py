"""The inputs that must not break a forecaster, each with the right value asserted."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.forecast import make

T20 = np.arange(20) * 10.0
SIMPLE = ["last", "ewma", "ewma-auto", "seasonal-naive", "ensemble", "spike-guard", "guarded-fast"]


def build(name: str, **kw):
    if name == "guarded-fast":
        return make("guarded", members=("ewma", "last"))
    if name == "arima-fit":  # an ARIMA that really fits after 10 rows, synchronously
        params = {"warmup": 10, "fit_window": 20, "refit_mode": "inline", "max_p": 1, "max_q": 0, **kw}
        return make("arima", **params)
    return make(name, **kw)


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit"])
def test_constant_series_forecasts_the_constant(name):
    f = build(name).fit(T20, np.ones(20))
    for h in (10.0, 60.0, 300.0):
        fc = f.predict(h)
        assert fc.rates_rps == pytest.approx([1.0], abs=1e-9)
        assert fc.lower_rps[0] <= 1.0 <= fc.upper_rps[0]


def test_arima_does_not_pass_on_the_flat_series_pitfall():
    # pmdarima 2.1.1's auto_arima fits ARIMA(0,0,0) without intercept to 20 x 1.0 and forecasts 0.
    f = build("arima-fit").fit(T20, np.ones(20))
    assert f.models_ == [None]  # constant window: no ARIMA model, the level answers
    assert f.predict(60).rates_rps.tolist() == [1.0]


def test_arima_near_constant_series_stays_at_the_level():
    y = 5.0 + 0.01 * (-1.0) ** np.arange(20)
    fc = build("arima-fit", max_q=1).fit(T20, y).predict(10)
    assert abs(fc.rates_rps[0] - 5.0) < 0.05


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit"])
def test_non_finite_readings_are_missing(name):
    y = np.full(20, 10.0)
    y[[3, 8, 15]] = [np.nan, np.inf, -np.inf]
    y[19] = np.nan  # the last reading missing too: the previous finite one stands
    f = build(name).fit(T20[:12], y[:12])
    f.update(T20[12:], y[12:])
    fc = f.predict(60)
    assert fc.rates_rps == pytest.approx([10.0], abs=1e-6)
    assert np.isfinite(fc.upper_rps).all() and np.isfinite(fc.lower_rps).all()


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit"])
def test_noisy_series_with_non_finite_readings_stays_in_range(name):
    rng = np.random.default_rng(3)
    y = 10 + rng.normal(0, 1, 40)
    y[rng.choice(40, 8, replace=False)] = [np.nan, np.inf, -np.inf, np.nan, np.inf, -np.inf, np.nan, -1.0]
    fc = build(name).fit(np.arange(40) * 10.0, y).predict(60)
    finite = y[np.isfinite(y) & (y >= 0)]
    assert finite.min() - 3 <= fc.rates_rps[0] <= finite.max() + 3


FALLING = np.array([100, 80, 60, 40, 20, 10, 0, 0], dtype=float)


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit", "holt"])
def test_falling_series_is_clamped_at_zero(name):
    f = make("ewma", alpha=0.8, beta=0.8) if name == "holt" else build(name)
    if name == "arima-fit":
        f = make("arima", warmup=8, refit_mode="inline", log1p=False, max_p=1, max_q=1)
    f.fit(np.arange(8) * 10.0, FALLING)
    for h in (10.0, 60.0, 300.0):
        fc = f.predict(h)
        assert fc.rates_rps[0] >= 0 and fc.lower_rps[0] >= 0
    if name in ("last", "seasonal-naive"):
        assert f.predict(60).rates_rps.tolist() == [0.0]
    if name == "holt":  # the damped trend extrapolates below zero: clamped
        assert f.predict(300).rates_rps.tolist() == [0.0]


def test_short_series_arima_answers_with_its_fallback():
    y = np.array([3.0, 4.0, 5.0, 4.0, 3.0])
    t = np.arange(5) * 10.0
    arima = make("arima", refit_mode="inline").fit(t, y)
    ewma = make("ewma").fit(t, y)
    assert arima.models_ == [None]
    assert arima.predict(60).rates_rps == pytest.approx(ewma.predict(60).rates_rps)


def test_series_shorter_than_a_season_answers_with_the_last_value():
    y = np.array([3.0, 4.0, 5.0, 4.0, 7.0])
    f = make("seasonal-naive", period_s=3600.0).fit(np.arange(5) * 10.0, y)
    assert f.predict(60).rates_rps.tolist() == [7.0]


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit"])
def test_zeros_then_burst_is_seen_at_once(name):
    y = np.zeros(31)
    y[-1] = 50.0
    f = build(name).fit(np.arange(30) * 10.0, y[:30])
    assert f.predict(60).rates_rps.tolist() == [0.0]
    f.update([300.0], [50.0])
    p = f.predict(60).rates_rps[0]
    assert p > 0
    if name in ("last", "spike-guard", "guarded-fast", "seasonal-naive"):
        assert p == 50.0 or name == "guarded-fast" and p == pytest.approx(15.0)


def test_spike_guard_follows_the_burst_the_ewma_lags():
    y = np.zeros(30)
    ewma = make("ewma").fit(np.arange(30) * 10.0, y)
    spike = make("spike-guard", inner="ewma").fit(np.arange(30) * 10.0, y)
    ewma.update([300.0], [60.0])
    spike.update([300.0], [60.0])
    assert ewma.predict(60).rates_rps[0] == pytest.approx(18.0)  # 0.3 * 60
    assert spike.predict(60).rates_rps[0] == 60.0
    assert spike.n_spikes_ == 1


@pytest.mark.parametrize("name", [*SIMPLE, "arima-fit"])
def test_class_appearing_mid_run(name):
    t = np.arange(20) * 10.0
    f = build(name).fit(t, np.full((20, 1), 2.0))
    assert f.predict(60).rates_rps.shape == (1,)
    f.update([200.0, 210.0], [[2.0, 0.0], [2.0, 6.0]])  # a second class shows up
    fc = f.predict(60)
    assert fc.rates_rps.shape == (2,) and fc.upper_rps.shape == (2,)
    assert fc.rates_rps[0] == pytest.approx(2.0, abs=1e-6)
    assert fc.rates_rps[1] > 0
    f.update([220.0], [[2.0]])  # the second class missing from a reading: not a crash
    assert f.predict(60).rates_rps.shape == (2,)


def test_zero_column_then_traffic_in_a_fixed_shape():
    y = np.zeros((30, 2))
    y[:, 0] = 4.0
    f = make("ewma-auto").fit(np.arange(30) * 10.0, y)
    f.update([300.0], [[4.0, 8.0]])
    assert f.predict(60).rates_rps[1] > 0
