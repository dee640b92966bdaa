"""Fixtures of the forecast tests."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_statsmodels():
    """statsmodels/pmdarima warn a lot on tiny series; the tests assert behaviour, not warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
