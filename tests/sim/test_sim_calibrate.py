"""Planner capacities calibrated with the simulator (oserve.compose.calibrate): one FCFS server by hand."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.compose.calibrate import calibrated_capacities, calibrated_table
from oserve.errors import ConfigError
from oserve.profiles.iteration import IterationTimeModel
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, SLO
from oserve.workload.trace import Trace

SHORT = "short-in/short-out"


def one_server(ttft_slo_s: float, table_capacity_rps: float = 10.0) -> object:
    """One request at a time; a 100-token prompt with 1 output token takes 0.5 s (service rate 2 req/s)."""
    t = synthetic_table({"one": {c: table_capacity_rps for c in DEFAULT_SCHEME.names}}, {"one": 1},
                        memory_per_device_bytes=60 * GIB, class_names=DEFAULT_SCHEME.names)
    v = t.variants["one"].model_copy(update={"max_num_seqs": 1, "iteration": IterationTimeModel(b=0.0, d=0.5)})
    return t.model_copy(update={"variants": {"one": v}, "slo": SLO(ttft_s=ttft_slo_s, tpot_s=1.0)})


def short_trace(n: int = 50) -> Trace:
    return Trace(np.arange(n, dtype=float), np.full(n, 100), np.full(n, 1), name="short")


def test_calibrated_capacity_is_the_simulated_one_not_the_table_s() -> None:
    table = one_server(ttft_slo_s=2.0)  # the table claims 10 req/s; the server completes at most 2 req/s
    caps = calibrated_capacities(table, short_trace(), DEFAULT_SCHEME, target=0.9, duration_s=100.0, rel_tol=0.05)
    got = caps["one"][SHORT]
    assert set(caps["one"]) == {SHORT}  # only the classes present in the workload
    assert got["unloaded_attainment"] == pytest.approx(1.0)
    assert 0.3 < got["capacity_rps"] < 2.0  # a stable M/D/1 queue with most TTFTs under 2 s
    cal = calibrated_table(table, caps)
    assert cal.variants["one"].classes[SHORT].capacity_rps == got["capacity_rps"]
    assert cal.variants["one"].classes["long-in/long-out"].capacity_rps == 10.0  # not measured: unchanged
    assert cal.variants["one"].iteration == table.variants["one"].iteration
    assert "calibrated" in cal.software


def test_a_variant_that_misses_the_slo_unloaded_gets_zero() -> None:
    table = one_server(ttft_slo_s=0.4)  # every request takes 0.5 s to its first token
    caps = calibrated_capacities(table, short_trace(), DEFAULT_SCHEME, duration_s=50.0)
    assert caps["one"][SHORT]["unloaded_attainment"] == 0.0
    assert caps["one"][SHORT]["capacity_rps"] == 0.0


@pytest.mark.parametrize(("kw", "field"), [({"target": 0.0}, "target"), ({"min_attainment": 1.5}, "min_attainment"),
                                           ({"variants": ["nope"]}, "variants")])
def test_bad_parameters_name_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        calibrated_capacities(one_server(2.0), short_trace(), DEFAULT_SCHEME, **kw)
    assert e.value.field == field
