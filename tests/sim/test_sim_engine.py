"""The event loop: conservation laws, determinism, switching, and the controller run on simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.control.controller import Controller
from oserve.forecast import make as make_forecaster
from oserve.policies import make_planner
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.metrics import summarise
from oserve.sim.policies import static_plan
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Plan, ReplicaPlacement
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names


def table_two_variants():
    caps = {
        "small": {NAMES[0]: 6.0, NAMES[1]: 2.0, NAMES[2]: 0.3, NAMES[3]: 0.2},
        "big": {NAMES[0]: 8.0, NAMES[1]: 3.0, NAMES[2]: 4.0, NAMES[3]: 1.5},
    }
    return synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB,
                           start_time_s={"small": 20.0, "big": 40.0}, class_names=NAMES)


def poisson_trace(rate: float, duration: float, seed: int, inp=(100, 600), out=(10, 120)) -> Trace:
    rng = np.random.default_rng(seed)
    n = int(rate * duration)
    arr = np.sort(rng.uniform(0, duration, n))
    arr -= arr[0]
    return Trace(arr, rng.integers(*inp, n), rng.integers(*out, n), name="poisson")


def test_littles_law_and_throughput_conservation_on_steady_load() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    tr = poisson_trace(4.0, 900.0, seed=1)
    res = Simulation(tr, table, cluster, static_plan(cluster, table, "small"), routing="round-robin",
                     options=SimOptions(sample_interval_s=0.5)).run()
    recs = res.requests
    assert len(recs) == len(tr)
    assert all(r["finish_s"] is not None for r in recs)  # below capacity: everything completes
    assert sum(r["generated_tokens"] for r in recs) == int(np.sum(tr.output_tokens))
    m = summarise(res, slo_ttft_s=10, slo_tpot_s=1)
    offered = len(tr) / tr.duration_s
    assert m["throughput_avg_rps"] == pytest.approx(offered, rel=0.02)
    # Little's law: time-averaged requests in the system = arrival rate x mean time in system
    samples = np.array([s["in_system"] for s in res.timeline[:-1]])
    big_l = samples.mean()
    e2e = np.array([r["finish_s"] - r["arrival_s"] for r in recs])
    end = res.timeline[-1]["time_s"]
    assert big_l == pytest.approx(len(recs) / end * e2e.mean(), rel=0.05)


def test_same_seed_gives_the_same_results() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    runs = []
    for _ in range(2):
        tr = poisson_trace(6.0, 300.0, seed=7)
        ctrl = Controller(make_forecaster("ewma"), make_planner("greedy"), cluster, table, DEFAULT_SCHEME,
                          horizon_s=60, min_history=3)
        res = Simulation(tr, table, cluster, static_plan(cluster, table, "small"), controller=ctrl,
                         options=SimOptions(control_interval_s=20, history_bin_s=20, monitor_window_s=20)).run()
        runs.append(res)
    assert runs[0].requests == runs[1].requests
    assert runs[0].decisions == runs[1].decisions
    assert runs[0].transitions == runs[1].transitions


def shifting_trace() -> Trace:
    """5 min of short requests, then 5 min of long prompts: the mix shifts."""
    a = poisson_trace(3.0, 300.0, seed=2, inp=(100, 500), out=(10, 100))
    b = poisson_trace(2.0, 300.0, seed=3, inp=(2500, 3500), out=(10, 100))
    arr = np.concatenate([a.arrival_s, b.arrival_s + 300.0])
    return Trace(arr, np.concatenate([a.input_tokens, b.input_tokens]),
                 np.concatenate([a.output_tokens, b.output_tokens]), name="shift")


def test_controller_decides_the_same_in_simulation_as_called_directly() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)

    def controller() -> Controller:
        return Controller(make_forecaster("ewma"), make_planner("greedy"), cluster, table, DEFAULT_SCHEME,
                          horizon_s=60, min_history=3)

    res = Simulation(shifting_trace(), table, cluster, static_plan(cluster, table, "small"), controller=controller(),
                     options=SimOptions(control_interval_s=20, history_bin_s=20, monitor_window_s=20,
                                        record_controller_inputs=True)).run()
    assert len(res.decisions) == len(res.controller_inputs) >= 25
    assert any(d["changed"] for d in res.decisions)
    direct = controller()
    replayed = [direct.tick(x["now_s"], x["snapshot"], x["history_ts"], x["history_rates"], x["current"]).to_dict()
                for x in res.controller_inputs]
    strip = [{k: v for k, v in d.items() if k != "outcome"} for d in res.decisions]
    assert [{k: v for k, v in d.items() if k != "outcome"} for d in replayed] == strip
    assert {d["outcome"] for d in res.decisions} <= {"pending", "unchanged"}


def test_a_shift_of_mix_switches_with_costs_and_loses_no_request() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    ctrl = Controller(make_forecaster("ewma"), make_planner("greedy"), cluster, table, DEFAULT_SCHEME,
                      horizon_s=60, min_history=3)
    tr = shifting_trace()
    res = Simulation(tr, table, cluster, static_plan(cluster, table, "small"), controller=ctrl,
                     options=SimOptions(control_interval_s=20, history_bin_s=20, monitor_window_s=20)).run()
    assert res.transitions, "the change of mix must trigger a switch"
    started = [t for t in res.transitions if t["started"] > 0 and t["status"] == "applied"]
    assert started and all(t["duration_s"] >= 20.0 - 1e-9 for t in started)  # start time is not free
    # the big variant serves after the shift
    late = [s for s in res.timeline if s["time_s"] > 450]
    assert any(s["replicas"].get("big", 0) > 0 for s in late)
    # nothing lost: every request finished, or was aborted/refused explicitly
    for r in res.requests:
        assert r["finish_s"] is not None or r["aborted"] or r["refused"]
    assert len(res.requests) == len(tr)


def test_requests_no_replica_can_hold_are_refused() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    tr = Trace(np.array([0.0, 1.0]), np.array([100, 20000]), np.array([10, 10]))
    res = Simulation(tr, table, cluster, static_plan(cluster, table, "small")).run()
    assert [r["refused"] for r in res.requests] == [False, True]
    assert res.requests[0]["finish_s"] is not None


def test_make_before_break_when_memory_allows() -> None:
    table = table_two_variants()
    cluster = ClusterSpec.homogeneous(1, 4, "a100-80gb", 80 * GIB)
    start = Plan(replicas=[ReplicaPlacement(variant="small", node="node0", device_ids=(0,))],
                 routing={c: {"small": 1.0} for c in NAMES})
    target = Plan(replicas=[ReplicaPlacement(variant="big", node="node0", device_ids=(2, 3))],
                  routing={c: {"big": 1.0} for c in NAMES})

    class PinnedController:  # a controller stand-in that asks for one switch at t=10 s
        def tick(self, now_s, snapshot, history_ts, history_rates, current):
            from oserve.control.controller import Decision
            from oserve.types import Demand

            plan = target if now_s >= 10 else start
            return Decision(now_s, {}, {}, Demand(rates_rps={}), plan, plan is not current, "test")

    tr = poisson_trace(2.0, 120.0, seed=4)
    res = Simulation(tr, table, cluster, start, controller=PinnedController(),
                     options=SimOptions(control_interval_s=10, drain_timeout_s=30, stop_time_s=5)).run()
    (t,) = res.transitions
    assert t["make_before_break"] and t["status"] == "applied"
    assert t["submitted_s"] == 10.0 and t["started"] == 1 and t["drained"] == 1
    # big is ready at 10 + 40 s; the small one then drains and stops (5 s) after its last request
    assert t["finished_s"] >= 55.0
    at_30 = next(s for s in res.timeline if s["time_s"] >= 30)
    assert at_30["replicas"] == {"small": 1} and at_30["starting"] == 1
    # requests arriving before the new replica is ready were still served by the old one
    early = [r for r in res.requests if r["arrival_s"] < 50]
    assert all(r["variant"] == "small" for r in early)
    assert all(r["variant"] == "big" for r in res.requests if r["arrival_s"] > 51)
