"""Unit tests of the request router (no engines: FakeReplica handles)."""

from __future__ import annotations

import asyncio
import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oserve.backends.base import ReplicaSpec
from oserve.errors import ConfigError, InvalidRequestError, NoReplicaReadyError
from oserve.policies.routing import Candidate, choose_replica
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions


def replica(rid: str, variant: str = "v0", max_model_len: int = 2048, effective: int | None = None) -> FakeReplica:
    spec = ReplicaSpec(variant=variant, model="fake", served_model_name="m", max_model_len=max_model_len)
    return FakeReplica(spec, rid, FakeReplicaOptions(effective_max_model_len=effective))


def test_choose_replica_least_outstanding_is_pure() -> None:
    cands = [Candidate("a", "v0", 2048), Candidate("b", "v0", 2048), Candidate("c", "v0", 2048)]
    outstanding = {"a": 3, "b": 1, "c": 2}
    before = dict(outstanding)
    choice = choose_replica(cands, outstanding, needed_tokens=100)
    assert choice.replica_id == "b" and not choice.fallback and choice.credit is None
    assert outstanding == before


def test_choose_replica_by_pending_prefill_tokens_skips_the_replica_behind_a_long_prompt() -> None:
    # "a" holds one 4,000-token prompt still in prefill, "b" five short requests in decode: least outstanding
    # requests queues the next request behind the long prefill, pending prefill tokens does not
    cands = [Candidate("a", "v0", 8192), Candidate("b", "v0", 8192), Candidate("c", "v1", 8192)]
    outstanding, pending = {"a": 1, "b": 5, "c": 0}, {"a": 4000, "b": 0, "c": 0}
    assert choose_replica(cands[:2], outstanding, needed_tokens=100).replica_id == "a"
    assert choose_replica(cands[:2], outstanding, needed_tokens=100, pending_prefill_tokens=pending).replica_id == "b"
    # within the variant the routing weights pick, and ties on pending tokens fall to the outstanding count
    w = choose_replica(cands, outstanding, needed_tokens=100, weights={"v0": 1.0},
                       pending_prefill_tokens={"a": 0, "b": 0, "c": 0})
    assert w.replica_id == "a" and not w.fallback


def test_choose_replica_skips_replicas_too_short() -> None:
    cands = [Candidate("a", "v0", 512), Candidate("b", "v0", 4096)]
    assert choose_replica(cands, {"a": 0, "b": 9}, needed_tokens=1000).replica_id == "b"
    assert choose_replica(cands, {}, needed_tokens=5000).replica_id is None


def test_least_outstanding_with_acquire_release() -> None:
    router = Router()
    for rid in ("r0", "r1", "r2"):
        router.add(replica(rid))
    got = [router.acquire(None, 10).replica_id for _ in range(6)]
    assert collections.Counter(got) == {"r0": 2, "r1": 2, "r2": 2}
    router.release("r1")
    router.release("r1")
    assert router.acquire(None, 10).replica_id == "r1"
    assert router.outstanding() == 5
    router.release("unknown")  # ignored


async def test_lease_context_manager_releases() -> None:
    router = Router()
    router.add(replica("r0"))
    async with router.lease(None, 10) as rep:
        assert rep.replica_id == "r0" and router.outstanding("r0") == 1
    assert router.outstanding("r0") == 0


def test_draining_and_failed_replicas_leave_candidates_at_once() -> None:
    router = Router()
    a, b = replica("a"), replica("b")
    router.add(a)
    router.add(b)
    router.set_state("a", "draining")
    assert {router.pick(None, 10).replica_id for _ in range(5)} == {"b"}
    b.kill()  # the replica's own state turns failed: no longer a candidate, even without set_state
    with pytest.raises(NoReplicaReadyError) as ei:
        router.pick(None, 10)
    assert ei.value.status_code == 503 and ei.value.retry_after_s == 1.0
    router.set_state("a", "ready")
    assert router.pick(None, 10).replica_id == "a"


def test_starting_replica_gets_no_traffic_until_ready() -> None:
    router = Router()
    router.add(replica("old"))
    router.add(replica("new"), state="starting")
    assert {router.acquire(None, 10).replica_id for _ in range(4)} == {"old"}
    router.set_state("new", "ready")
    assert router.acquire(None, 10).replica_id == "new"


def test_bad_state_and_duplicate_rejected() -> None:
    router = Router()
    router.add(replica("a"))
    with pytest.raises(ConfigError) as ei:
        router.set_state("a", "sleeping")  # type: ignore[arg-type]
    assert ei.value.field == "state"
    with pytest.raises(ConfigError):
        router.add(replica("a"))
    with pytest.raises(KeyError):
        router.set_state("zzz", "ready")
    assert router.remove("a") is not None and router.remove("a") is None


def test_context_length_without_loop_waits_for_refresh() -> None:
    router = Router()
    router.add(replica("a", max_model_len=4096, effective=1000))
    assert router.max_model_len("a") == 4096  # spec value until refreshed from the engine
    asyncio.run(router.refresh())
    assert router.max_model_len("a") == 1000


async def test_context_length_uses_effective_length_and_names_field() -> None:
    router = Router()
    router.add(replica("a", max_model_len=4096, effective=1000))
    await asyncio.sleep(0.01)  # add() read the engine's effective length in the background
    assert router.max_model_len("a") == 1000
    router.add(replica("b", max_model_len=4096, effective=900), max_model_len=800)
    await asyncio.sleep(0.01)
    assert router.max_model_len("b") == 800  # given explicitly: kept until refresh()
    router.remove("b")
    router.pick(None, 1000)
    with pytest.raises(InvalidRequestError) as ei:
        router.pick(None, 1001, prompt_tokens=10)
    assert ei.value.param == "max_tokens" and ei.value.code == "context_length_exceeded"
    assert "1000" in ei.value.message
    with pytest.raises(InvalidRequestError) as ei:
        router.pick(None, 1200, prompt_tokens=1100, prompt_param="messages")
    assert ei.value.param == "messages"


def test_weights_split_traffic_in_proportion_smoothly() -> None:
    router = Router()
    router.add(replica("a1", "A"))
    router.add(replica("a2", "A"))
    router.add(replica("b1", "B"))
    router.set_routing({"c": {"A": 3.0, "B": 1.0}})
    variants = [router.pick("c", 10).spec.variant for _ in range(40)]
    assert variants.count("A") == 30 and variants.count("B") == 10
    # Smooth WRR: B appears once in every window of 4, never clustered.
    assert all(variants[i:i + 4].count("B") == 1 for i in range(0, 40, 4))
    assert router.fallbacks == 0


def test_weights_then_least_outstanding_within_variant() -> None:
    router = Router()
    for rid in ("a1", "a2"):
        router.add(replica(rid, "A"))
    router.add(replica("b1", "B"))
    router.set_routing({"c": {"A": 1.0, "B": 0.0}})
    got = [router.acquire("c", 10).replica_id for _ in range(4)]
    assert collections.Counter(got) == {"a1": 2, "a2": 2}


def test_fallback_when_class_has_no_ready_assigned_replica() -> None:
    router = Router()
    router.add(replica("a1", "A"))
    router.add(replica("b1", "B"))
    router.set_routing({"long": {"A": 1.0}, "short": {"B": 1.0}})
    router.set_state("a1", "draining")
    assert router.pick("long", 10).replica_id == "b1"
    assert router.fallbacks == 1 and router.fallbacks_by_class == {"long": 1}
    assert router.pick("short", 10).replica_id == "b1"
    assert router.pick("unplanned", 10).replica_id == "b1"  # class missing from the table: fallback
    assert router.fallbacks == 2
    router.set_routing({})
    router.pick("long", 10)
    assert router.fallbacks == 2  # no plan: plain least outstanding, nothing counted


def test_fallback_when_assigned_variant_cannot_fit() -> None:
    router = Router()
    router.add(replica("small", "S", max_model_len=512))
    router.add(replica("big", "L", max_model_len=8192))
    router.set_routing({"c": {"S": 1.0}})
    assert router.pick("c", 100).replica_id == "small"
    assert router.pick("c", 4000).replica_id == "big"
    assert router.fallbacks == 1


def test_bad_weight_rejected() -> None:
    router = Router()
    with pytest.raises(ConfigError) as ei:
        router.set_routing({"c": {"A": -1.0}})
    assert ei.value.field == "routing.c.A"
    with pytest.raises(ConfigError):
        router.set_routing({"c": {"A": float("nan")}})


@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=4).filter(lambda ws: sum(ws) > 0))
@settings(max_examples=40, deadline=None)
def test_smooth_wrr_exact_proportions_per_period(ws: list[int]) -> None:
    """Over each period of sum(weights) picks, every variant gets exactly its weight (nginx SWRR)."""
    cands = [Candidate(f"r{i}", f"v{i}", 4096) for i in range(len(ws))]
    weights = {f"v{i}": float(w) for i, w in enumerate(ws)}
    credit = None
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(2 * sum(ws)):
        choice = choose_replica(cands, {}, needed_tokens=1, weights=weights, credit=credit)
        credit = choice.credit
        counts[choice.replica_id] += 1
    assert counts == collections.Counter({f"r{i}": 2 * w for i, w in enumerate(ws) if w})
