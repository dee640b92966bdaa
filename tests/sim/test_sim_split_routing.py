"""Routing splits in the sim-scored guard: a minority variant that takes part of a heavy class, scored in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.sim.scored_planner import SimScoredPlanner
from oserve.types import Demand

CONV = "data/traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
TP2, TP4 = "llama-2-70b-int8-tp2", "llama-2-70b-int8-tp4"


def _conv_setup(scale: float):
    """Llama-2-70B on 4 x 8 A100, the Azure conv trace's first 300 s: its per-class lengths and ``scale`` x its mean
    per-class rate."""
    from oserve.compose.capacity import mean_demand
    from oserve.compose.simulation import class_lengths, load_traces
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.policies import restrict_table
    from oserve.workload.transforms import clip_tokens

    table = restrict_table(ProfileTable.load("examples/profiles/a100-80gb-mixed.json"), model="llama-2-70b")
    cfg = SimConfig(table="examples/profiles/a100-80gb-mixed.json")
    scheme = cfg.classes.to_scheme()
    trace = clip_tokens(load_traces([CONV], duration_s=300), max_total=4096)
    demand = mean_demand(trace, scheme)
    demand = Demand(rates_rps={c: r * scale for c, r in demand.rates_rps.items()})
    return table, cfg.cluster.spec(), scheme, class_lengths(trace, scheme), demand


def _mix(prob, tp2: int, tp4: int):
    from oserve.policies.base import Allocation

    counts = np.zeros(prob.fits.shape, np.int64)
    counts[prob.variants.index(TP2), 0] = tp2
    counts[prob.variants.index(TP4), 0] = tp4
    return Allocation(counts, reason="mix")


def test_split_candidates_keep_a_fraction_of_the_minoritys_own_classes_and_move_the_rest():
    # pure: 14 x TP2 + 1 x TP4 with the planner's routing (the table gives TP2 no capacity for 4,000-token prompts,
    # so long-in/short-out goes wholly to TP4, and a part of short-in/short-out pools onto it); each split keeps
    # f of long-in/short-out on TP4 and sends the rest, and every class TP4 took only a minority of, to TP2
    from oserve.policies.base import build_plan
    from oserve.policies.problem import ObjectiveWeights, build_problem

    table, cluster, scheme, lengths, demand = _conv_setup(6.7)
    prob = build_problem(cluster, table, demand, None, ObjectiveWeights())
    alloc = _mix(prob, 14, 1)
    plan = build_plan(prob, alloc, cluster, table, demand, None, "test")
    assert plan.routing["long-in/short-out"] == {TP4: 1.0}
    assert 0 < plan.routing["short-in/short-out"][TP4] < 0.5
    p = SimScoredPlanner("milp", lengths=lengths, scheme=scheme, split_fractions=(0.6, 0.4))
    got = p._split_candidates(prob, {"mix:a": alloc}, {"mix:a": plan}, ["mix:a", "mix:not-built"])
    assert [label for label, _ in got] == ["mix:a @0.4", "mix:a @0.6"]  # sorted fractions
    ci = {c: i for i, c in enumerate(prob.classes)}
    t2, t4 = prob.variants.index(TP2), prob.variants.index(TP4)
    for (_, a), f in zip(got, (0.4, 0.6), strict=True):
        assert a.fixed_routing and np.array_equal(a.counts, alloc.counts)
        ls = a.served[ci["long-in/short-out"]]
        assert ls[t4] == pytest.approx(f * prob.demand[ci["long-in/short-out"]])
        assert ls[t2] == pytest.approx((1 - f) * prob.demand[ci["long-in/short-out"]])
        ss = a.served[ci["short-in/short-out"]]
        assert ss[t4] == 0 and ss[t2] == pytest.approx(prob.demand[ci["short-in/short-out"]])
        np.testing.assert_allclose(a.served.sum(axis=1), prob.demand)  # nothing dropped
        # the plan routes long prompts to TP2 too, though the table rates TP2 0 for them: the split was measured
        routed = build_plan(prob, a, cluster, table, demand, None, "test").routing
        assert routed["long-in/short-out"] == pytest.approx({TP2: 1 - f, TP4: f})
        assert routed["short-in/short-out"] == {TP2: 1.0}
    # a mix that sends its minority nothing has nothing to split; no fractions: no candidates
    bare = build_plan(prob, _mix(prob, 16, 0), cluster, table, demand, None, "test")
    assert p._split_candidates(prob, {"m": _mix(prob, 16, 0)}, {"m": bare}, ["m"]) == []
    assert SimScoredPlanner("milp")._split_candidates(prob, {"mix:a": alloc}, {"mix:a": plan}, ["mix:a"]) == []


def test_a_routing_the_table_rates_zero_is_dropped_unless_it_is_fixed():
    from oserve.policies.base import Allocation, build_plan
    from oserve.policies.problem import ObjectiveWeights, build_problem

    table, cluster, scheme, _, demand = _conv_setup(1.0)
    prob = build_problem(cluster, table, demand, None, ObjectiveWeights())
    alloc = _mix(prob, 14, 1)
    served = np.zeros((len(prob.classes), len(prob.variants)))
    served[:, prob.variants.index(TP2)] = prob.demand
    for fixed in (False, True):
        a = Allocation(alloc.counts, served.copy(), fixed_routing=fixed)
        r = build_plan(prob, a, cluster, table, demand, None, "test").routing["long-in/short-out"]
        assert r == ({TP2: 1.0} if fixed else {TP4: 1.0})  # not fixed: only where the table gives capacity


def test_conv_demand_past_capacity_gets_the_split_the_simulator_rates_higher():
    # 70B conv at 6.7x its mean rate: 16 x int8 TP2 is the best single-variant plan; with splits the guard compares
    # candidates at TP2's own simulated capacity (the MILP plan's is far below it) and picks 14 x TP2 + 1 x TP4 with
    # part of the long prompts on TP4. On the trace the same fixed plan carries 6.81-7.05x (fractions 0.8-0.6) vs
    # 16 x TP2's 6.66x (bench/results/split_routing.json).
    table, cluster, scheme, lengths, demand = _conv_setup(6.7)
    off = SimScoredPlanner("milp", lengths=lengths, scheme=scheme, n_requests=600)
    assert off.plan(cluster, table, demand).replica_counts() != {TP2: 14, TP4: 1}
    p = SimScoredPlanner("milp", lengths=lengths, scheme=scheme, n_requests=600, split_fractions=(0.4, 0.6, 0.8))
    plan = p.plan(cluster, table, demand)
    assert plan.replica_counts() == {TP2: 14, TP4: 1}, (plan.reason, p.last_overload_scores)
    s = p.last_overload_scores
    best = max(s, key=lambda k: s[k])
    assert best.startswith("mix:14 x llama-2-70b-int8-tp2 + 1 x llama-2-70b-int8-tp4 @") and plan.reason.startswith(
        f"sim-scored: {best}")
    assert s[best] > s[f"static:{TP2}"] > s["inner"]
    f = float(best.rpartition("@")[2])
    assert plan.routing["long-in/short-out"] == pytest.approx({TP2: 1 - f, TP4: f})
    assert plan.routing["short-in/short-out"] == {TP2: 1.0}


@pytest.mark.parametrize("bad", [(0.0,), (1.0,), (0.5, float("nan")), (-0.2,)])
def test_bad_split_fractions_name_the_field(bad):
    with pytest.raises(ConfigError) as e:
        SimScoredPlanner("milp", split_fractions=bad)
    assert e.value.field == "planner.split_fractions"


def test_sim_config_split_fractions_are_checked_and_reach_the_guard():
    from pydantic import ValidationError

    from oserve.compose.simulation import sim_scored
    from oserve.sim.config import SimConfig

    with pytest.raises(ValidationError, match="sim_split_fractions"):
        SimConfig(table="examples/profiles/a100-80gb-mixed.json", sim_split_fractions=[1.5])
    cfg = SimConfig(table="examples/profiles/a100-80gb-mixed.json", sim_scored_plans=True,
                    sim_split_fractions=[0.8, 0.5])
    g = sim_scored("milp", cfg, cfg.classes.to_scheme(), None)
    assert g.split_fractions == (0.5, 0.8) and not math.isnan(g.split_fractions[0])


def test_a_running_split_is_scored_as_it_runs():
    # the running 14 x TP2 + 1 x TP4 routes part of the long prompts to TP2, which the table rates 0 for them: the
    # guard scores the running plan with that routing (the table's would send them all to TP4, a plan that never
    # ran); a running routing the table could have made, or one that leaves a class with demand unplaced, is not used
    from oserve.policies.base import build_plan
    from oserve.policies.problem import ObjectiveWeights, build_problem

    table, cluster, scheme, _, demand = _conv_setup(6.7)
    prob0 = build_problem(cluster, table, demand, None, ObjectiveWeights())
    p = SimScoredPlanner("milp", split_fractions=(0.6,))
    mix = _mix(prob0, 14, 1)
    planned = build_plan(prob0, mix, cluster, table, demand, None, "t")
    (_, split), = p._split_candidates(prob0, {"mix:a": mix}, {"mix:a": planned}, ["mix:a"])
    running = build_plan(prob0, split, cluster, table, demand, None, "t")
    prob = build_problem(cluster, table, demand, running, ObjectiveWeights())
    served = p._running_routing(prob)
    ci = prob.classes.index("long-in/short-out")
    assert served is not None and served[ci, prob.variants.index(TP2)] == pytest.approx(0.4 * prob.demand[ci])
    np.testing.assert_allclose(served.sum(axis=1), prob.demand)
    assert p._running_routing(build_problem(cluster, table, demand, planned, ObjectiveWeights())) is None
    unplaced = running.model_copy(update={"routing": {**running.routing, "short-in/short-out": {}}})
    assert p._running_routing(build_problem(cluster, table, demand, unplaced, ObjectiveWeights())) is None


def test_mixes_walk_from_the_inner_plan_when_it_is_the_single_variant_plan():
    # the control loop's planner (hysteresis with the single-variant floor) proposes 16 x TP2 itself, so static:TP2
    # is not a candidate of its own: the mixes must still start from TP2 (before, they walked from int8 TP4)
    from oserve.policies.base import Allocation
    from oserve.policies.problem import ObjectiveWeights, build_problem

    table, cluster, scheme, lengths, demand = _conv_setup(6.7)
    prob = build_problem(cluster, table, demand, None, ObjectiveWeights())
    cands = {"inner": _mix(prob, 16, 0), f"static:{TP4}": Allocation(_mix(prob, 0, 8).counts, equal_routing=True)}
    scores = {"inner": 0.82, f"static:{TP4}": 0.66}
    got = [label for label, _ in SimScoredPlanner("milp", mix_search=2, split_fractions=(0.6,))._mix_candidates(
        prob, cands, scores)]
    assert got == [f"mix:14 x {TP2} + 1 x {TP4}", f"mix:12 x {TP2} + 2 x {TP4}"]
    # without splits the default guard is unchanged: the walk starts from static:V only
    got = [label for label, _ in SimScoredPlanner("milp", mix_search=2)._mix_candidates(prob, cands, scores)]
    assert got == [f"mix:2 x {TP2} + 7 x {TP4}", f"mix:4 x {TP2} + 6 x {TP4}"]


def test_a_split_must_beat_the_best_unsplit_plan_by_the_margin():
    # pure: only the simulation on the mean class mix vouches for a split (the table rates its majority variant 0 for
    # the class it shares), and a burst toward that class is what it is most exposed to (70B code: 12 x TP2 + 2 x
    # TP4 @0.4 scored 0.607 vs 16 x TP2's 0.595 and kept 0.489 of the long-prompt burst vs 0.869,
    # bench/results/guard_decisions.json); a mix with the planner's routing needs no margin over one variant
    from oserve.policies.base import Allocation
    from oserve.policies.problem import ObjectiveWeights, build_problem

    table, cluster, scheme, lengths, demand = _conv_setup(1.0)
    prob = build_problem(cluster, table, demand, None, ObjectiveWeights())
    split = _mix(prob, 12, 2)
    split = Allocation(split.counts, np.zeros((len(prob.classes), len(prob.variants))), "split", fixed_routing=True)
    cands = {"static:tp2": _mix(prob, 16, 0), "mix:10+3": _mix(prob, 10, 3), "mix:a @0.4": split}
    p = SimScoredPlanner("milp", split_fractions=(0.4,), min_gain_fraction=0.05)
    scores = {"static:tp2": 0.595, "mix:10+3": 0.55, "mix:a @0.4": 0.607}
    assert p._prefer_unsplit("mix:a @0.4", scores, cands) == "static:tp2"
    scores["mix:10+3"] = 0.60  # the best unsplit plan may be a mix itself
    assert p._prefer_unsplit("mix:a @0.4", scores, cands) == "mix:10+3"
    scores["mix:a @0.4"] = 0.60 * 1.05 + 1e-6  # past the margin: the split wins
    assert p._prefer_unsplit("mix:a @0.4", scores, cands) == "mix:a @0.4"
    assert p._prefer_unsplit("mix:10+3", {"mix:10+3": 0.5, "static:tp2": 0.499}, cands) == "mix:10+3"  # no margin
    assert p._prefer_unsplit("mix:a @0.4", {"mix:a @0.4": 0.5}, cands) == "mix:a @0.4"  # nothing unsplit scored
