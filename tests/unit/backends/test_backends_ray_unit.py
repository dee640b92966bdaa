"""The Ray backend's pure parts: the cluster read from Ray's node list, core mapping, error transport.

No Ray cluster is started; ``ray.nodes()`` entries are written out as data (the shape Ray 2.x returns).
"""

from __future__ import annotations

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.ray import RayBackend
from oserve.backends.ray_actor import RemoteError, actor_spec
from oserve.backends.ray_cluster import (
    RayClusterWatcher,
    cluster_from_ray_nodes,
    parse_cores,
    ray_node,
)
from oserve.errors import ConfigError, EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError

GiB = 1 << 30


def entry(node_id: str, *, alive: bool = True, resources: dict | None = None, labels: dict | None = None,
          host: str = "m1") -> dict:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0.1", "NodeManagerHostname": host,
            "Resources": resources or {}, "Labels": {"ray.io/node-id": node_id, **(labels or {})}}


def test_cpu_node_uses_cores_label_and_shares_memory_per_core() -> None:
    n = ray_node(entry("ab" * 28, resources={"CPU": 1.0, "memory": 8.0 * GiB},
                       labels={"oserve-node": "a", "oserve-cpu-cores": "2-3"}))
    assert n is not None
    assert (n.name, n.spec.device_type, n.spec.devices) == ("a", "cpu", 2)
    assert n.spec.device_memory_bytes == 4 * GiB
    assert n.physical_cores((1,)) == (3,)
    assert n.physical_cores((0, 1)) == (2, 3)
    with pytest.raises(ConfigError) as e:
        n.physical_cores((2,))
    assert e.value.field == "plan.replicas.device_ids" and e.value.allowed == "0..1"


def test_cpu_node_without_labels_counts_ray_cpus_and_gets_a_stable_name() -> None:
    n = ray_node(entry("0123456789abcdef" * 3, resources={"CPU": 4.0, "memory": 16.0 * GiB}, host="box"))
    assert n is not None
    assert (n.name, n.spec.devices, n.cpu_cores) == ("box-01234567", 4, None)
    assert n.physical_cores((3,)) == (3,)


def test_gpu_node_device_type_from_accelerator_and_memory_from_label_or_default() -> None:
    res = {"CPU": 32.0, "GPU": 8.0, "accelerator_type:H100": 1.0, "memory": 500.0 * GiB}
    n = ray_node(entry("cd" * 28, resources=res, labels={"oserve-device-memory-bytes": str(80 * GiB)}))
    assert n is not None and (n.spec.device_type, n.spec.devices, n.spec.device_memory_bytes) == ("h100", 8, 80 * GiB)
    n2 = ray_node(entry("cd" * 28, resources=res), default_gpu_memory_bytes=40 * GiB)
    assert n2 is not None and n2.spec.device_memory_bytes == 40 * GiB
    labelled = ray_node(entry("cd" * 28, resources=res, labels={"oserve-device-type": "H200"}),
                        default_gpu_memory_bytes=GiB)
    assert labelled is not None and labelled.spec.device_type == "h200"
    with pytest.raises(ConfigError) as e:
        ray_node(entry("cd" * 28, resources=res))
    assert e.value.field == "oserve-device-memory-bytes"


def test_node_without_devices_is_left_out() -> None:
    head = entry("ee" * 28, resources={"memory": 8.0 * GiB, "node:__internal_head__": 1.0})
    assert ray_node(head) is None


def test_cluster_skips_dead_nodes_and_refuses_duplicate_names() -> None:
    a = entry("aa" * 28, resources={"CPU": 1.0, "memory": GiB}, labels={"oserve-node": "a"})
    dead = entry("bb" * 28, alive=False, resources={"CPU": 1.0, "memory": GiB}, labels={"oserve-node": "b"})
    assert list(cluster_from_ray_nodes([a, dead])) == ["a"]
    twin = entry("cc" * 28, resources={"CPU": 1.0, "memory": GiB}, labels={"oserve-node": "a"})
    with pytest.raises(ConfigError, match="two Ray nodes"):
        cluster_from_ray_nodes([a, twin])


@pytest.mark.parametrize("text,cores", [("3", (3,)), ("0-3", (0, 1, 2, 3)), ("0-1_4-5", (0, 1, 4, 5))])
def test_parse_cores(text: str, cores: tuple[int, ...]) -> None:
    assert parse_cores(text) == cores


@pytest.mark.parametrize("text", ["", "x", "3-1", "0-1_1", "-2"])
def test_parse_cores_refuses_bad_lists(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_cores(text)
    assert e.value.field == "oserve-cpu-cores"


def test_watcher_reports_joins_and_leaves() -> None:
    a = entry("aa" * 28, resources={"CPU": 1.0, "memory": GiB}, labels={"oserve-node": "a"})
    b = entry("bb" * 28, resources={"CPU": 1.0, "memory": GiB}, labels={"oserve-node": "b"})
    listing = [a, b]
    w = RayClusterWatcher(list_nodes=lambda: listing)
    first = w.refresh()
    assert first.joined == ("a", "b") and first.left == () and first.changed
    assert not w.refresh().changed
    listing = [a, {**b, "Alive": False}]
    gone = w.refresh()
    assert gone.left == ("b",) and [n.name for n in gone.cluster.nodes] == ["a"]
    # A node that comes back under the same name with a new Ray id counts as a new node.
    listing = [a, {**b, "NodeID": "dd" * 28}]
    back = w.refresh()
    assert back.joined == ("b",) and back.left == ()


def test_actor_spec_maps_cores_and_leaves_gpus_to_ray() -> None:
    node = ray_node(entry("aa" * 28, resources={"CPU": 2.0, "memory": GiB}, labels={"oserve-cpu-cores": "6-7"}))
    assert node is not None
    spec = ReplicaSpec(variant="v", model="/m", served_model_name="m", cpu_cores=(1,), node=node.name)
    out = actor_spec(spec, node)
    assert out.cpu_cores == (7,) and out.node == node.name and out.devices is None
    gpu = ray_node(entry("bb" * 28, resources={"GPU": 2.0}), default_gpu_memory_bytes=GiB)
    assert gpu is not None
    gspec = ReplicaSpec(variant="v", model="/m", served_model_name="m", devices=(1,), tensor_parallel_size=1)
    assert actor_spec(gspec, gpu).devices is None


@pytest.mark.parametrize("exc", [
    InvalidRequestError("too long", param="prompt", code="invalid_value"),
    RequestAbortedError("aborted: drain", replica_id="r1", code="aborted"),
    ReplicaError("boom", replica_id="r2", code="engine_error"),
    EngineStartError("no memory", cause="out_of_memory", replica_id="r3"),
])
def test_remote_error_round_trip_keeps_type_and_fields(exc) -> None:
    back = RemoteError.from_exc(exc).to_exc()
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    for f in ("param", "code", "replica_id", "cause"):
        assert getattr(back, f, None) == getattr(exc, f, None)


def test_backend_validates_its_parameters_without_touching_ray() -> None:
    with pytest.raises(ConfigError) as e:
        RayBackend(cpus_per_core=0)
    assert e.value.field == "backend.params.cpus_per_core"
    with pytest.raises(ConfigError) as e:
        RayBackend(start_timeout_s=0)
    assert e.value.field == "backend.params.start_timeout_s"
    b = RayBackend(address="auto", cpus_per_core=0.5)
    assert b.replicas == {} and not b._owns_ray


def test_bundle_sizes() -> None:
    b = RayBackend(cpus_per_core=0.5)
    cpu = ray_node(entry("aa" * 28, resources={"CPU": 4.0, "memory": GiB}))
    gpu = ray_node(entry("bb" * 28, resources={"GPU": 8.0}), default_gpu_memory_bytes=GiB)
    assert cpu is not None and gpu is not None
    spec = ReplicaSpec(variant="v", model="/m", served_model_name="m", cpu_cores=(0, 1))
    assert b._bundle(spec, cpu) == {"CPU": 1.0}
    tp = ReplicaSpec(variant="v", model="/m", served_model_name="m", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert b._bundle(tp, gpu) == {"GPU": 4.0, "CPU": 1.0}


def test_unknown_node_is_a_start_error() -> None:
    b = RayBackend()
    b.watcher = RayClusterWatcher(list_nodes=lambda: [entry("aa" * 28, resources={"CPU": 1.0, "memory": GiB},
                                                             labels={"oserve-node": "a"})])
    b.watcher.refresh()
    spec = ReplicaSpec(variant="v", model="/m", served_model_name="m", node="gone")
    with pytest.raises(EngineStartError) as e:
        b._node_for(spec, "r1")
    assert e.value.cause == "resource_busy" and "gone" in str(e.value)
    assert b._node_for(spec.model_copy(update={"node": None}), "r2").name == "a"
