"""The simulated per-window oracle (oserve.compose.window_oracle): windows, the study's oracle never below it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oserve.compose.capacity import capacity_study
from oserve.compose.window_oracle import window_demands
from oserve.errors import ConfigError
from oserve.sim.config import SimConfig
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names


def test_window_demands_cover_every_request_once_at_the_windows_mean_rate() -> None:
    arr = np.array([0.0, 1.0, 59.9, 60.0, 130.0, 131.0, 132.0])
    tr = Trace(arr, np.full(7, 100), np.full(7, 20), name="t")
    parts = window_demands(tr, DEFAULT_SCHEME, 60.0)
    assert [rows.tolist() for rows, _ in parts] == [[0, 1, 2], [3], [4, 5, 6]]  # the empty window 2 is left out
    # the last window is cut by the trace's end (its last arrival, 132 s): its rate is over the 12 s it covers,
    # not 60 s of which 48 s are past the trace (the window's plan would be sized for a fifth of its demand)
    assert [sum(d.rates_rps.values()) for _, d in parts] == pytest.approx([3 / 60, 1 / 60, 3 / 12])
    with pytest.raises(ConfigError) as e:
        window_demands(tr, DEFAULT_SCHEME, 0.0)
    assert e.value.field == "window_s"


def test_study_oracle_is_never_below_the_window_oracle_nor_a_fixed_plan() -> None:
    caps = {"small": {c: 3.0 for c in NAMES}, "big": {c: 5.0 for c in NAMES}}
    table = synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, class_names=NAMES,
                            start_time_s=20.0)
    table = table.model_copy(update={"variants": {
        k: v.model_copy(update={"precision": "fp16", "kv_cache_bytes": 60 * GIB * v.devices_per_replica // 2})
        for k, v in table.variants.items()}})
    rng = np.random.default_rng(2)
    arr = np.sort(rng.uniform(0, 240.0, 720))
    trace = Trace(arr - arr[0], rng.integers(100, 600, 720), rng.integers(10, 120, 720), name="poisson")
    study = capacity_study(trace, table, ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB), DEFAULT_SCHEME,
                           SimConfig(table="synthetic", initial_window_s=60), planners=("greedy",), rel_tol=0.1,
                           oracle_capacities="table", seed=0, window_oracle=True)
    rows = {r["policy"]: r for r in study["rows"]}
    fixed = max(rows[k]["capacity_scale"] for k in ("static:small", "static:big", "static-mix"))
    wo = rows["window-oracle"]
    # it holds the best fixed plan in every window, from an idle start: never below that plan's capacity
    assert wo["capacity_scale"] >= fixed > 0
    assert rows["oracle"]["capacity_scale"] >= wo["capacity_scale"]
    assert study["summary"]["oracle_scale"] == rows["oracle"]["capacity_scale"]
    for r in study["rows"]:
        assert r["oracle_fraction"] == pytest.approx(r["capacity_scale"] / rows["oracle"]["capacity_scale"])
    picks = study["oracle"]["window_oracle"]["picks"]
    assert picks and all(len(p) == 4 for p in picks.values())  # 240 s in 60-s windows
    assert {w for p in picks.values() for w in p} <= {"window-plan", "static-mix", "static:small", "static:big"}


def test_adding_the_window_oracle_again_recomputes_the_oracle_from_the_bound_without_it(monkeypatch) -> None:
    # bench/window_oracle.py may be run again on its own output (another --window): an earlier, higher window
    # oracle must not stay in the oracle once its row says otherwise
    import oserve.compose.window_oracle as wo_mod
    from oserve.compose.window_oracle import WindowOracleResult, add_window_oracle

    caps = {"small": {c: 3.0 for c in NAMES}}
    table = synthetic_table(caps, {"small": 1}, memory_per_device_bytes=60 * GIB, class_names=NAMES)
    trace = Trace(np.arange(0.0, 10.0), np.full(10, 100), np.full(10, 20), name="t")

    def row(policy: str, scale: float, variant: str | None = None) -> dict:
        return {"policy": policy, "variant": variant, "capacity_scale": scale, "capacity_rps": scale,
                "oracle_fraction": scale / 2.0}

    study = {"target": 0.9, "rel_tol": 0.1, "mean_rate_rps": 1.0, "warmup_s": 0.0,
             "rows": [row("plain-vllm", 1.0, "small"), row("static:small", 1.0, "small"), row("static-mix", 1.5),
                      row("oserve:greedy", 1.2), row("oracle", 2.0)],
             "oracle": {"scale": 2.0, "floored_by": None},
             "summary": {"oserve_vs_plain": {"oserve:greedy": 1.2}, "oracle_scale": 2.0}}
    found = {"scale": 3.0}
    monkeypatch.setattr(wo_mod, "window_oracle_capacity",
                        lambda *a, **k: WindowOracleResult(found["scale"], 0.9, k["window_s"]))
    add_window_oracle(study, trace, table, ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB), DEFAULT_SCHEME,
                      SimConfig(table="synthetic"), window_s=60.0)
    assert study["oracle"]["scale"] == 3.0 and study["oracle"]["floored_by"] == "window-oracle"
    found["scale"] = 1.8  # below the LP bound of 2.0: the oracle is that bound again, floored by nothing
    add_window_oracle(study, trace, table, ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB), DEFAULT_SCHEME,
                      SimConfig(table="synthetic"), window_s=30.0)
    rows = {r["policy"]: r for r in study["rows"]}
    assert [r["policy"] for r in study["rows"]].count("window-oracle") == 1
    assert study["oracle"]["scale"] == 2.0 and study["oracle"]["floored_by"] is None
    assert rows["oracle"]["capacity_scale"] == study["summary"]["oracle_scale"] == 2.0
    assert rows["window-oracle"]["capacity_scale"] == 1.8
    assert rows["oserve:greedy"]["oracle_fraction"] == pytest.approx(0.6)
    assert study["summary"]["oracle_fraction"]["oserve:greedy"] == pytest.approx(0.6)


def test_a_window_served_after_its_lead_in_rates_one_fixed_plan_at_its_own_attainment() -> None:
    # The oracle's windows must not rate a plan above what it does on the trace: a burst at the end of window 0
    # leaves a backlog that delays window 1's requests. Served from an idle cluster, window 1 looked all met,
    # so even one fixed plan out-scored itself (on the Azure conv trace, Llama-2-70B at 6.75x: 16 x int8 TP2
    # 0.830 served whole vs 0.904 window by window from idle, above the 0.9 target).
    from oserve.compose.simulation import sim_options
    from oserve.compose.window_oracle import _met, window_oracle_attainment
    from oserve.policies.static import StaticPlanner
    from oserve.sim.engine import Simulation
    from oserve.sim.policies import static_plan

    table = synthetic_table({"small": {c: 2.0 for c in NAMES}}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                            class_names=NAMES)
    cluster = ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB)
    steady = np.arange(0.0, 120.0, 1.0 / 6)  # 6 req/s, which the replica carries alone
    burst = np.linspace(56.0, 59.9, 400)  # 400 more in the last 4 s of window 0
    arr = np.sort(np.concatenate([steady, burst]))
    trace = Trace(arr, np.full(arr.size, 300), np.full(arr.size, 30), name="burst")
    cfg = SimConfig(table="synthetic")
    plan = static_plan(cluster, table, "small")
    whole = _met(plan, "plan", trace, table, cluster, DEFAULT_SCHEME, cfg, "whole") / len(trace)

    def windowed(lead_in_s: float) -> float:
        a, picks = window_oracle_attainment(trace, table, cluster, DEFAULT_SCHEME, cfg, StaticPlanner("small"), table,
                                            window_s=60.0, static_variants=["small"], lead_in_s=lead_in_s)
        assert len(picks) == 2
        return a

    assert windowed(0.0) > whole + 0.04  # measured 0.629 vs 0.567: the idle start's bias, which the lead-in removes
    assert windowed(60.0) == pytest.approx(whole, abs=0.02)
    assert windowed(math.inf) == pytest.approx(whole, abs=0.02)  # the default: all of the trace before
    # with a warm-up (window 0), only window 1 counts, and the warm-up is its lead-in: exactly the whole run's
    # attainment of the requests from 60 s on
    from oserve.compose.capacity import measured_summary

    res_whole = Simulation(trace, table, cluster, plan, routing="plan", scheme=DEFAULT_SCHEME,
                           options=sim_options(cfg)).run()
    after = measured_summary(res_whole, cfg.slo or table.slo, 60.0)["slo_attainment"]
    a, picks = window_oracle_attainment(trace, table, cluster, DEFAULT_SCHEME, cfg, StaticPlanner("small"), table,
                                        window_s=60.0, static_variants=["small"], measure_from_s=60.0)
    assert len(picks) == 1 and a == pytest.approx(after, abs=1e-9) and after < 0.9
    with pytest.raises(ConfigError) as e:
        windowed(-1.0)
    assert e.value.field == "lead_in_s"


@pytest.mark.parametrize("bad", [math.nan, -30.0, math.inf])
def test_window_oracle_refuses_a_measured_start_that_is_not_a_finite_number_of_seconds_from_0(bad: float) -> None:
    # NaN and inf raised an untyped TraceError from deep inside; a negative start was taken: windows were cut on the
    # trace's clock but each window's start on another grid, so the lead-in left out requests just before the window
    from oserve.compose.window_oracle import window_oracle_attainment
    from oserve.policies.static import StaticPlanner

    table = synthetic_table({"small": {c: 2.0 for c in NAMES}}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                            class_names=NAMES)
    cluster = ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB)
    arr = np.arange(0.0, 120.0, 1.0)
    trace = Trace(arr, np.full(arr.size, 300), np.full(arr.size, 30), name="t")
    with pytest.raises(ConfigError) as e:
        window_oracle_attainment(trace, table, cluster, DEFAULT_SCHEME, SimConfig(table="synthetic"),
                                 StaticPlanner("small"), table, window_s=60.0, static_variants=["small"],
                                 measure_from_s=bad)
    assert e.value.field == "measure_from_s"


def test_window_oracle_s_guard_draws_lengths_from_each_probe_s_scaled_trace_as_static_mix_s(monkeypatch) -> None:
    # static-mix's guard (simulate_policy) draws its request lengths from the probe's scaled trace; the window
    # oracle's drew them from the unscaled one, so its static-mix candidate could be another plan than the
    # static-mix row's, and the oracle no longer held that row's plan in every window
    import oserve.compose.simulation as simulation
    from oserve.compose.capacity import default_scaler
    from oserve.compose.window_oracle import window_oracle_capacity

    table = synthetic_table({"small": {c: 2.0 for c in NAMES}}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                            class_names=NAMES)
    cluster = ClusterSpec.homogeneous(1, 1, "a100-80gb", 60 * GIB)
    rng = np.random.default_rng(4)
    arr = np.sort(rng.uniform(0, 120.0, 240))
    trace = Trace(arr - arr[0], rng.integers(100, 600, 240), rng.integers(10, 120, 240), name="t")
    seen: list[int] = []
    real = simulation.sim_scored

    def spy(planner, cfg, scheme, tr):
        seen.append(len(tr))
        return real(planner, cfg, scheme, tr)

    monkeypatch.setattr(simulation, "sim_scored", spy)
    wo = window_oracle_capacity(trace, table, cluster, DEFAULT_SCHEME, SimConfig(table="synthetic"),
                                static_variants=["small"], window_s=60.0, rel_tol=0.5, seed=3)
    assert [len(default_scaler(3)(trace, s)) for s, _ in wo.probes] == seen
