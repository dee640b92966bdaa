"""ARIMAForecaster: warm-up, refits off the caller's thread, log1p, refit schedule."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import oserve.forecast.arima as arima_mod
from oserve.forecast import make

RNG = np.random.default_rng(7)
Y = 5.0 + RNG.normal(0, 1, 40).clip(-4, 4)
T = np.arange(40) * 10.0
FAST = {"max_p": 1, "max_q": 0, "fit_window": 30}


def test_background_refit_does_not_block_update(monkeypatch):
    gate = threading.Event()
    real = arima_mod._fit_all

    def slow_fit_all(*args, **kwargs):
        gate.wait(timeout=60)
        return real(*args, **kwargs)

    monkeypatch.setattr(arima_mod, "_fit_all", slow_fit_all)
    f = make("arima", warmup=20, refit_mode="background", **FAST).fit(T[:20], Y[:20])
    try:
        assert f._job_ is not None and not f._job_.done()
        f.update(T[20:30], Y[20:30])  # returns although the fit is still blocked
        assert f.models_ == [None] and f.n_fits_ == 0
        ewma = make("ewma").fit(T[:30], Y[:30])
        assert f.predict(60).rates_rps == pytest.approx(ewma.predict(60).rates_rps)
        gate.set()
        f._job_.result(timeout=120)
        f.update(T[30:31], Y[30:31])  # picks up the model, caught up with rows 20..30
        assert f.n_fits_ == 1 and f.models_[0] is not None
        assert f.models_[0].res.nobs == 11  # the catch-up extended the model by rows 20..30
        fc = f.predict(60)
        assert np.isfinite(fc.rates_rps).all() and 0 < fc.rates_rps[0] < 12
    finally:
        gate.set()
        f.close()


def test_inline_refit_on_schedule_and_log1p_keeps_positive():
    f = make("arima", warmup=20, refit_every=5, refit_mode="inline", log1p=True, **FAST).fit(T[:20], Y[:20])
    assert f.n_fits_ == 1 and f.n_selections_ == 1
    f.update(T[20:26], Y[20:26])  # 6 rows in one call -> a scheduled refit (same order)
    f.update(T[26:27], Y[26:27])
    assert f.n_fits_ == 2 and f.n_selections_ == 1
    for h in (10.0, 60.0, 300.0):
        fc = f.predict(h)
        assert fc.lower_rps[0] <= fc.rates_rps[0] <= fc.upper_rps[0]
        assert 0 < fc.rates_rps[0] < 12


def test_params_are_validated():
    from oserve.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        make("arima", refit_mode="sometimes")
    assert exc.value.field == "refit_mode"
    with pytest.raises(ConfigError):
        make("arima", warmup=30, fit_window=10)


def test_growing_error_triggers_a_new_order_selection():
    rng = np.random.default_rng(1)
    y = np.concatenate([5.0 + rng.normal(0, 0.3, 40), 5.0 + rng.normal(0, 6.0, 40).clip(-5, None)])
    t = np.arange(80) * 10.0
    f = make("arima", warmup=20, refit_every=1000, refit_error_ratio=1.5, refit_mode="inline", **FAST)
    f.fit(t[:40], y[:40])
    assert f.n_selections_ == 1
    for i in range(40, 80):
        f.update(t[i:i + 1], y[i:i + 1])
    assert f.n_selections_ >= 2  # the noise grew 20x: the error EWMA crossed 1.5x the fit's error
