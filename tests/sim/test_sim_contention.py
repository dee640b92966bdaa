"""Node contention: the slowdown factor, a slowed replica, and a shared node in a whole simulation."""

from __future__ import annotations

import numpy as np
import pytest
from sim_replica_support import serve_alone

from oserve.errors import ConfigError
from oserve.profiles.iteration import IterationTimeModel
from oserve.sim.config import ContentionConfig
from oserve.sim.contention import NO_CONTENTION, ContentionModel
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.policies import static_plan
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.request import SimRequest
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

MODEL = IterationTimeModel(a=0.004, b=2e-5, c=1e-9, d=0.01, e=1e-4, f=5e-8)


def test_factor_is_one_while_cores_are_free_and_grows_with_host_load_once_all_are_busy() -> None:
    cm = ContentionModel(host_cpu_s_per_token=0.01)
    # one of two cores busy: 50 tokens/s of host work (0.5 core) fits on the idle core
    assert cm.factor(busy_devices=1, node_devices=2, token_rate=50.0, other_busy=0) == 1.0
    # both cores busy: the 0.5 core of host work is shared out -> (2 + 0.5) / 2
    assert cm.factor(busy_devices=2, node_devices=2, token_rate=50.0, other_busy=1) == pytest.approx(1.25)
    assert NO_CONTENTION.factor(busy_devices=2, node_devices=2, token_rate=1e6, other_busy=1) == 1.0
    assert not NO_CONTENTION.enabled and cm.enabled


def test_colocated_term_multiplies_per_other_busy_replica() -> None:
    cm = ContentionModel(colocated_slowdown=0.1)
    assert cm.factor(busy_devices=3, node_devices=4, token_rate=0.0, other_busy=2) == pytest.approx(1.2)


@pytest.mark.parametrize("kw", [{"host_cpu_s_per_token": -1.0}, {"colocated_slowdown": float("nan")}])
def test_negative_or_nan_coefficients_are_refused_with_the_field_named(kw: dict) -> None:
    with pytest.raises(ConfigError) as ei:
        ContentionModel(**kw)
    assert ei.value.field == next(iter(kw))


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ConfigError):
        NO_CONTENTION.factor(busy_devices=1, node_devices=0, token_rate=0.0, other_busy=0)
    with pytest.raises(ConfigError):
        NO_CONTENTION.factor(busy_devices=1, node_devices=2, token_rate=-1.0, other_busy=0)


@pytest.mark.parametrize("fast_forward", [True, False])
def test_a_slowed_replica_stretches_every_iteration_by_the_factor(fast_forward: bool) -> None:
    def run(slow: float) -> SimRequest:
        p = ReplicaParams(variant="v", iteration=MODEL, max_num_seqs=8, max_num_batched_tokens=512,
                          max_model_len=4096, kv_capacity_tokens=16 * 1024)
        rep = SimReplica("r", p, fast_forward=fast_forward)
        rep.slowdown = slow
        return serve_alone(rep)

    base, slow = run(1.0), run(1.5)
    assert slow.first_token_s == pytest.approx(1.5 * base.first_token_s, rel=1e-12)
    assert slow.finish_s == pytest.approx(1.5 * base.finish_s, rel=1e-12)


def _shared_node_tpot(contention: ContentionModel, rate_rps: float) -> float:
    names = DEFAULT_SCHEME.names
    table = synthetic_table({"v": {n: 5.0 for n in names}}, {"v": 1}, memory_per_device_bytes=40 * GIB,
                            class_names=names)
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    rng = np.random.default_rng(3)
    n = int(rate_rps * 120)
    arr = np.sort(rng.uniform(0, 120, n))
    arr -= arr[0]
    tr = Trace(arr, rng.integers(50, 300, n), rng.integers(20, 80, n), name="t")
    res = Simulation(tr, table, cluster, static_plan(cluster, table, "v"), routing="round-robin",
                     options=SimOptions(contention=contention)).run()
    recs = [r for r in res.requests if r["finish_s"] is not None and r["generated_tokens"] > 1]
    assert len(recs) == n
    return float(np.mean([(r["finish_s"] - r["first_token_s"]) / (r["generated_tokens"] - 1) for r in recs]))


def test_contention_slows_a_shared_node_more_under_heavy_load_than_light() -> None:
    cm = ContentionModel(host_cpu_s_per_token=0.005, colocated_slowdown=0.1)
    light = _shared_node_tpot(cm, 0.5) / _shared_node_tpot(NO_CONTENTION, 0.5)
    heavy = _shared_node_tpot(cm, 20.0) / _shared_node_tpot(NO_CONTENTION, 20.0)
    assert light >= 1.0
    assert heavy > light + 0.05


def test_config_builds_the_model_and_refuses_negative_values() -> None:
    assert ContentionConfig(host_cpu_s_per_token=0.002).model() == ContentionModel(0.002, 0.0)
    with pytest.raises(ValueError):
        ContentionConfig(colocated_slowdown=-0.5)


def test_a_starting_replica_on_the_node_counts_as_busy_cores() -> None:
    from oserve.sim.loop import SimRun

    names = DEFAULT_SCHEME.names
    table = synthetic_table({"v": {n: 5.0 for n in names}}, {"v": 1}, memory_per_device_bytes=40 * GIB,
                            class_names=names)
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    tr = Trace(np.array([0.0]), np.array([10]), np.array([2]), name="t")
    sim = Simulation(tr, table, cluster, static_plan(cluster, table, "v"),
                     options=SimOptions(contention=ContentionModel(host_cpu_s_per_token=0.01)))
    run = SimRun(sim)
    p = sim.params["v"]
    a, b = SimReplica("a", p, "node0", (0,)), SimReplica("b", p, "node0", (1,))
    run.backend.replicas.clear()
    run.backend.replicas.update({"a": a, "b": b})
    a.last_token_rate = 100.0  # 1 core of host work
    b.state = "ready"
    assert run._slowdown(a, sim.options.contention) == pytest.approx(1.0)  # (1 + 1) / 2
    b.state = "starting"
    assert run._slowdown(a, sim.options.contention) == pytest.approx(1.5)  # (2 + 1) / 2


@pytest.mark.parametrize(("key", "value", "match"), [
    ("host_cpu_s_per_token", float("inf"), "finite"),
    ("colocated_slowdown", float("inf"), "finite"),
    ("colocated_slowdown", 1e9, "less than or equal to 10"),
    ("host_cpu_s_per_token", 5.0, "less than or equal to 1"),
])
def test_contention_config_refuses_non_finite_and_runaway_values(key, value, match):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=match) as e:
        ContentionConfig.model_validate({key: value})
    assert e.value.errors()[0]["loc"] == (key,)
    ContentionConfig.model_validate({key: 1.0})  # the bound itself is allowed
