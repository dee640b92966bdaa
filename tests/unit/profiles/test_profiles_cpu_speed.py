"""One core's speed recorded in a CPU profile table, and tables refused on a machine of another speed."""

from __future__ import annotations

import math

import pytest

from oserve.errors import ConfigError
from oserve.profiles.cpu_info import parse_cpuinfo, select_table
from oserve.profiles.cpu_speed import CpuSpeed, measure_cpu_speed, speed_validity
from oserve.testing.tables import synthetic_table

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
FAST = CpuSpeed(memory_gbps=15.0, gemm_gflops=95.0)


def test_measured_speed_is_positive_and_finite() -> None:
    s = measure_cpu_speed(repeats=2)
    assert s.memory_gbps > 0 and s.gemm_gflops > 0
    assert math.isfinite(s.memory_gbps) and math.isfinite(s.gemm_gflops)
    assert "best of 2" in s.method


@pytest.mark.parametrize("repeats", [0, -1, True, 1.5])
def test_measure_refuses_bad_repeats(repeats: object) -> None:
    with pytest.raises(ConfigError, match="repeats"):
        measure_cpu_speed(repeats)  # type: ignore[arg-type]


def test_speed_validity_within_and_outside_tolerance() -> None:
    assert speed_validity(FAST, FAST).ok
    assert speed_validity(FAST, FAST.model_copy(update={"memory_gbps": 13.0})).ok  # 13% slower: within 15%
    # a core half as fast (cf. the 1.8x between this project's VMs)
    slow = FAST.model_copy(update={"memory_gbps": 7.0})
    v = speed_validity(FAST, slow)
    assert not v.ok and "GEMV" in v.reason and "0.47x" in v.reason and "GEMM" not in v.reason
    v = speed_validity(FAST, FAST.model_copy(update={"gemm_gflops": 130.0}))
    assert not v.ok and "GEMM" in v.reason
    assert not speed_validity(None, FAST).ok
    assert speed_validity(FAST, slow, tolerance=0.6).ok


@pytest.mark.parametrize("tol", [0, -0.1, float("nan"), float("inf"), True, "0.2"])
def test_speed_validity_refuses_bad_tolerance(tol: object) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        speed_validity(FAST, FAST, tol)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"memory_gbps": 0.0}, {"memory_gbps": float("nan")}, {"gemm_gflops": -1.0},
                                 {"gemm_gflops": float("inf")}])
def test_cpu_speed_refuses_non_positive_or_non_finite(bad: dict) -> None:
    with pytest.raises(ValueError):
        CpuSpeed(**{"memory_gbps": 1.0, "gemm_gflops": 1.0, **bad})


def test_select_table_with_speed_skips_a_table_of_another_speed(tmp_path) -> None:
    zen4 = parse_cpuinfo(ZEN4)
    base = synthetic_table({"a": {"c": 1.0}}, {"a": 1}, device_type="cpu").model_copy(update={"measured_on": zen4})
    base.save(tmp_path / "no-speed.json")
    base.model_copy(update={"measured_speed": FAST.model_copy(update={"memory_gbps": 8.0})}).save(tmp_path / "slow.json")
    base.model_copy(update={"measured_speed": FAST}).save(tmp_path / "here.json")
    order = [tmp_path / n for n in ("no-speed.json", "slow.json", "here.json")]
    back = type(base).load(tmp_path / "here.json")
    assert back.measured_speed == FAST
    path, reasons = select_table(order, zen4, FAST)
    assert path == tmp_path / "here.json"
    assert "does not record the CPU speed" in reasons[str(order[0])]
    assert "more than 15%" in reasons[str(order[1])]
    # without a speed, the CPU identity alone decides (the first candidate)
    assert select_table(order, zen4)[0] == order[0]
    assert select_table(order[:2], zen4, FAST)[0] is None
    assert select_table(order[1:2], zen4, FAST, tolerance=1.0)[0] == order[1]
