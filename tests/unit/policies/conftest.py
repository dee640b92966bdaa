"""Shared fixtures for planner tests: synthetic tables and small clusters."""

from __future__ import annotations

import pytest

from oserve.policies import ClusterSpec
from oserve.testing.tables import GIB, synthetic_table

SHORT, LONG = "short", "long"


@pytest.fixture
def mix_table():
    """Hand-solvable: short requests best on int4-tp1 (8 req/s per device), long ones only on fp16-tp4."""
    return synthetic_table(
        {"int4-tp1": {SHORT: 8.0, LONG: 0.1}, "fp16-tp4": {SHORT: 12.0, LONG: 2.0}},
        {"int4-tp1": 1, "fp16-tp4": 4},
        memory_per_device_bytes={"int4-tp1": 40 * GIB, "fp16-tp4": 70 * GIB},
        start_time_s={"int4-tp1": 30.0, "fp16-tp4": 90.0},
        class_names=[SHORT, LONG],
    )


@pytest.fixture
def one_node():
    return ClusterSpec.homogeneous(1, 8, "a100-80gb", 80 * GIB)
