"""GuardedForecaster: fallback on exceptions and garbage, one log line per cause, a counter."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from oserve.forecast import Forecaster, GuardedForecaster, make
from oserve.forecast.base import ForecastFailedError

T = np.arange(20) * 10.0
Y = 5.0 + np.sin(np.arange(20))


class _Garbage(Forecaster):
    """A test forecaster answering whatever ``kind`` says."""

    def __init__(self, kind: str = "nan") -> None:
        self.kind = kind

    def _fit(self) -> None:
        if self.kind == "fit-raises":
            raise np.linalg.LinAlgError("singular matrix")

    def _update(self, t_new, y_new) -> None:
        if self.kind == "update-raises":
            raise FloatingPointError("overflow")

    def _predict(self, steps, horizon_s):
        k = self.history_.k
        if self.kind == "nan":
            return np.full(k, np.nan), np.zeros(k), np.ones(k)
        if self.kind == "negative":
            return -np.ones(k), -np.ones(k), np.ones(k)
        if self.kind == "shape":
            return np.ones(k + 1), np.ones(k + 1), np.ones(k + 1)
        if self.kind == "inf":
            return np.full(k, np.inf), np.zeros(k), np.full(k, np.inf)
        return np.ones(k), np.ones(k), np.ones(k)


def _value(reg: CollectorRegistry, member: str, cause: str) -> float:
    v = reg.get_sample_value("oserve_forecast_fallbacks_total", {"forecaster": member, "cause": cause})
    return 0.0 if v is None else v


@pytest.mark.parametrize(("kind", "cause"), [("nan", "non-finite"), ("inf", "non-finite"), ("negative", "negative"),
                                             ("shape", "wrong-shape"), ("fit-raises", "fit:LinAlgError")])
def test_guard_falls_back_on_garbage_and_counts_it(kind, cause, caplog):
    reg = CollectorRegistry()
    g = GuardedForecaster(members=(_Garbage(kind), "last"), registry=reg).fit(T, Y)
    with caplog.at_level(logging.WARNING, logger="oserve.forecast"):
        for _ in range(5):
            fc = g.predict(60)
            assert fc.rates_rps == pytest.approx([Y[-1]])
            assert "last" in fc.source
    assert _value(reg, "forecaster", cause) == 5.0  # _Garbage is unregistered: default name
    assert g.fallbacks_ == {("forecaster", cause): 5}
    logged = [r for r in caplog.records if cause in r.getMessage() and "falling back" in r.getMessage()]
    assert len(logged) == 1


def test_update_failure_falls_back_then_retries(caplog):
    g = GuardedForecaster(members=(_Garbage("update-raises"), "ewma"), registry=CollectorRegistry()).fit(T, Y)
    assert "forecaster" in g.predict(10).source  # healthy before the first update
    g.update([200.0], [5.0])
    fc = g.predict(10)
    assert "ewma" in fc.source
    member = g.members_[0]
    assert member.failure_ == "update:FloatingPointError"
    with pytest.raises(ForecastFailedError) as exc:
        member.predict_strict(10)
    assert exc.value.cause == "update:FloatingPointError"


def test_unguarded_forecaster_answers_last_level_and_logs_once(caplog):
    f = _Garbage("nan").fit(T, Y)
    with caplog.at_level(logging.WARNING, logger="oserve.forecast"):
        for _ in range(4):
            fc = f.predict(30)
            assert fc.rates_rps == pytest.approx([Y[-1]]) and "fallback-last" in fc.source
    assert len([r for r in caplog.records if "non-finite" in r.getMessage()]) == 1


def test_arima_raising_inside_statsmodels_falls_back(monkeypatch, caplog):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    def boom(self, *a, **k):
        raise np.linalg.LinAlgError("LU decomposition error")

    monkeypatch.setattr(SARIMAX, "fit", boom)
    reg = CollectorRegistry()
    arima = ("arima", {"warmup": 10, "refit_mode": "inline", "max_p": 1, "max_q": 1})
    g = GuardedForecaster(members=(arima, "ewma", "last"), registry=reg)
    with caplog.at_level(logging.WARNING, logger="oserve.forecast"):
        g.fit(T, Y)
        for i in range(3):
            g.update([200.0 + 10 * i], [5.0])
            fc = g.predict(60)
            assert fc.source.endswith("ewma")
            assert np.isfinite(fc.rates_rps).all()
    cause = g.members_[0].failure_
    assert cause is not None and cause.startswith("fit:")
    assert _value(reg, "arima", cause) == 3.0
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


def test_arima_that_does_not_converge_falls_back(monkeypatch):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    real_fit = SARIMAX.fit

    def not_converged(self, *a, **k):  # statsmodels reports "iteration limit reached"
        res = real_fit(self, *a, **k)
        res.mle_retvals = {"converged": False, "warnflag": 1}
        return res

    monkeypatch.setattr(SARIMAX, "fit", not_converged)
    rng = np.random.default_rng(0)
    y = rng.poisson(30, 30) / 10.0
    reg = CollectorRegistry()
    arima = ("arima", {"warmup": 10, "fit_window": 30, "refit_mode": "inline", "max_p": 1, "max_q": 1})
    g = GuardedForecaster(members=(arima, "ewma"), registry=reg).fit(np.arange(30) * 10.0, y)
    fc = g.predict(60)
    assert g.members_[0].failure_ == "fit:ModelFitError"
    assert fc.source.endswith("ewma")
    assert fc.rates_rps == pytest.approx(make("ewma").fit(np.arange(30) * 10.0, y).predict(60).rates_rps)
    assert _value(reg, "arima", "fit:ModelFitError") == 1.0


def test_two_guards_share_the_default_registry_without_collision():
    a = GuardedForecaster(members=("ewma", "last")).fit(T, Y)
    b = GuardedForecaster(members=("ewma", "last")).fit(T, Y)
    assert a.predict(10).rates_rps == pytest.approx(b.predict(10).rates_rps)
