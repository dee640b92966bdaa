"""Nodes that leave or join: the pure relocation rule, Orchestrator.update_cluster on the fake backend,
and the stack's cluster watch with a fake cluster source whose nodes the test changes."""

from __future__ import annotations

import asyncio

import pytest
from orch_fakes import FakeForecaster, make_table, plan_of, spec_factory

from oserve.backends.base import ClusterSource
from oserve.clock import WallClock
from oserve.compose.stack import watch_cluster
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.control.resources import ResourceModel
from oserve.control.rules import relocate_plan
from oserve.errors import ConfigError
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend
from oserve.types import DEFAULT_SCHEME, ClusterSpec, NodeSpec, Plan
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(30)
GIB = 1024**3


def cluster_of(*names: str, devices: int = 4, device_type: str = "cpu") -> ClusterSpec:
    return ClusterSpec(nodes=[NodeSpec(name=n, device_type=device_type, devices=devices, device_memory_bytes=4 * GIB)
                              for n in names])


class SpreadPlanner:
    """Two 'fast' replicas spread over the cluster's nodes (round robin by name), whatever the demand."""

    def __init__(self) -> None:
        self.clusters: list[list[str]] = []

    def plan(self, cluster: ClusterSpec, table, demand, current) -> Plan:
        names = sorted(n.name for n in cluster.nodes)
        self.clusters.append(names)
        return plan_of(*[("fast", names[i % len(names)], (i // len(names),)) for i in range(2)])


class FakeClusterBackend(FakeBackend):
    """A fake backend that is also a :class:`ClusterSource`; the test sets :attr:`nodes`."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.refreshes = 0

    @property
    def cluster(self) -> ClusterSpec:
        return cluster_of(*self.nodes)

    def refresh_cluster(self) -> object:
        self.refreshes += 1
        return self.cluster


def build(backend: FakeBackend, cluster: ClusterSpec, initial: Plan, planner=None) -> Orchestrator:
    monitor = WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=5, history_s=60)
    options = OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, min_history=3)
    return Orchestrator.build(backend, FakeForecaster(), planner or SpreadPlanner(), cluster, make_table(),
                              router=Router(), monitor=monitor, spec_factory=spec_factory, options=options,
                              initial_plan=initial)


def nodes_of(plan: Plan | None) -> list[str]:
    return sorted(p.node for p in (plan.replicas if plan is not None else []))


def ready_nodes(orch: Orchestrator) -> list[str]:
    return sorted(m.placement.node for m in orch.switcher.replicas.values() if m.state == "ready")


# ----------------------------------------------------------------- the pure rule
def test_relocate_keeps_a_plan_without_gone_nodes():
    plan = plan_of(("fast", "a", (0,)), ("big", "b", (1,)))
    out = relocate_plan(plan, ResourceModel(cluster_of("a", "b"), make_table()))
    assert out.plan is plan and not out.changed


def test_relocate_moves_replicas_of_a_gone_node_where_memory_fits():
    plan = plan_of(("fast", "a", (0,)), ("fast", "b", (0,)), ("big", "b", (1,)))
    out = relocate_plan(plan, ResourceModel(cluster_of("a", "c"), make_table()))
    assert out.changed and not out.dropped
    assert [(old.node, new.node) for old, new in out.moved] == [("b", "c"), ("b", "a")]  # most free memory first
    assert nodes_of(out.plan) == ["a", "a", "c"]
    assert out.plan.routing == plan.routing
    assert "relocated 2" in out.plan.reason


def test_relocate_drops_what_fits_nowhere_and_renormalises_routing():
    # one device per node: node a holds one replica, so b's two replicas have room for one
    plan = plan_of(("fast", "a", (0,)), ("big", "b", (0,)), ("big", "b", (1,)), routing={
        c: {"fast": 0.5, "big": 0.5} for c in DEFAULT_SCHEME.names})
    res = ResourceModel(cluster_of("a", "c", devices=1), make_table(), share_cpu_cores=False)
    out = relocate_plan(plan, res)
    assert len(out.moved) == 1 and len(out.dropped) == 1
    assert nodes_of(out.plan) == ["a", "c"]
    assert out.plan.routing == plan.routing
    lone = relocate_plan(plan_of(("fast", "a", (0,)), ("big", "b", (0,)), routing={
        c: {"fast": 0.25, "big": 0.75} for c in DEFAULT_SCHEME.names}),
        ResourceModel(cluster_of("a", devices=1), make_table(), share_cpu_cores=False))
    assert [p.variant for p in lone.dropped] == ["big"]
    assert all(ws == {"fast": 1.0} for ws in lone.plan.routing.values())


def test_relocate_needs_a_node_of_the_variants_device_type():
    plan = plan_of(("fast", "b", (0,)))
    out = relocate_plan(plan, ResourceModel(cluster_of("g", device_type="h100"), make_table()))
    assert not out.moved and len(out.dropped) == 1 and not out.plan.replicas


def test_resource_model_with_cluster_keeps_its_knobs():
    res = ResourceModel(cluster_of("a", "b"), make_table(), share_cpu_cores=False)
    new = res.with_cluster(cluster_of("a"))
    assert new.nodes() == {"a"} and new.share_cpu_cores is False and new.table is res.table
    with pytest.raises(ConfigError) as exc:
        new.check(plan_of(("fast", "b", (0,))).replicas[0])
    assert exc.value.field == "plan.replicas.node"


# ----------------------------------------------------------------- the orchestrator
async def test_node_that_leaves_is_replanned_on_the_remaining_nodes():
    backend = FakeBackend()
    planner = SpreadPlanner()
    orch = build(backend, cluster_of("a", "b"), plan_of(("fast", "a", (0,)), ("fast", "b", (0,))), planner)
    await orch.start()
    try:
        assert ready_nodes(orch) == ["a", "b"]
        on_b = [m.replica_id for m in orch.switcher.replicas.values() if m.placement.node == "b"]
        taken = await orch.update_cluster(cluster_of("a"))
        assert taken == on_b
        assert planner.clusters[-1] == ["a"]  # the planner was asked at once, on the remaining node
        await orch.switcher.idle()
        assert ready_nodes(orch) == ["a", "a"]
        assert nodes_of(orch.target_plan) == ["a", "a"]
        assert orch.controller.cluster == cluster_of("a") and orch.switcher.resources.nodes() == {"a"}
        assert not any(m.replica_id in on_b for m in orch.switcher.replicas.values())
        assert backend.replicas[on_b[0]].state in ("stopped", "failed")
        assert orch.router.ready_count() == 2
        # the same cluster again is no change
        assert await orch.update_cluster(cluster_of("a")) == []
    finally:
        await orch.stop()


async def test_pinned_plan_moves_off_a_gone_node_and_a_joined_node_is_planned_on():
    backend = FakeBackend()
    planner = SpreadPlanner()
    orch = build(backend, cluster_of("a", "b"), plan_of(("fast", "a", (0,)), ("fast", "b", (0,))), planner)
    await orch.start()
    try:
        await orch.pin(plan_of(("fast", "a", (0,)), ("fast", "b", (0,)), ("big", "b", (1,))))
        await orch.switcher.idle()
        assert ready_nodes(orch) == ["a", "b", "b"]
        n_plans = len(planner.clusters)
        await orch.update_cluster(cluster_of("a"))
        await orch.switcher.idle()
        assert nodes_of(orch.controller.pinned) == ["a", "a", "a"]
        assert ready_nodes(orch) == ["a", "a", "a"]
        assert sorted(m.placement.variant for m in orch.switcher.replicas.values()) == ["big", "fast", "fast"]
        assert len(planner.clusters) == n_plans  # pinned: the planner is not asked
        await orch.unpin()
        await orch.update_cluster(cluster_of("a", "c"))  # a node joins: the planner uses it at once
        await orch.switcher.idle()
        assert planner.clusters[-1] == ["a", "c"]
        assert ready_nodes(orch) == ["a", "c"]
    finally:
        await orch.stop()


async def test_update_cluster_before_start_and_with_no_node():
    orch = build(FakeBackend(), cluster_of("a", "b"), plan_of(("fast", "b", (0,))))
    with pytest.raises(ConfigError) as exc:
        await orch.update_cluster(ClusterSpec(nodes=[]))
    assert exc.value.field == "cluster.nodes"
    assert await orch.update_cluster(cluster_of("a")) == []
    assert orch.controller.cluster == cluster_of("a")
    # the initial plan still names b: it is refused as a plan for this cluster
    with pytest.raises(ConfigError):
        await orch.start()


# ----------------------------------------------------------------- the composition root's watch
async def test_watch_cluster_forwards_node_changes_to_the_orchestrator():
    backend = FakeClusterBackend(["a", "b"])
    assert isinstance(backend, ClusterSource) and not isinstance(FakeBackend(), ClusterSource)
    orch = build(backend, backend.cluster, plan_of(("fast", "a", (0,)), ("fast", "b", (0,))))
    await orch.start()
    watch = asyncio.create_task(watch_cluster(backend, orch, 0.01))
    try:
        await asyncio.sleep(0.1)
        assert backend.refreshes >= 2 and ready_nodes(orch) == ["a", "b"]  # no change: nothing happens
        assert len(orch.switches) == 1
        backend.nodes = ["a"]
        for _ in range(200):
            await asyncio.sleep(0.02)
            if ready_nodes(orch) == ["a", "a"] and not orch.switcher.busy:
                break
        assert ready_nodes(orch) == ["a", "a"]
        assert nodes_of(orch.target_plan) == ["a", "a"]
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await orch.stop()
