"""WorkloadMonitor on synthetic arrival streams with exactly known rates (SimClock)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import generate_latest

from oserve.backends.base import ReplicaStats
from oserve.clock import SimClock
from oserve.errors import ConfigError
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

C = DEFAULT_SCHEME.classes


def _stream(mon: WorkloadMonitor, clock: SimClock, rate: float, start: float, end: float, cls: int,
            prefix: str, complete: bool = True, input_tokens: int = 100, output_tokens: int = 20) -> None:
    n = int(round((end - start) * rate))
    for i in range(n):
        clock.advance_to(start + i / rate)
        rid = f"{prefix}{i}"
        mon.record_admission(rid, C[cls], input_tokens, output_tokens)
        if complete:
            mon.record_first_token(rid)
            mon.record_completion(rid, output_tokens, ok=True)


def test_exact_rates_per_class():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10.0)
    # two interleaved streams: class 0 at 4 req/s and class 2 at 0.5 req/s, for 30 s
    for i in range(120):
        clock.advance_to(i * 0.25)
        mon.record_admission(f"a{i}", C[0], 100, 20)
        if i % 8 == 0:
            mon.record_admission(f"b{i}", C[2], 3000, 50)
    clock.advance_to(30.0)
    snap = mon.snapshot()
    assert snap.window_s == 10.0
    assert snap.arrival_rates_rps.tolist() == [4.0, 0.0, 0.5, 0.0]
    assert snap.mean_input_tokens[0] == 100 and snap.mean_input_tokens[2] == 3000
    assert math.isnan(snap.mean_input_tokens[1])
    # nothing completed: the output mean falls back to the admitted requests' max_tokens
    assert snap.mean_output_tokens[0] == 20
    assert snap.in_flight.tolist() == [120, 0, 15, 0]
    assert snap.rates_by_class()["long-in/short-out"] == 0.5


def test_arrivals_counted_at_admission_not_completion():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=5.0)
    _stream(mon, clock, 10.0, 0.0, 10.0, 0, "r", complete=False)  # saturated: nothing completes
    clock.advance_to(10.0)
    snap = mon.snapshot()
    assert snap.arrival_rates_rps[0] == 10.0
    assert snap.completion_rates_rps[0] == 0.0
    assert snap.in_flight[0] == 100


def test_no_traffic_is_zero_demand():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10.0)
    _stream(mon, clock, 2.0, 0.0, 10.0, 1, "x")
    clock.advance_to(100.0)
    snap = mon.snapshot()
    assert snap.arrival_rates_rps.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert snap.window_s == 10.0
    ts, rates = mon.rate_history()
    assert ts.tolist() == list(range(100))  # every second since start, idle ones included
    assert rates[:10, 1].tolist() == [2.0] * 10 and rates[10:].sum() == 0.0


def test_young_monitor_divides_by_seconds_seen():
    clock = SimClock(100.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=60.0)
    _stream(mon, clock, 3.0, 100.0, 105.0, 0, "y")
    clock.advance_to(105.0)
    snap = mon.snapshot()
    assert snap.window_s == 5.0 and snap.arrival_rates_rps[0] == 3.0


def test_rate_history_bounded_and_before_start_absent():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10.0, history_s=20.0)
    _stream(mon, clock, 1.0, 0.0, 50.0, 3, "h")
    clock.advance_to(50.0)
    ts, rates = mon.rate_history()
    assert ts.tolist() == list(range(30, 50))
    assert rates.shape == (20, 4) and rates[:, 3].tolist() == [1.0] * 20


def test_token_means_and_queue_time():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10.0)
    for i in range(10):
        clock.advance_to(float(i))
        mon.record_admission(f"q{i}", C[1], 200 + i, 400)
        clock.advance_to(i + 0.25)
        mon.record_first_token(f"q{i}")
        clock.advance_to(i + 0.5)
        mon.record_completion(f"q{i}", 300, ok=(i % 2 == 0))
    clock.advance_to(10.0)
    snap = mon.snapshot()
    assert snap.mean_input_tokens[1] == pytest.approx(204.5)
    assert snap.mean_output_tokens[1] == 300
    assert snap.mean_ttft_s[1] == pytest.approx(0.25)
    assert snap.failure_rates_rps[1] == pytest.approx(0.5)
    assert snap.in_flight[1] == 0
    text = generate_latest(mon.registry).decode()
    assert "requests_completed" not in text  # request ends are counted once, by the endpoint
    assert 'oserve_requests_admitted_total{request_class="short-in/long-out"} 10.0' in text


def test_unknown_replica_is_not_idle():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock)
    mon.update_replica_stats("r1", ReplicaStats(running=3, waiting=1, kv_cache_usage=0.5))
    mon.update_replica_stats("r2", None)
    snap = mon.snapshot()
    assert snap.replicas["r1"].running == 3
    assert "r2" in snap.replicas and snap.replicas["r2"] is None
    text = generate_latest(mon.registry).decode()
    assert 'oserve_replica_running{replica="r2"} NaN' in text
    assert 'oserve_replica_stats_known{replica="r2"} 0.0' in text
    mon.forget_replica("r2")
    assert "r2" not in mon.snapshot().replicas


def test_counter_reset_is_never_negative():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock)
    mon.update_replica_stats("r", ReplicaStats(), counters={"generation_tokens": 1000.0})
    clock.advance_to(10.0)
    mon.update_replica_stats("r", ReplicaStats(), counters={"generation_tokens": 1500.0})
    assert mon.snapshot().replica_counter_rates["r"]["generation_tokens"] == 50.0
    clock.advance_to(20.0)  # the replica restarted: its counter starts again from 0
    mon.update_replica_stats("r", ReplicaStats(), counters={"generation_tokens": 200.0})
    assert mon.snapshot().replica_counter_rates["r"]["generation_tokens"] == 20.0
    clock.advance_to(30.0)
    mon.update_replica_stats("r", ReplicaStats(), counters={"generation_tokens": 200.0})
    assert mon.snapshot().replica_counter_rates["r"]["generation_tokens"] == 0.0


def test_separate_registries_and_config_errors():
    a = WorkloadMonitor(DEFAULT_SCHEME, SimClock())
    b = WorkloadMonitor(DEFAULT_SCHEME, SimClock())  # would collide on the global registry
    assert a.registry is not b.registry
    with pytest.raises(ConfigError):
        WorkloadMonitor(DEFAULT_SCHEME, SimClock(), window_s=0.5)
    with pytest.raises(ConfigError):
        WorkloadMonitor(DEFAULT_SCHEME, SimClock(), window_s=60, history_s=30)


def test_unknown_ids_are_ignored():
    mon = WorkloadMonitor(DEFAULT_SCHEME, SimClock())
    mon.record_first_token("nope")
    mon.record_completion("nope", 10, ok=True)
    assert np.all(mon.in_flight == 0)


def test_admission_by_class_name_and_without_max_tokens():
    clock = SimClock(0.0)
    mon = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=1.0)
    mon.record_admission("n1", "long-in/short-out", 5000, None)
    clock.advance_to(1.0)
    snap = mon.snapshot()
    assert snap.arrival_rates_rps[2] == 1.0
    assert snap.mean_output_tokens[2] == C[2].expected_output_tokens
    with pytest.raises(ConfigError):
        mon.record_admission("n2", "huge", 1, 1)
