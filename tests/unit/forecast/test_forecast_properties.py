"""Property: whatever the readings, every registered forecaster answers finite, non-negative rates
of the right shape."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oserve.forecast import available, make
from oserve.testing import check_forecast

readings = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e300, -0.0]),
)


def _series(max_rows: int, max_k: int):
    return st.integers(1, max_k).flatmap(
        lambda k: st.lists(st.lists(readings, min_size=k, max_size=k), min_size=1, max_size=max_rows)
    )


def _run(f, rows) -> None:
    y = np.array(rows, dtype=np.float64)
    n, k = y.shape
    t = np.arange(n) * 10.0
    cut = max(1, n // 2)
    f.fit(t[:cut], y[:cut])
    for h in (10.0, 60.0):
        check_forecast(f.predict(h), k)
    for i in range(cut, n):
        f.update(t[i:i + 1], y[i:i + 1])
    for h in (10.0, 300.0):
        check_forecast(f.predict(h), k)


FAST_NAMES = [n for n in available() if n not in ("arima", "guarded")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_series(24, 3))
def test_fast_forecasters_always_answer_sane_rates(rows):
    for name in FAST_NAMES:
        _run(make(name), rows)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_series(14, 1))
def test_arima_and_guard_always_answer_sane_rates(rows):
    params = {"warmup": 8, "fit_window": 14, "refit_mode": "inline", "max_p": 1, "max_q": 1, "maxiter": 10}
    _run(make("arima", **params), rows)
    _run(make("guarded", members=(("arima", params), "ewma", "last")), rows)
