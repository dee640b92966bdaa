"""The simulator's router with the ``prefill-tokens`` replica load (oserve.policies.routing, SimOptions.replica_load)."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.policies import static_plan
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.request import SimRequest
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names


def _table():
    return synthetic_table({"small": {c: 2.0 for c in NAMES}}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                           class_names=NAMES)


def test_pending_prefill_tokens_count_prompts_not_yet_computed() -> None:
    table = _table()
    r = SimReplica("r0", ReplicaParams.from_profile(table.variants["small"]))
    a, b = SimRequest(0, 0.0, 3000, 10), SimRequest(1, 0.0, 200, 10)
    r.add(a)
    r.add(b)
    assert r.pending_prefill_tokens == 3200
    a.computed = 1000  # part of a's prefill done (as a chunked-prefill step leaves it)
    assert r.pending_prefill_tokens == 2200


def test_prefill_token_load_keeps_short_prompts_off_the_replica_busy_with_long_ones() -> None:
    # Two replicas; 12,000-token prompts every second (1.2 s of prefill each on this table) and 100-token chats
    # every 0.1 s: least outstanding requests sends chats behind long prefills (one long prompt is one request),
    # the prefill-token load does not. Measured: chats' mean TTFT 0.320 s vs 0.113 s, p90 1.121 s vs 0.210 s.
    table = _table()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    plan = static_plan(cluster, table, "small")
    short = np.arange(0.0, 60.0, 0.1)
    long_ = np.arange(0.01, 60.0, 1.0)
    arr = np.concatenate([short, long_])
    order = np.argsort(arr, kind="stable")
    inp = np.concatenate([np.full(short.size, 100), np.full(long_.size, 12000)])[order]
    out = np.concatenate([np.full(short.size, 50), np.full(long_.size, 20)])[order]
    trace = Trace(arr[order], inp, out, name="mixed")

    def chat_ttft_mean_s(load: str) -> float:
        res = Simulation(trace, table, cluster, plan, routing="plan", options=SimOptions(replica_load=load)).run()
        return float(np.mean([q["first_token_s"] - q["arrival_s"] for q in res.requests if q["input_tokens"] == 100]))

    assert chat_ttft_mean_s("prefill-tokens") < 0.5 * chat_ttft_mean_s("requests")
    with pytest.raises(ConfigError) as e:
        SimOptions(replica_load="tokens")
    assert e.value.field == "replica_load"
