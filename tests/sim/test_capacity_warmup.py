"""A capacity study's warm-up: requests before ``warmup_s`` are served by every policy but not counted."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.compose.capacity import (
    capacity_study,
    find_capacity,
    mean_demand,
    measured_part,
    measured_span_s,
    parse_capacity_policy,
    simulate_policy,
)
from oserve.errors import ConfigError
from oserve.sim.config import SimConfig
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names
CFG = SimConfig(table="synthetic")


def _table() -> object:
    caps = {"small": {c: 3.0 for c in NAMES}, "big": {c: 5.0 for c in NAMES}}
    table = synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, class_names=NAMES,
                            start_time_s=20.0)
    return table.model_copy(update={"variants": {
        k: v.model_copy(update={"precision": "fp16", "kv_cache_bytes": 60 * GIB * v.devices_per_replica // 2})
        for k, v in table.variants.items()}})


def _burst_then_light(seed: int = 0) -> Trace:
    """400 requests in the first 2 s (far past any replica's capacity), then 1 req/s from 120 s to 240 s."""
    rng = np.random.default_rng(seed)
    arr = np.concatenate([np.sort(rng.uniform(0, 2.0, 400)), np.arange(120.0, 240.0, 1.0)])
    n = arr.size
    return Trace(arr, rng.integers(100, 600, n), rng.integers(10, 120, n), name="burst-then-light")


def test_measured_part_keeps_the_requests_from_the_warmup_on() -> None:
    tr = _burst_then_light()
    part = measured_part(tr, 100.0)
    # on the measured part's clock, 0 is the warm-up's end: the 20-s gap to its first arrival is kept
    assert len(part) == 120 and part.arrival_s[0] == 20.0
    assert measured_part(tr, 0.0) is tr


def test_warmup_requests_are_served_but_not_counted() -> None:
    table, tr = _table(), _burst_then_light()
    cluster = ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB)
    pol = parse_capacity_policy("static:small")
    whole, _ = simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, CFG)
    light, _ = simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, CFG, measure_from_s=100.0)
    assert whole["requests"] == 520 and light["requests"] == 120
    # the burst misses its SLO; the light part after it (the burst drained long before 120 s) meets it
    assert whole["slo_attainment"] < 0.5 < 0.95 <= light["slo_attainment"]


def test_study_with_warmup_reports_the_measured_part_and_refuses_a_warmup_past_the_trace() -> None:
    table, tr = _table(), _burst_then_light()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    with pytest.raises(ConfigError) as e:
        capacity_study(tr, table, cluster, DEFAULT_SCHEME, CFG, policies=["static:small"], warmup_s=240.0)
    assert e.value.field == "warmup_s"
    study = capacity_study(tr, table, cluster, DEFAULT_SCHEME, CFG, policies=["static:small", "static:big"],
                           rel_tol=0.2, oracle_capacities="table", warmup_s=100.0)
    assert study["requests"] == 120 and study["warmup_s"] == 100.0
    assert study["mean_rate_rps"] == pytest.approx(120 / 139.0)  # [100, 239) s, not [120, 239)
    rows = {r["policy"]: r for r in study["rows"]}
    # without the burst counted, the light part carries far more than its 1 req/s
    assert rows["static:small"]["capacity_scale"] > 2.0


def test_the_measured_span_starts_at_the_warmup_not_at_the_first_measured_arrival() -> None:
    # warm-up [0, 100) s; the first counted request arrives at 150 s, the last at 249 s: the measured part spans
    # [100, 249) s, so its mean rate is 100 / 149 req/s, not 100 / 99 (its first-to-last-arrival span)
    rng = np.random.default_rng(1)
    arr = np.concatenate([np.arange(0.0, 100.0, 2.0), np.arange(150.0, 250.0, 1.0)])
    tr = Trace(arr, rng.integers(100, 600, arr.size), rng.integers(10, 120, arr.size), name="gap-after-warmup")
    assert measured_span_s(tr, 100.0) == 149.0 and measured_span_s(tr, 0.0) == 249.0
    assert sum(mean_demand(tr, DEFAULT_SCHEME, measure_from_s=100.0).rates_rps.values()) == pytest.approx(100 / 149)
    assert sum(mean_demand(tr, DEFAULT_SCHEME).rates_rps.values()) == pytest.approx(150 / 249)
    # the window oracle rates static-mix's candidate from the measured part itself (its clock starts at the warm-up's
    # end): the same demand as static-mix's own plan
    assert mean_demand(measured_part(tr, 100.0), DEFAULT_SCHEME) == mean_demand(tr, DEFAULT_SCHEME, measure_from_s=100.0)
    study = capacity_study(tr, _table(), ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB), DEFAULT_SCHEME, CFG,
                           policies=["static:small"], rel_tol=0.5, oracle_capacities="table", warmup_s=100.0)
    assert study["requests"] == 100 and study["duration_s"] == 149.0
    assert study["mean_rate_rps"] == pytest.approx(100 / 149)
    row = next(r for r in study["rows"] if r["policy"] == "static:small")
    assert row["capacity_rps"] == pytest.approx(row["capacity_scale"] * 100 / 149)


def test_a_warmup_summary_rates_its_requests_over_the_span_from_the_warmup() -> None:
    # the counted requests' throughput and goodput are over [100, 249) s, as the study's mean rate, not from the first
    # counted arrival (150 s)
    rng = np.random.default_rng(1)
    arr = np.concatenate([np.arange(0.0, 100.0, 2.0), np.arange(150.0, 250.0, 1.0)])
    tr = Trace(arr, rng.integers(100, 600, arr.size), rng.integers(10, 120, arr.size), name="gap-after-warmup")
    summary, _ = simulate_policy(parse_capacity_policy("static:small"), tr, _table(),
                                 ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB), DEFAULT_SCHEME, CFG,
                                 measure_from_s=100.0)
    assert summary["requests"] == 100 and summary["span_s"] == 149.0
    # every counted request but the few still running at the last arrival completes within the span
    assert 95 / 149 <= summary["throughput_avg_rps"] <= 100 / 149


@pytest.mark.parametrize("policy", ["oserve:greedy", "oserve"])
def test_a_first_plan_window_past_the_warmup_is_refused(policy: str) -> None:
    # the warm-up exists so oserve's first plan is made without seeing the measured part; a first window of
    # 150 s on a 100-s warm-up would plan for 50 s of the measured part (hindsight), silently
    table, tr = _table(), _burst_then_light()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    cfg = CFG.model_copy(update={"initial_window_s": 150.0})
    said: list[str] = []
    for call in (lambda: capacity_study(tr, table, cluster, DEFAULT_SCHEME, cfg, policies=[policy],
                                        oracle_capacities="table", warmup_s=100.0, log=said.append),
                 lambda: find_capacity(policy, tr, table, cluster, DEFAULT_SCHEME, cfg, measure_from_s=100.0)):
        with pytest.raises(ConfigError, match=r"initial_window_s must be in \(0, 100\] seconds") as err:
            call()
        assert err.value.field == "initial_window_s" and err.value.allowed.startswith("(0, 100] s")
    assert said == []
    # the same window without a warm-up (the trace's first 150 s, all of it counted) and static policies pass
    find_capacity(policy, tr, table, cluster, DEFAULT_SCHEME, cfg, rel_tol=0.5, max_scale=1.0)
    find_capacity("static:small", tr, table, cluster, DEFAULT_SCHEME, cfg, rel_tol=0.5, max_scale=1.0,
                  measure_from_s=100.0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 240.0, 1e9])
def test_find_capacity_refuses_a_measure_start_outside_the_trace(bad: float) -> None:
    # past the last arrival nothing is counted: attainment read 1.0 (vacuous) at every scale, capped at 256
    table, tr = _table(), _burst_then_light()
    cluster = ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB)
    with pytest.raises(ConfigError) as err:
        find_capacity("static:small", tr, table, cluster, DEFAULT_SCHEME, CFG, measure_from_s=bad)
    assert err.value.field == "measure_from_s" and "seconds" in err.value.allowed


def test_a_scale_with_no_counted_request_is_vacuously_met_not_a_crash() -> None:
    # thinning to a low scale can leave no request after the warm-up: static-mix (which plans for the measured
    # part's mean demand) raised TraceError from inside the bisection
    table, tr = _table(), _burst_then_light()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    early = Trace(tr.arrival_s[:400], tr.input_tokens[:400], tr.output_tokens[:400], name="burst")
    for label in ("static-mix", "static:small"):
        summary, _ = simulate_policy(parse_capacity_policy(label), early, table, cluster, DEFAULT_SCHEME, CFG,
                                     measure_from_s=100.0)
        assert summary["requests"] == 0 and summary["slo_attainment"] == 1.0


def _mix_table() -> object:
    """``small`` (1 device) serves short requests well, ``big`` (2 devices) the long ones."""
    first = NAMES[0]
    caps = {"small": {c: 6.0 if c == first else 0.3 for c in NAMES}, "big": {c: 1.0 if c == first else 3.0 for c in NAMES}}
    table = synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, class_names=NAMES,
                            start_time_s=20.0)
    return table.model_copy(update={"variants": {
        k: v.model_copy(update={"precision": "fp16", "kv_cache_bytes": 60 * GIB * v.devices_per_replica // 2})
        for k, v in table.variants.items()}})


def _short_then_long(seed: int = 0) -> Trace:
    """2 req/s of short requests (<= 600 in, <= 120 out tokens) for 150 s, then 1 req/s of long ones (>= 2500 in,
    >= 300 out) to 300 s."""
    rng = np.random.default_rng(seed)
    a1, a2 = np.arange(0.0, 150.0, 0.5), np.arange(150.0, 300.0, 1.0)
    inp = np.concatenate([rng.integers(100, 600, a1.size), rng.integers(2500, 3500, a2.size)])
    out = np.concatenate([rng.integers(10, 120, a1.size), rng.integers(300, 400, a2.size)])
    return Trace(np.concatenate([a1, a2]), inp, out, name="short-then-long")


def test_a_warmup_oserve_summary_keeps_the_switch_and_memory_fields_of_the_whole_run() -> None:
    # the warm-up's summary is of the counted requests; the switch (targets, transitions) and memory fields come from
    # the run's records, which a summary of a list of request records alone dropped
    table, tr = _mix_table(), _short_then_long()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    pol = parse_capacity_policy("oserve:greedy")
    whole, _ = simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, CFG)
    warm, _ = simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, CFG, measure_from_s=100.0)
    for key in ("switches", "switches_reached", "reconfig_s", "transitions", "memory_utilization"):
        assert key in whole and key in warm, key
    assert set(warm) == set(whole)
    assert warm["requests"] == 250 and whole["requests"] == 450
    # one run (CFG has no sim-scored guard, so the warm-up changes nothing it decides): the same switches
    assert whole["switches"] >= 1 and warm["switches"] == whole["switches"]
    assert warm["transitions"] == whole["transitions"] and warm["reconfig_s"] == whole["reconfig_s"]


def test_oserve_guard_draws_request_lengths_from_the_warmup_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # the sim-scored guard's per-class lengths came from the whole trace: hindsight of the measured part's (long)
    # requests; with a warm-up it sees the 200 short requests before 100 s, and the scheme's expected lengths for
    # the classes absent there. The spy stops each run once the controller is built (the lengths are fixed then).
    import oserve.compose.simulation as sim

    class Built(Exception):
        pass

    seen: list[dict] = []
    real = sim.build_controller

    def spy(*args: object, **kw: object) -> object:
        seen.append(real(*args, **kw).planner.lengths)
        raise Built

    monkeypatch.setattr(sim, "build_controller", spy)
    table, tr = _mix_table(), _short_then_long()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    cfg = CFG.model_copy(update={"sim_scored_plans": True})
    pol = parse_capacity_policy("oserve:greedy")
    with pytest.raises(Built):
        simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, cfg, measure_from_s=100.0)
    warm = seen[-1]
    assert set(warm) == {NAMES[0]} and len(warm[NAMES[0]][0]) == 200
    assert max(warm[NAMES[0]][0]) < 600 and max(warm[NAMES[0]][1]) < 120
    with pytest.raises(Built):  # no warm-up: the whole trace's lengths, the long ones too
        simulate_policy(pol, tr, table, cluster, DEFAULT_SCHEME, cfg)
    assert sum(len(i) for i, _ in seen[-1].values()) == 450 and set(seen[-1]) != {NAMES[0]}


def test_run_policy_refuses_a_bad_lengths_cutoff() -> None:
    from oserve.compose.simulation import run_policy
    from oserve.sim.policies import PolicySpec

    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError) as err:
            run_policy(PolicySpec("oserve"), _short_then_long(), _mix_table(), ClusterSpec.homogeneous(1, 2, "a100-80gb",
                       60 * GIB), DEFAULT_SCHEME, CFG, lengths_before_s=bad)
        assert err.value.field == "lengths_before_s" and "s" in err.value.allowed
