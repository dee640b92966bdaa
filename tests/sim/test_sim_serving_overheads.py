"""Serving-path costs in the simulator: the prefill-only fixed cost, per-iteration and per-request
overheads, and measuring them (and the noise of a p99) from real replay records."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sim_replica_support import serve_alone

from oserve.errors import ConfigError
from oserve.profiles.iteration import IterationTimeModel
from oserve.sim.config import ContentionConfig, SimConfig
from oserve.sim.contention import NO_CONTENTION, ContentionModel
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.fidelity import bootstrap_interval, quiet_requests, serving_overheads
from oserve.sim.policies import static_plan
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.request import SimRequest
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

MODEL = IterationTimeModel(a=0.03, b=6e-4, c=6e-7, d=0.025, e=1.4e-3, f=1e-7)


def params(**kw: object) -> ReplicaParams:
    base = {"variant": "v", "iteration": MODEL, "max_num_seqs": 8, "max_num_batched_tokens": 2048,
            "max_model_len": 4096, "kv_capacity_tokens": 16 * 1024}
    return ReplicaParams(**{**base, **kw})  # type: ignore[arg-type]


def test_a_lone_prompt_costs_the_profiled_prefill_time_with_fixed_cost_a() -> None:
    v = synthetic_table({"v": {n: 5.0 for n in DEFAULT_SCHEME.names}}, {"v": 1}, memory_per_device_bytes=40 * GIB,
                        class_names=DEFAULT_SCHEME.names).variants["v"]
    v = v.model_copy(update={"iteration": MODEL})
    legacy = serve_alone(SimReplica("r", ReplicaParams.from_profile(v)), out=1)
    fixed_a = serve_alone(SimReplica("r", ReplicaParams.from_profile(v, prefill_only_fixed="a")), out=1)
    assert legacy.first_token_s == pytest.approx(MODEL.mixed_step_s(0, 0, 300), rel=1e-12)  # default: a + d
    assert fixed_a.first_token_s == pytest.approx(MODEL.prefill_s(300), rel=1e-12)
    assert legacy.first_token_s - fixed_a.first_token_s == pytest.approx(MODEL.d, rel=1e-9)
    with pytest.raises(ConfigError) as ei:
        ReplicaParams.from_profile(v, prefill_only_fixed="d")
    assert ei.value.field == "prefill_only_fixed"


@pytest.mark.parametrize("fast_forward", [True, False])
def test_the_step_overhead_is_paid_by_every_iteration_and_stretched_by_the_slowdown(fast_forward: bool) -> None:
    def run(overhead: float, slow: float) -> SimRequest:
        rep = SimReplica("r", params(prefill_only_fixed_s=MODEL.a), fast_forward=fast_forward)
        rep.step_overhead_s, rep.slowdown = overhead, slow
        return serve_alone(rep)

    base, over, both = run(0.0, 1.0), run(0.004, 1.0), run(0.004, 1.5)
    assert over.first_token_s == pytest.approx(base.first_token_s + 0.004, rel=1e-9)
    # one prefill iteration, then 19 decode steps: 20 iterations in all
    assert over.finish_s == pytest.approx(base.finish_s + 20 * 0.004, rel=1e-9)
    assert both.finish_s == pytest.approx(1.5 * over.finish_s, rel=1e-9)


def _sim(contention: ContentionModel, arrivals: np.ndarray, prefill_only_fixed: str = "a") -> list[dict]:
    names = DEFAULT_SCHEME.names
    table = synthetic_table({"v": {n: 5.0 for n in names}}, {"v": 1}, memory_per_device_bytes=40 * GIB,
                            class_names=names)
    table = table.model_copy(update={"variants": {"v": table.variants["v"].model_copy(update={"iteration": MODEL})}})
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    n = len(arrivals)
    rng = np.random.default_rng(5)
    tr = Trace(arrivals, rng.integers(20, 200, n), rng.integers(2, 40, n), name="t")
    res = Simulation(tr, table, cluster, static_plan(cluster, table, "v"), routing="plan",
                     options=SimOptions(contention=contention, prefill_only_fixed=prefill_only_fixed)).run()
    return sorted(res.requests, key=lambda q: q["rid"])


def test_the_request_overhead_delays_what_the_client_sees_not_the_engine() -> None:
    arr = np.sort(np.random.default_rng(1).uniform(0, 20, 60))
    base = _sim(NO_CONTENTION, arr)
    late = _sim(ContentionModel(request_overhead_s=0.05), arr)
    for b, q in zip(base, late, strict=True):
        assert q["first_token_s"] == pytest.approx(b["first_token_s"] + 0.05, abs=1e-9)
        assert q["finish_s"] == pytest.approx(b["finish_s"] + 0.05, abs=1e-9)
        assert q["replica"] == b["replica"]


def _as_replay(sim: list[dict]) -> list[dict]:
    """Simulated records in the real replay's record form."""
    return [{"scheduled_s": q["arrival_s"], "send_s": q["arrival_s"], "prompt_tokens": q["input_tokens"],
             "output_tokens": q["generated_tokens"], "ttft_s": q["first_token_s"] - q["arrival_s"],
             "e2e_s": q["finish_s"] - q["arrival_s"], "ok": True} for q in sim]


@pytest.mark.parametrize("whole_life", [True, False])
def test_serving_overheads_recover_the_overheads_a_replay_was_made_with(whole_life: bool) -> None:
    # requests 5 s apart are all alone; the "real" replay is the simulator with known overheads
    arr = np.arange(20) * 5.0
    real = _as_replay(_sim(ContentionModel(step_overhead_s=0.004, request_overhead_s=0.007), arr))
    got = serving_overheads([(real, _sim(NO_CONTENTION, arr))], whole_life=whole_life)
    assert got["quiet_requests"] == 20 and got["whole_life"] is whole_life
    assert got["step_overhead_s"] == pytest.approx(0.004, abs=1e-9)
    assert got["request_overhead_s"] == pytest.approx(0.007, abs=1e-9)


def test_quiet_requests_are_those_sent_with_nothing_else_in_flight() -> None:
    recs = [{"send_s": 0.0, "ttft_s": 0.1, "e2e_s": 1.0, "output_tokens": 5},   # alone at send; 1 joins at 0.5
            {"send_s": 0.5, "ttft_s": 0.1, "e2e_s": 1.0, "output_tokens": 5},   # 0 still in flight
            {"send_s": 3.0, "ttft_s": 0.1, "e2e_s": 0.5, "output_tokens": 5},   # alone all its life
            {"send_s": 4.0, "ttft_s": None, "e2e_s": None, "ok": False}]         # failed: never quiet
    assert quiet_requests(recs).tolist() == [True, False, True, False]
    assert quiet_requests(recs, whole_life=True).tolist() == [False, False, True, False]


def test_bootstrap_interval_brackets_the_percentile_and_narrows_with_more_requests() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.lognormal(0, 1, 50), rng.lognormal(0, 1, 5000)
    lo_s, hi_s = bootstrap_interval(small, 99)
    lo_l, hi_l = bootstrap_interval(large, 99)
    assert lo_l <= np.percentile(large, 99) <= hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_interval([float("nan")], 99) is None


def test_the_new_contention_fields_are_checked_and_reach_the_model() -> None:
    cc = ContentionConfig(step_overhead_s=0.004, request_overhead_s=0.007)
    assert cc.model() == ContentionModel(0.0, 0.0, 0.004, 0.007) and cc.model().enabled
    for key in ("step_overhead_s", "request_overhead_s"):
        with pytest.raises(ValidationError) as e:
            ContentionConfig.model_validate({key: -0.001})
        assert e.value.errors()[0]["loc"] == (key,)
        with pytest.raises(ConfigError) as ei:
            ContentionModel(**{key: float("inf")})
        assert ei.value.field == key


def test_every_entry_point_refuses_a_bad_prefill_only_fixed_with_the_same_error() -> None:
    from oserve.sim.replica import PREFILL_ONLY_FIXED, check_prefill_only_fixed
    from oserve.sim.scored_planner import SimScoredPlanner

    assert [check_prefill_only_fixed(c) for c in PREFILL_ONLY_FIXED] == list(PREFILL_ONLY_FIXED)
    v = synthetic_table({"v": {n: 5.0 for n in DEFAULT_SCHEME.names}}, {"v": 1}, memory_per_device_bytes=40 * GIB,
                        class_names=DEFAULT_SCHEME.names).variants["v"]
    errors = []
    for build in (lambda: check_prefill_only_fixed("d"), lambda: SimOptions(prefill_only_fixed="d"),
                  lambda: ReplicaParams.from_profile(v, prefill_only_fixed="d"),
                  lambda: SimScoredPlanner("milp", prefill_only_fixed="d")):
        with pytest.raises(ConfigError) as ei:
            build()
        errors.append((str(ei.value), ei.value.field, ei.value.allowed))
    assert errors == [("prefill_only_fixed must be one of ('a+d', 'a'), got 'd'", "prefill_only_fixed", "a+d, a")] * 4


def test_prefill_only_fixed_is_validated_in_options_and_config() -> None:
    with pytest.raises(ConfigError) as ei:
        SimOptions(prefill_only_fixed="b")
    assert ei.value.field == "prefill_only_fixed"
    with pytest.raises(ValidationError) as e:
        SimConfig.model_validate({"table": "t.json", "prefill_only_fixed": "b"})
    assert e.value.errors()[0]["loc"] == ("prefill_only_fixed",)
    assert SimConfig(table="t.json").prefill_only_fixed == "a+d"
