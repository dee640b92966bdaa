"""The parked-vs-cold switch harness (bench/park_switch.py) over fake engines: what it measures."""

from __future__ import annotations

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.errors import ConfigError
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions
from oserve.testing.park_switch import ParkSwitchHarness
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec

pytestmark = pytest.mark.timeout(60)


def harness(backend: FakeBackend, **kw) -> ParkSwitchHarness:
    caps = {v: dict.fromkeys(DEFAULT_SCHEME.names, 5.0) for v in ("a", "b")}
    table = synthetic_table(caps, {"a": 1, "b": 1}, memory_per_device_bytes=GIB, device_type="cpu",
                            class_names=DEFAULT_SCHEME.names)
    templates = {v: ReplicaSpec(variant=v, model=v, served_model_name="m", max_model_len=256) for v in ("a", "b")}
    return ParkSwitchHarness(backend, templates, table, ClusterSpec.homogeneous(1, 1, "cpu", 4 * GIB), [(0,)], **kw)


async def test_parked_switch_is_served_in_the_wake_time_and_cold_in_the_start_time():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.005, wake_delay_s=0.05))
    h = harness(backend, rate_rps=50.0, max_tokens=8)
    assert (await h.setup("a", "b")).status == "applied"
    h.start_load()
    parked = await h.switch("b", "a", parked=True, settle_s=0.3)
    backend.start_delay_s = 0.6
    await h.switch("a", "b", parked=True, settle_s=0.1)
    await h.switcher.apply(h.plan("a", None))  # drop the parked replica
    cold = await h.switch("b", "a", parked=False, settle_s=0.3)
    await h.close()
    assert parked.status == cold.status == "applied"
    assert parked.lost == cold.lost == 0 and parked.requests > 0
    assert 0.05 <= parked.decision_to_serving_s < 0.5 and parked.route_s >= 0.05
    assert cold.decision_to_serving_s >= 0.6  # the engine start
    assert [s["kind"] for s in parked.steps if s["kind"] in ("start", "wake")] == ["wake"]
    assert 0 <= parked.touched <= parked.requests


def test_bad_rate_is_refused():
    with pytest.raises(ConfigError, match="rate_rps"):
        harness(FakeBackend(), rate_rps=0)
