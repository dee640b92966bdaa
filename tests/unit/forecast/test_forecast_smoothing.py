"""EWMA / Holt, the self-tuning EWMA bank and the inverse-error ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.forecast import make


def test_ewma_matches_the_recurrence():
    y = np.array([0.0, 10.0, 10.0, 4.0])
    f = make("ewma", alpha=0.5).fit(np.arange(4) * 10.0, y)
    # 0 -> 5 -> 7.5 -> 5.75
    assert f.predict(10).rates_rps == pytest.approx([5.75])


def test_holt_damped_trend_extrapolates_a_ramp():
    y = np.arange(30, dtype=float)
    f = make("ewma", alpha=0.8, beta=0.5, phi=1.0).fit(np.arange(30) * 10.0, y)
    assert f.predict(50).rates_rps[0] == pytest.approx(29 + 5, abs=0.5)


def test_auto_ewma_picks_long_memory_for_noise_and_short_for_steps():
    rng = np.random.default_rng(0)
    n = 300
    steady = rng.poisson(50, n) / 10.0
    steps = np.where((np.arange(n) // 20) % 2 == 0, 1.0, 20.0) + rng.normal(0, 0.05, n)
    f = make("ewma-auto").fit(np.arange(n) * 10.0, np.stack([steady, steps], axis=1))
    alpha = f.chosen_alpha(1)
    assert alpha[0] <= 0.1 and alpha[1] >= 0.5


def test_inverse_error_ensemble_leans_on_the_accurate_member():
    y = np.concatenate([np.full(20, 1.0), np.full(80, 10.0)])
    t = np.arange(100) * 10.0
    ens = make("ensemble", members=("last", ("ewma", {"alpha": 0.01})), weighting="inverse-error").fit(t[:1], y[:1])
    for i in range(1, 100):
        ens.update(t[i:i + 1], y[i:i + 1])
    fixed = make("ensemble", members=("last", ("ewma", {"alpha": 0.01}))).fit(t, y)
    assert abs(ens.predict(10).rates_rps[0] - 10.0) < 0.5 < abs(fixed.predict(10).rates_rps[0] - 10.0)


def test_ensemble_weights_are_validated():
    from oserve.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        make("ensemble", members=("last", "ewma"), weights=(1.0,))
    assert exc.value.field == "weights"
