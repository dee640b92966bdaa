"""Health judged by progress: a replica that hangs while claiming health, or fails every request,
leaves the candidate set, its requests without a first token are retried elsewhere, and it is replaced.
Uses FakeBackend (a fake engine) with two fake faults defined here."""

from __future__ import annotations

import asyncio

import pytest
from orch_fakes import FakeForecaster, make_cluster, make_table, plan_of, spec_factory

from oserve.clock import SimClock
from oserve.control.health import HealthPolicy, ProgressTracker
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.errors import ConfigError, ReplicaError
from oserve.server.app import create_app
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplica, FakeReplicaOptions, _FakeRequest
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(30)
SHORT = DEFAULT_SCHEME.by_name("short-in/short-out")


# --------------------------------------------------------------------------- the pure tracker
def test_tracker_progress_keeps_a_replica_healthy():
    t = ProgressTracker(HealthPolicy(stall_timeout_s=10, max_consecutive_failures=3))
    t.started("r", "a", 0.0)
    for s in range(1, 30):
        t.advanced("r", "a", float(s))
        assert t.verdict("r", s + 9.9) is None
    t.finished("r", "a", 30.0, failed=False)
    assert t.verdict("r", 1000.0) is None  # idle is not stalled


def test_tracker_stall_needs_requests_in_flight_and_no_progress():
    t = ProgressTracker(HealthPolicy(stall_timeout_s=10))
    t.started("r", "a", 100.0)
    assert t.verdict("r", 109.9) is None
    verdict = t.verdict("r", 110.0)
    assert verdict is not None and "no progress for 10.0 s with 1 request(s) in flight" in verdict
    t.started("r", "b", 111.0)  # a new admission on a stalled replica is not progress
    assert t.verdict("r", 111.0) is not None


def test_tracker_failure_streak_resets_on_success():
    t = ProgressTracker(HealthPolicy(max_consecutive_failures=3))
    for i in range(2):
        t.started("r", f"f{i}", i)
        t.finished("r", f"f{i}", i, failed=True, reason="boom")
    t.started("r", "ok", 3)
    t.finished("r", "ok", 3, failed=False)
    for i in range(3):
        assert t.verdict("r", 10) is None
        t.started("r", f"g{i}", 10)
        t.finished("r", f"g{i}", 10, failed=True, reason="engine error")
    assert t.verdict("r", 10) == "3 requests in a row failed (last: engine error)"
    t.forget("r")
    assert t.verdict("r", 10) is None
    t.finished("r", "late", 11, failed=True)  # a forgotten replica is not re-created
    assert t.in_flight("r") == 0 and t.verdict("r", 11) is None


@pytest.mark.parametrize("kw", [{"stall_timeout_s": 0}, {"max_consecutive_failures": 0}])
def test_policy_bounds_are_typed_errors(kw):
    with pytest.raises(ConfigError) as err:
        HealthPolicy(**kw)
    assert err.value.field.startswith("health.")


# --------------------------------------------------------------------------- fakes of the two faults
class FaultyFakeReplica(FakeReplica):
    """A fake replica whose ``health()`` stays True (like vLLM's flag check) while, once ``fault`` is set,
    it either hangs every request (``"hang"``: like SIGSTOP on the engine core) or fails each one."""

    fault: str | None = None
    failed_requests = 0

    def generate(self, request_id, prompt, params):
        if self.fault is None:
            return super().generate(request_id, prompt, params)
        return self._faulty(request_id)

    async def _faulty(self, request_id):
        if self.fault == "fail":
            self.failed_requests += 1
            raise ReplicaError(f"replica {self.replica_id}: engine error", replica_id=self.replica_id,
                               code="engine_error")
        req = self._requests.setdefault(request_id, _FakeRequest(request_id))
        self.requests_started += 1
        while req.error is None and not req.aborted:  # no output ever; stop() fails it
            await req.wake.wait()
            req.wake.clear()
        raise req.error or ReplicaError("aborted", replica_id=self.replica_id)
        yield  # pragma: no cover - makes this an async generator

    async def health(self) -> bool:
        return self.state in ("ready", "draining")


class FaultyFakeBackend(FakeBackend):
    async def start_replica(self, spec, replica_id):
        replica = await super().start_replica(spec, replica_id)
        faulty = FaultyFakeReplica(spec, replica_id, replica.options)
        self.replicas[replica_id] = faulty
        return faulty


def build(policy: HealthPolicy) -> tuple[Orchestrator, Router, FaultyFakeBackend]:
    backend = FaultyFakeBackend(FakeReplicaOptions(token_delay_s=0.005))
    router = Router()
    monitor = WorkloadMonitor(DEFAULT_SCHEME, SimClock(0.0), window_s=5, history_s=60)
    options = OrchestratorOptions(control_interval_s=3600, health_interval_s=3600, health_policy=policy)
    orch = Orchestrator.build(backend, FakeForecaster(), None, make_cluster(), make_table(), router=router,
                              monitor=monitor, spec_factory=spec_factory, options=options,
                              initial_plan=plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    # the endpoint as `oserve serve` composes it (the one request path, retrying before a first token)
    APPS[id(orch)] = create_app(router, served_model_names=["fake"], monitor=monitor, max_retries=2,
                                on_replica_error=orch.report_replica_error)
    return orch, router, backend


APPS: dict[int, object] = {}


async def send(orch: Orchestrator, rid: str) -> int:
    """One completion through the endpoint; returns the HTTP status (200: all 5 tokens came back)."""
    import httpx

    transport = httpx.ASGITransport(app=APPS[id(orch)])
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as c:
        r = await c.post("/v1/completions", json={"model": "fake", "prompt": f"hello there {rid}", "max_tokens": 5,
                                                  "ignore_eos": True})
    if r.status_code == 200:
        assert r.json()["usage"]["completion_tokens"] == 5
    return r.status_code


async def test_hanging_replica_that_claims_health_is_replaced_and_requests_retried():
    orch, router, backend = build(HealthPolicy(stall_timeout_s=0.3))
    await orch.start()
    try:
        victim_id = sorted(orch.switcher.replicas)[0]
        victim = backend.replicas[victim_id]
        assert isinstance(victim, FaultyFakeReplica)
        base = victim.requests_started  # the switcher's warm-up requests
        victim.fault = "hang"
        requests = [asyncio.create_task(send(orch, f"q{i}")) for i in range(6)]
        await asyncio.sleep(0.1)
        hung = victim.requests_started - base
        assert hung >= 1  # some requests went to the hung replica and wait for a first token
        assert await orch.check_health() == []  # below the bound: still a candidate
        await asyncio.sleep(0.3)
        assert await orch.check_health() == [victim_id]
        assert router.get(victim_id) is None  # out of the candidate set at once
        results = await asyncio.wait_for(asyncio.gather(*requests), 10)
        assert results == [200] * 6  # retried elsewhere, none lost
        await orch.switcher.idle()
        assert victim_id not in orch.switcher.replicas
        assert orch.current_plan.replica_counts() == {"fast": 2} and router.ready_count() == 2  # replaced
    finally:
        await orch.stop()


async def test_replica_failing_every_request_is_replaced_after_k_failures():
    orch, router, backend = build(HealthPolicy(max_consecutive_failures=3))
    await orch.start()
    try:
        victim_id = sorted(orch.switcher.replicas)[0]
        victim = backend.replicas[victim_id]
        victim.fault = "fail"
        results = []
        for i in range(30):  # one at a time
            results.append(await send(orch, f"q{i}"))
            await asyncio.sleep(0)  # let the scheduled health check run
        assert results == [200] * 30  # each failure retried elsewhere
        assert victim.failed_requests == 3  # taken out at the third failure in a row
        assert router.get(victim_id) is None
        await orch.switcher.idle()
        assert orch.current_plan.replica_counts() == {"fast": 2} and victim_id not in orch.switcher.replicas
        assert orch.metrics.registry.get_sample_value("oserve_replica_failures_total", {"variant": "fast"}) == 1
    finally:
        await orch.stop()


async def test_through_the_http_endpoint_a_failing_replica_is_replaced_and_clients_see_no_500():
    """The OpenAI endpoint has its own retry path; the replicas still feed the tracker (TrackedReplica)."""
    import httpx

    from oserve.server.app import create_app

    orch, router, backend = build(HealthPolicy(max_consecutive_failures=3))
    app = create_app(router, served_model_names=["fake"], max_retries=1)
    await orch.start()
    try:
        victim_id = sorted(orch.switcher.replicas)[0]
        backend.replicas[victim_id].fault = "fail"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:
            codes = []
            for i in range(30):
                r = await c.post("/v1/completions", json={"model": "fake", "prompt": f"hi {i}", "max_tokens": 3})
                codes.append(r.status_code)
                await asyncio.sleep(0)  # let the scheduled health check run
        assert codes == [200] * 30  # each failure before the first token was retried elsewhere
        assert backend.replicas[victim_id].failed_requests == 3
        await orch.switcher.idle()
        assert victim_id not in orch.switcher.replicas and router.ready_count() == 2
    finally:
        await orch.stop()
