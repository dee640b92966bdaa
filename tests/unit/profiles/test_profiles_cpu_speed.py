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
    assert speed_validity(FAST, FAST.model_copy(update={"memory_gbps": 12.0})).ok  # 1.25x slower: within 1.3x
    # a core half as fast (cf. the 1.8x between this project's VMs)
    slow = FAST.model_copy(update={"memory_gbps": 7.0})
    v = speed_validity(FAST, slow)
    assert not v.ok and "GEMV" in v.reason and "0.47x" in v.reason and "GEMM" not in v.reason
    v = speed_validity(FAST, FAST.model_copy(update={"gemm_gflops": 130.0}))  # 1.37x
    assert not v.ok and "GEMM" in v.reason
    assert not speed_validity(None, FAST).ok
    assert speed_validity(FAST, slow, tolerance=1.2).ok  # 15 / 7 = 2.14x
    # symmetric: a table from a machine 1.32x faster is refused as one from a machine 1.32x slower
    assert not speed_validity(FAST.model_copy(update={"memory_gbps": 15.0 * 1.32}), FAST).ok
    assert not speed_validity(FAST, FAST.model_copy(update={"memory_gbps": 15.0 * 1.32})).ok
    assert speed_validity(FAST, FAST.model_copy(update={"memory_gbps": 15.0 / 1.28})).ok


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
    assert "more than a factor 1.3" in reasons[str(order[1])]
    # without a speed, the CPU identity alone decides (the first candidate)
    assert select_table(order, zen4)[0] == order[0]
    assert select_table(order[:2], zen4, FAST)[0] is None
    assert select_table(order[1:2], zen4, FAST, tolerance=1.0)[0] == order[1]


@pytest.mark.parametrize("tol", [-1.0, float("nan"), 0])
def test_select_table_refuses_a_bad_tolerance_before_reading_any_table(tol: float) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        select_table([], parse_cpuinfo(ZEN4), FAST, tolerance=tol)


def test_demo_sets_aside_an_earlier_remeasurement_refused_for_speed(tmp_path, monkeypatch) -> None:
    """A refused re-measurement's sweep state must not be resumed: it would re-fit the other machine's timings."""
    from oserve.cli import demo_table as dt

    zen4 = parse_cpuinfo(ZEN4)
    base = synthetic_table({"a": {"c": 1.0}}, {"a": 1}, device_type="cpu").model_copy(update={"measured_on": zen4})
    shipped = tmp_path / "shipped.json"
    base.save(shipped)  # no speed recorded
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    earlier = out_dir / f"profile-{dt._slug(zen4)}.json"
    base.model_copy(update={"measured_speed": FAST.model_copy(update={"memory_gbps": 7.0})}).save(earlier)
    state = earlier.with_name(earlier.name + ".sweep.json")
    state.write_text('{"old": "timings"}')
    calls = []

    def fake_remeasure(config, out):
        calls.append(out)
        assert not out.exists() and not state.exists()  # the profiler starts from nothing
        base.model_copy(update={"measured_speed": FAST}).save(out)

    monkeypatch.setattr(dt, "current_cpu", lambda: zen4)
    monkeypatch.setattr(dt, "measure_cpu_speed", lambda: FAST)
    monkeypatch.setattr(dt, "remeasure", fake_remeasure)
    path, note = dt.demo_table([shipped], tmp_path / "profile.yaml", out_dir)
    assert calls == [earlier] and path == earlier
    assert "RE-MEASURED" in note and "does not record the CPU speed" in note and "(2.14x)" in note
    assert (out_dir / (earlier.name + ".refused")).exists() and (out_dir / (state.name + ".refused")).exists()
    # the next run at the same speed takes the new table without measuring
    path, note = dt.demo_table([shipped], tmp_path / "profile.yaml", out_dir)
    assert calls == [earlier] and path == earlier and "at this speed" in note
