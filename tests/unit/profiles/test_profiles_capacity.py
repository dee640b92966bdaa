"""SLO-constrained capacity and the lookup-table builder."""

from __future__ import annotations

import dataclasses

import pytest

from oserve.errors import ProfileError
from oserve.profiles.capacity import build_table, class_capacity, load_point
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.roofline import estimate_start_time_s, roofline_model
from oserve.profiles.table import ProfileTable
from oserve.profiles.variants import Variant
from oserve.types import DEFAULT_SCHEME, SLO

V = Variant(model="llama-3-8b", precision="fp16", tp=1, device_type="a100-80gb", max_model_len=8192)
M = roofline_model(V)
SHORT = DEFAULT_SCHEME.by_name("short-in/long-out")


def test_capacity_monotonic_in_slo() -> None:
    prev = -1.0
    for ttft, tpot in [(0.2, 0.02), (0.5, 0.03), (1.0, 0.05), (2.0, 0.1), (5.0, 0.2), (20.0, 1.0)]:
        cap = class_capacity(M, V, SHORT, SLO(ttft_s=ttft, tpot_s=tpot)).capacity_rps
        assert cap >= prev
        prev = cap
    assert prev > 0
    assert class_capacity(M, V, SHORT, SLO(ttft_s=0.01, tpot_s=0.001)).capacity_rps == 0.0


def test_capacity_point_meets_slo_and_littles_law() -> None:
    slo = SLO(ttft_s=1.0, tpot_s=0.1)
    cp = class_capacity(M, V, SHORT, slo)
    assert cp.ttft_s <= slo.ttft_s and cp.tpot_s <= slo.tpot_s
    assert cp.throughput_tokens_s == pytest.approx(cp.capacity_rps * SHORT.expected_output_tokens)
    pt = load_point(M, 8, 1024, 512, 8192)
    assert pt.rate_rps == pytest.approx(8 / pt.e2e_s, rel=1e-6)  # Little's law
    assert pt.tpot_s >= M.decode_step_s(8, 8 * (1024 + 256))  # prefill work only adds


def test_faster_model_has_more_capacity() -> None:
    slow = IterationTimeModel(a=0.01, b=1e-4, d=0.02, e=2e-4, f=1e-7)
    fast = IterationTimeModel(a=0.005, b=5e-5, d=0.01, e=1e-4, f=5e-8)
    slo = SLO(ttft_s=1.0, tpot_s=0.1)
    assert class_capacity(fast, V, SHORT, slo).capacity_rps > class_capacity(slow, V, SHORT, slo).capacity_rps


def test_class_longer_than_context_is_profiled_at_what_fits() -> None:
    v = Variant(model="llama-2-7b", device_type="a100-80gb")  # 4096-token context
    long = DEFAULT_SCHEME.by_name("long-in/long-out")  # expected 4096 in + 512 out: over the context
    cp = class_capacity(roofline_model(v), v, long, SLO())
    clipped = dataclasses.replace(long, expected_input_tokens=4096 - 512)
    assert cp.capacity_rps > 0 and cp == class_capacity(roofline_model(v), v, clipped, SLO())


def test_class_that_cannot_fit_the_context_has_zero_capacity() -> None:
    v = Variant(model="llama-2-7b", device_type="a100-80gb")
    # every input of this class (>= 4000 tokens) plus 512 output tokens exceeds the 4096-token context
    huge = dataclasses.replace(DEFAULT_SCHEME.by_name("long-in/long-out"), input_range=(4000, 1 << 30))
    cp = class_capacity(roofline_model(v), v, huge, SLO())
    assert cp.capacity_rps == 0 and cp.max_concurrency == 0


def _table() -> ProfileTable:
    vs = [V, Variant(model="llama-3-8b", precision="int8", tp=2, max_model_len=8192)]
    return build_table(vs, {v.name: roofline_model(v) for v in vs}, source="modelled",
                       start_times_s={v.name: estimate_start_time_s(v) for v in vs}, created="2026-01-01")


def test_table_roundtrip_and_mismatch(tmp_path) -> None:
    t = _table()
    p = tmp_path / "t.json"
    t.save(p)
    back = ProfileTable.load(p)
    assert back == t
    assert back.capacity("llama-3-8b-fp16-tp1", "short-in/short-out") > 0
    back.check_against(["llama-3-8b-int8-tp2"], DEFAULT_SCHEME.names)
    back.check_model("llama-3-8b")
    with pytest.raises(ProfileError, match="no variant"):
        back.check_against(["llama-3-8b-fp16-tp4"], DEFAULT_SCHEME.names)
    with pytest.raises(ProfileError, match="other|not"):
        back.check_model("llama-2-70b")
    with pytest.raises(ProfileError):
        back.capacity("llama-3-8b-fp16-tp1", "nope")
    raw = p.read_text().replace('"version": 1', '"version": 99')
    (tmp_path / "v.json").write_text(raw)
    with pytest.raises(ProfileError, match="version"):
        ProfileTable.load(tmp_path / "v.json")


def test_build_table_errors() -> None:
    with pytest.raises(ProfileError, match="duplicate"):
        build_table([V, V], {V.name: M}, source="modelled", start_times_s={V.name: 1.0})
    with pytest.raises(ProfileError, match="no iteration"):
        build_table([V], {}, source="modelled", start_times_s={V.name: 1.0})
