"""plan_steps: the pure diff of real replicas against a target plan (no backend)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from orch_fakes import GIB, make_cluster, make_table, plan_of

from oserve.control.resources import ResourceModel
from oserve.control.rules import (
    LiveReplica,
    backed_off_starts,
    covered_classes,
    effective_routing,
    plan_steps,
    rollback_starts,
)
from oserve.types import DEFAULT_SCHEME, ClusterSpec, NodeSpec, ReplicaPlacement

SHORT = [c for c in DEFAULT_SCHEME.names if c.endswith("short-out")]
LONG = [c for c in DEFAULT_SCHEME.names if c.endswith("long-out")]


def live(*specs: tuple[str, str, tuple[int, ...]]) -> list[LiveReplica]:
    return [LiveReplica(f"r{i}", ReplicaPlacement(variant=v, node=n, device_ids=d), "ready")
            for i, (v, n, d) in enumerate(specs)]


def test_make_before_break_when_memory_allows():
    table = make_table()  # 4 GiB per replica
    res = ResourceModel(make_cluster(devices=4, memory_bytes=4 * GIB), table)  # pooled 16 GiB
    steps = plan_steps(live(("fast", "node0", (0,)), ("fast", "node0", (1,))),
                       plan_of(("big", "node0", (0,)), ("big", "node0", (1,))), res, table)
    assert steps.make_before_break and not steps.capacity_gap_classes
    assert len(steps.phases) == 1
    assert sorted(p.variant for p in steps.phases[0].starts) == ["big", "big"]
    assert sorted(steps.phases[0].drains) == ["r0", "r1"]
    # new replicas go to cores free in the final layout, here the target's own cores
    assert sorted(p.device_ids for p in steps.starts) == [(0,), (1,)]


def test_unchanged_plan_gives_no_steps_and_keeps_replicas():
    table = make_table()
    res = ResourceModel(make_cluster(), table)
    steps = plan_steps(live(("fast", "node0", (2,))), plan_of(("fast", "node0", (0,))), res, table)
    assert steps.empty and steps.keep == ("r0",)


def test_rolling_when_memory_is_short_keeps_every_class_served():
    table = make_table()
    res = ResourceModel(make_cluster(devices=2, memory_bytes=4 * GIB), table)  # room for 2 replicas
    steps = plan_steps(live(("fast", "node0", (0,)), ("fast", "node0", (1,))),
                       plan_of(("big", "node0", (0,)), ("big", "node0", (1,))), res, table)
    assert not steps.make_before_break and not steps.capacity_gap_classes
    kinds = [(len(ph.starts), len(ph.drains)) for ph in steps.phases]
    assert kinds == [(0, 1), (1, 1), (1, 0)]


def test_rolling_prefers_the_drain_that_keeps_each_class_covered():
    caps = {"short": dict.fromkeys(SHORT, 2.0), "long": dict.fromkeys(LONG, 2.0),
            "all": dict.fromkeys(DEFAULT_SCHEME.names, 1.0)}
    table = make_table(capacities=caps)
    res = ResourceModel(make_cluster(devices=3, memory_bytes=4 * GIB), table)  # room for 3 replicas
    cur = live(("short", "node0", (0,)), ("long", "node0", (1,)))
    steps = plan_steps(cur, plan_of(("all", "node0", (0,)), ("all", "node0", (1,))), res, table)
    assert not steps.capacity_gap_classes
    first = steps.phases[0]
    assert [p.variant for p in first.starts] == ["all"] and len(first.drains) == 1
    _assert_never_uncovered(cur, steps, table)


def test_unavoidable_gap_is_reported():
    table = make_table()
    res = ResourceModel(make_cluster(devices=1, memory_bytes=4 * GIB), table)  # one replica fits
    steps = plan_steps(live(("fast", "node0", (0,))), plan_of(("big", "node0", (0,))), res, table)
    assert steps.phases[0].forced and set(steps.capacity_gap_classes) == set(DEFAULT_SCHEME.names)


def test_gpu_device_memory_decides_overlap():
    table = make_table(memory_per_device_bytes=60 * GIB, capacities={
        "tp1": dict.fromkeys(DEFAULT_SCHEME.names, 1.0), "tp2": dict.fromkeys(DEFAULT_SCHEME.names, 3.0)},
        devices_per_replica={"tp1": 1, "tp2": 2}, device_type="a100-80gb")
    cluster = ClusterSpec(nodes=[NodeSpec(name="g0", device_type="a100-80gb", devices=4,
                                          device_memory_bytes=80 * GIB)])
    res = ResourceModel(cluster, table)
    assert not res.pooled("g0")
    # target names devices (0, 1) where tp1 runs on 0: the new replica moves to two free devices
    steps = plan_steps(live(("tp1", "g0", (0,))), plan_of(("tp2", "g0", (0, 1))), res, table)
    assert steps.make_before_break and steps.starts[0].device_ids == (1, 2)
    # with only 2 GPUs, it cannot overlap: drain first (the only replica: a reported gap)
    small = ClusterSpec(nodes=[NodeSpec(name="g0", device_type="a100-80gb", devices=2,
                                        device_memory_bytes=80 * GIB)])
    steps = plan_steps(live(("tp1", "g0", (0,))), plan_of(("tp2", "g0", (0, 1))), ResourceModel(small, table), table)
    assert not steps.make_before_break and steps.phases[0].drains == ("r0",) and not steps.phases[0].starts


def test_unplaceable_target_is_reported_not_attempted():
    table = make_table()
    res = ResourceModel(make_cluster(devices=1, memory_bytes=4 * GIB), table)
    steps = plan_steps([], plan_of(("fast", "node0", (0,)), ("fast", "node0", (0,))), res, table)
    assert len(steps.starts) == 2 and len(steps.unplaceable) == 1


def test_failed_replicas_are_cleaned_up_first():
    table = make_table()
    res = ResourceModel(make_cluster(), table)
    cur = [LiveReplica("dead", ReplicaPlacement(variant="fast", node="node0", device_ids=(0,)), "failed")]
    steps = plan_steps(cur, plan_of(("fast", "node0", (0,))), res, table)
    assert steps.cleanup == ("dead",) and len(steps.starts) == 1


def test_effective_routing_restricts_to_ready_variants():
    target = {"a": {"fast": 0.5, "big": 0.5}, "b": {"big": 1.0}}
    assert effective_routing(target, {"fast"}, {"b": {"fast": 1.0}}) == {"a": {"fast": 1.0}, "b": {"fast": 1.0}}
    assert effective_routing(target, set(), None) == {}


def _assert_never_uncovered(cur, steps, table):
    """Walk the phases: after each phase's drains, every protected class still has capacity."""
    by_id = {r.replica_id: r.placement.variant for r in cur}
    ready = [r.placement.variant for r in cur]
    target_cov = covered_classes([p.variant for p in steps.starts] + [by_id[k] for k in steps.keep], table)
    protected = covered_classes(ready, table) & target_cov
    for ph in steps.phases:
        ready += [p.variant for p in ph.starts]
        for rid in ph.drains:
            ready.remove(by_id[rid])
        if not ph.forced:
            assert protected <= covered_classes(ready, table), (ph, ready)


VARIANTS = ["short", "long", "all"]


@settings(max_examples=60, deadline=None)
@given(cur=st.lists(st.sampled_from(VARIANTS), min_size=1, max_size=4),
       tgt=st.lists(st.sampled_from(VARIANTS), min_size=1, max_size=4),
       room=st.integers(min_value=1, max_value=6), share=st.booleans())
def test_property_memory_never_exceeded_and_coverage_kept_unless_reported(cur, tgt, room, share):
    caps = {"short": dict.fromkeys(SHORT, 2.0), "long": dict.fromkeys(LONG, 2.0),
            "all": dict.fromkeys(DEFAULT_SCHEME.names, 1.0)}
    table = make_table(capacities=caps)
    res = ResourceModel(make_cluster(devices=4, memory_bytes=room * GIB), table, share_cpu_cores=share)
    # the node's memory pool holds `room` replicas (4 GiB each); the current ones must fit
    cur = cur[:room] if share else cur[: min(room, 4)]
    lv = live(*[(v, "node0", (i % 4,)) for i, v in enumerate(cur)])
    steps = plan_steps(lv, plan_of(*[(v, "node0", (i % 4,)) for i, v in enumerate(tgt)]), res, table)
    mem = [r.placement for r in lv]
    by_id = {r.replica_id: r.placement for r in lv}
    for ph in steps.phases:
        for p in ph.starts:
            assert res.fits(mem, p)
            mem.append(p)
        for rid in ph.drains:
            mem.remove(by_id[rid])
    if not steps.capacity_gap_classes:
        _assert_never_uncovered(lv, steps, table)
    placed = len(steps.keep) + len(steps.starts) - len(steps.unplaceable)
    assert placed == min(len(tgt), placed) and len(steps.keep) + len(steps.stops) == len(cur)


def test_spec_factory_from_templates_sets_cores_or_gpus():
    import pytest

    from oserve.backends.base import ReplicaSpec
    from oserve.control.specs import spec_factory_from_templates
    from oserve.errors import ConfigError

    tpl = ReplicaSpec(variant="x", model="/m", served_model_name="m", max_num_seqs=4)
    cluster = ClusterSpec(nodes=[NodeSpec(name="c", device_type="cpu", devices=2, device_memory_bytes=GIB),
                                 NodeSpec(name="g", device_type="a100-80gb", devices=8, device_memory_bytes=GIB)])
    f = spec_factory_from_templates({"bf16": tpl}, cluster)
    cpu = f(ReplicaPlacement(variant="bf16", node="c", device_ids=(1,)), "r1")
    gpu = f(ReplicaPlacement(variant="bf16", node="g", device_ids=(2, 3)), "r2")
    assert cpu.cpu_cores == (1,) and cpu.devices is None and cpu.variant == "bf16" and cpu.max_num_seqs == 4
    assert gpu.devices == (2, 3) and gpu.cpu_cores is None
    with pytest.raises(ConfigError) as e:
        f(ReplicaPlacement(variant="int8", node="c", device_ids=(0,)), "r3")
    assert e.value.field == "variants"


def test_exclusive_cpu_cores_roll_instead_of_sharing():
    table = make_table()
    cur = live(("fast", "node0", (0,)), ("fast", "node0", (1,)))
    tgt = plan_of(("big", "node0", (0,)), ("big", "node0", (1,)))
    shared = plan_steps(cur, tgt, ResourceModel(make_cluster(devices=2, memory_bytes=8 * GIB), table), table)
    assert shared.make_before_break  # memory for 4 replicas: cores shared for the overlap
    res = ResourceModel(make_cluster(devices=2, memory_bytes=8 * GIB), table, share_cpu_cores=False)
    steps = plan_steps(cur, tgt, res, table)
    assert not steps.make_before_break and not steps.capacity_gap_classes
    assert [(len(ph.starts), len(ph.drains)) for ph in steps.phases] == [(0, 1), (1, 1), (1, 0)]
    # each start lands on the core its phase's drain freed
    by_id = {r.replica_id: r.placement.device_ids for r in cur}
    assert steps.phases[1].starts[0].device_ids == by_id[steps.phases[0].drains[0]]


def test_backed_off_starts_only_while_the_back_off_runs_and_only_for_starts():
    failed = {("big", "node0"): 100.0}
    actual = plan_of(("fast", "node0", (0,)))
    wants_big = plan_of(("big", "node0", (0,)))
    assert backed_off_starts(wants_big, actual, failed, 99.0) == [("big", "node0")]
    assert backed_off_starts(wants_big, actual, failed, 100.0) == []
    assert backed_off_starts(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))), actual, failed, 0.0) == []
    running_big = plan_of(("big", "node0", (0,)))  # a plan that keeps a running 'big' starts none
    assert backed_off_starts(running_big, running_big, failed, 0.0) == []


def test_rollback_restarts_the_drained_replica_only_when_its_classes_lost_capacity():
    table = make_table()
    res = ResourceModel(make_cluster(devices=1, memory_bytes=4 * GIB), table)
    old = ReplicaPlacement(variant="fast", node="node0", device_ids=(0,))
    assert rollback_starts([old], [], [], res, table) == (old,)
    assert rollback_starts([old], ["big"], [], res, table) == ()  # 'big' serves every class still
    assert rollback_starts([old], [], [ReplicaPlacement(variant="big", node="node0", device_ids=(0,))],
                           res, table) == ()  # does not fit: the failed start still holds the memory
