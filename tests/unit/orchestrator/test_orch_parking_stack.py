"""``orchestrator.parking`` in the live stack (fake engines): parked replicas start with the deployment and
a plan that moves traffic to them wakes them instead of starting engines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oserve.errors import ConfigError
from oserve.testing import StackThread, serve_config
from oserve.types import DEFAULT_SCHEME, Plan, ReplicaPlacement

TABLE = Path(__file__).resolve().parents[3] / "examples" / "profiles" / "cpu-smollm2.json"
FP32, BF16 = "smollm2-135m-fp32-1c-s32", "smollm2-135m-bf16-1c-s8"

pytestmark = pytest.mark.timeout(60)


def config(keep_warm: dict[str, int]):
    return serve_config(
        "fake", replicas=2,
        cluster={"nodes": [{"name": "local", "device_type": "cpu", "devices": 2, "device_memory_gib": 8}]},
        variants={FP32: {"dtype": "float32"}, BF16: {"dtype": "bfloat16", "max_num_seqs": 8}},
        deployment=[{"variant": FP32, "node": "local", "device_ids": [0]},
                    {"variant": FP32, "node": "local", "device_ids": [1]}],
        orchestrator={"table": str(TABLE), "planner": {"kind": "greedy"}, "control_interval_s": 3600,
                      "parking": {"keep_warm": keep_warm}})


def test_parked_replicas_start_with_the_deployment_and_are_woken_by_a_pinned_plan():
    with StackThread(config({FP32: 2, BF16: 2})) as st:
        orch = st.stack.orchestrator
        states = sorted((m.placement.variant, m.state) for m in orch.switcher.replicas.values())
        assert states == [(BF16, "parked"), (BF16, "parked"), (FP32, "ready"), (FP32, "ready")]
        starts = st.stack.backend.starts  # the fake backend counts engine starts
        assert starts == 4
        target = Plan(replicas=[ReplicaPlacement(variant=BF16, node="local", device_ids=(d,)) for d in (0, 1)],
                      parked=[ReplicaPlacement(variant=FP32, node="local", device_ids=(d,)) for d in (0, 1)],
                      routing={c: {BF16: 1.0} for c in DEFAULT_SCHEME.names})
        asyncio.run_coroutine_threadsafe(orch.pin(target), st.loop).result(30)
        asyncio.run_coroutine_threadsafe(orch.switcher.idle(), st.loop).result(30)
        res = orch.switcher.results[-1]
        assert res.status == "applied", res.steps
        assert sorted(s.kind for s in res.steps if s.kind in ("wake", "park", "start")) == ["park"] * 2 + ["wake"] * 2
        assert st.stack.backend.starts == starts  # no cold start
        assert sorted(r.spec.variant for r in st.stack.router.ready_replicas()) == [BF16, BF16]


def test_parking_naming_an_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="orchestrator.parking.keep_warm names variant 'nope'"):
        config({"nope": 1})
