"""Per-load fidelity metrics: throughput, goodput, SLO attainment, TTFT and TPOT from records."""

from __future__ import annotations

import pytest

from oserve.errors import TraceError
from oserve.sim.fidelity import LOAD_METRICS, compare_load, load_metrics, replay_to_records


def rec(arrival: float, ttft: float | None, e2e: float | None, gen: int) -> dict:
    return {"arrival_s": arrival, "first_token_s": None if ttft is None else arrival + ttft,
            "finish_s": None if e2e is None else arrival + e2e, "generated_tokens": gen}


def test_goodput_and_attainment_count_only_requests_meeting_both_slos() -> None:
    recs = [
        rec(0.0, 0.5, 0.5 + 9 * 0.1, 10),   # meets both
        rec(1.0, 3.0, 3.0 + 9 * 0.1, 10),   # TTFT too high
        rec(2.0, 0.5, 0.5 + 9 * 0.3, 10),   # TPOT too high
        rec(3.0, 0.2, 0.2, 1),              # one token: no TPOT, meets TTFT
        rec(4.0, None, None, 0),            # failed
    ]
    m = load_metrics(recs, slo_ttft_s=2.0, slo_tpot_s=0.2)
    span = (2.0 + 0.5 + 2.7) - 0.0
    assert m["throughput_rps"] == pytest.approx(4 / span)
    assert m["goodput_rps"] == pytest.approx(2 / span)
    assert m["slo_attainment"] == pytest.approx(2 / 5)
    assert m["tpot_mean_s"] == pytest.approx((0.1 + 0.1 + 0.3) / 3)
    assert m["ttft_p50_s"] == pytest.approx(0.5)


def test_real_replay_records_measure_from_the_send_time() -> None:
    real = [{"scheduled_s": 0.0, "send_s": 0.01, "ttft_s": 0.4, "e2e_s": 1.4, "output_tokens": 11, "ok": True}]
    m = load_metrics(replay_to_records(real), slo_ttft_s=2.0, slo_tpot_s=0.2)
    assert m["ttft_p50_s"] == pytest.approx(0.4)
    assert m["tpot_mean_s"] == pytest.approx(0.1)
    assert m["slo_attainment"] == 1.0


def test_compare_load_gives_relative_errors_for_every_metric() -> None:
    real = dict.fromkeys(LOAD_METRICS, 2.0)
    sim = dict.fromkeys(LOAD_METRICS, 1.5)
    sim["tpot_p99_s"] = None
    out = compare_load(real, sim)
    assert list(out) == list(LOAD_METRICS)
    assert out["ttft_p50_s"]["relative_error"] == pytest.approx(0.25)
    assert out["tpot_p99_s"]["relative_error"] is None


def test_no_records_is_a_typed_error() -> None:
    with pytest.raises(TraceError):
        load_metrics([], slo_ttft_s=2.0, slo_tpot_s=0.2)
