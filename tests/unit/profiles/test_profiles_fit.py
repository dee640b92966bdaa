"""Least-squares fit of the iteration model."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ProfileError
from oserve.profiles.fit import fit_decode, fit_iteration_model, fit_prefill
from oserve.profiles.iteration import IterationTimeModel

TRUE = IterationTimeModel(a=0.012, b=2.5e-4, c=3e-8, d=0.009, e=4e-4, f=2e-7)


def _synthetic(noise: float, seed: int = 0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    prefill = [(t, TRUE.prefill_s(t) * (1 + noise * rng.standard_normal())) for t in (16, 64, 256, 512, 1024, 2048)
               for _ in range(2)]
    decode = [(b, b * k, TRUE.decode_step_s(b, b * k) * (1 + noise * rng.standard_normal()))
              for b in (1, 2, 4, 8, 16, 32) for k in (64, 256, 1024)]
    return prefill, decode


def test_fit_recovers_known_coefficients_exactly() -> None:
    prefill, decode = _synthetic(0.0)
    m = fit_iteration_model(prefill, decode)
    for name in "abcdef":
        assert getattr(m, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    assert m.fit_error == pytest.approx(0.0, abs=1e-9)


def test_fit_with_noise_reports_error() -> None:
    prefill, decode = _synthetic(0.02, seed=1)
    m = fit_iteration_model(prefill, decode)
    assert m.b == pytest.approx(TRUE.b, rel=0.05)
    assert m.d == pytest.approx(TRUE.d, rel=0.05)
    assert m.e == pytest.approx(TRUE.e, rel=0.1)
    assert 0.002 < m.fit_error < 0.05


def test_fit_keeps_coefficients_non_negative() -> None:
    a, b, c = fit_prefill([10, 20, 30, 40], [0.05, 0.04, 0.03, 0.02])  # falling times: no negative slope
    assert min(a, b, c) >= 0
    d, e, f = fit_decode([1, 2, 4], [10, 20, 40], [0.01, 0.012, 0.016])
    assert min(d, e, f) >= 0


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ProfileError):
        fit_prefill([1, 2], [0.1, 0.2])
    with pytest.raises(ProfileError):
        fit_decode([1, 2, 3], [1, 2, 3], [0.1, 0.0, 0.2])
