"""Orchestrator end to end on FakeBackend (a fake engine), the real Router and WorkloadMonitor."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
from fastapi import FastAPI, Request
from orch_fakes import FakeForecaster, make_cluster, make_table, plan_of, spec_factory

from oserve.cli.status import fetch_status, format_status
from oserve.clock import SimClock
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.errors import AuthenticationError, EngineStartError, ReplicaError, RequestAbortedError
from oserve.server.admin import make_admin_router
from oserve.server.app import create_app
from oserve.server.http_errors import install_exception_handlers
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions
from oserve.types import DEFAULT_SCHEME, Plan
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(30)
SHORT, LONG = DEFAULT_SCHEME.by_name("short-in/short-out"), DEFAULT_SCHEME.by_name("short-in/long-out")


class FakeMixPlanner:
    """'big' when long-output requests dominate, else 'fast'; one replica per 2 req/s (1..3)."""

    def plan(self, cluster, table, demand, current) -> Plan:
        long = sum(v for c, v in demand.rates_rps.items() if c.endswith("long-out"))
        short = sum(v for c, v in demand.rates_rps.items() if c.endswith("short-out"))
        variant = "big" if long > short else "fast"
        n = max(1, min(3, math.ceil((long + short) / 2)))
        return plan_of(*[(variant, "node0", (i,)) for i in range(n)])


async def api_key_check(request: Request) -> None:
    """The server's API-key dependency, simplified (key 'k')."""
    if request.headers.get("authorization") != "Bearer k":
        raise AuthenticationError("invalid API key", param="authorization")


def build(backend: FakeBackend, **kw) -> tuple[Orchestrator, Router, WorkloadMonitor, SimClock]:
    mclock = SimClock(0.0)
    monitor = WorkloadMonitor(DEFAULT_SCHEME, mclock, window_s=5, history_s=60)
    router = Router()
    planner = kw.pop("planner", FakeMixPlanner())
    initial_plan = kw.pop("initial_plan", plan_of(("fast", "node0", (0,))))
    options = OrchestratorOptions(**{"control_interval_s": 3600, "health_interval_s": 3600, "min_history": 3, **kw})
    orch = Orchestrator.build(backend, FakeForecaster(), planner, make_cluster(), make_table(), router=router,
                              monitor=monitor, spec_factory=spec_factory, options=options, initial_plan=initial_plan)
    # the endpoint as `oserve serve` composes it: it reports replica errors to the orchestrator
    APPS[id(orch)] = create_app(router, served_model_names=["fake"], monitor=monitor,
                                on_replica_error=orch.report_replica_error)
    return orch, router, monitor, mclock


APPS: dict[int, FastAPI] = {}


def feed(monitor: WorkloadMonitor, clock: SimClock, cls, per_s: int, seconds: int) -> None:
    for _ in range(seconds):
        for i in range(per_s):
            rid = f"a{clock.now()}-{i}"
            monitor.record_admission(rid, cls, 10, 100)
            monitor.record_first_token(rid)  # served at once: no backlog (the controller's backlog rule)
            monitor.record_completion(rid, 100, True)
        clock.advance_to(clock.now() + 1.0)


async def send(orch: Orchestrator, rid: str, max_tokens: int = 20) -> int:
    """One completion through the endpoint's request path; returns its output tokens."""
    body = {"model": "fake", "prompt": "hello there", "max_tokens": max_tokens, "ignore_eos": True, "user": rid}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APPS[id(orch)]), base_url="http://t",
                                 timeout=30) as c:
        r = await c.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["usage"]["completion_tokens"]


async def send_stream(orch: Orchestrator, max_tokens: int) -> list[dict]:
    """A streamed completion through the endpoint; returns its SSE payloads."""
    body = {"model": "fake", "prompt": "hello there", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    out = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APPS[id(orch)]), base_url="http://t",
                                 timeout=30) as c:
        async with c.stream("POST", "/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    out.append(json.loads(line[6:]))
    return out


def endpoint_metric(orch: Orchestrator, name: str) -> float:
    return APPS[id(orch)].state.metrics.registry.get_sample_value(name, {}) or 0.0


def metric(orch: Orchestrator, name: str, labels: dict | None = None) -> float:
    return orch.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_init_has_no_side_effects_and_start_failure_is_typed():
    backend = FakeBackend(fail_start_variants={"fast"})
    orch, router, *_ = build(backend)
    assert backend.starts == 0 and not orch.switcher.replicas and not orch.running
    with pytest.raises(EngineStartError):
        await orch.start()
    assert router.ready_count() == 0 and not orch.running


async def test_mix_shift_switches_live_without_losing_requests():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.005))
    orch, router, monitor, mclock = build(backend)
    await orch.start()
    try:
        feed(monitor, mclock, SHORT, 1, 5)
        d0 = await orch.step()
        assert not d0.changed and orch.history[-1].outcome == "unchanged"
        # traffic keeps flowing while the mix shifts to long outputs
        stop = asyncio.Event()
        done: list[list] = []

        async def client(k: int) -> None:
            i = 0
            while not stop.is_set():
                done.append(await send(orch, f"c{k}-{i}"))
                i += 1

        clients = [asyncio.create_task(client(k)) for k in range(3)]
        feed(monitor, mclock, LONG, 3, 5)
        d1 = await orch.step()
        assert d1.changed and d1.plan.replica_counts() == {"big": 2}
        await orch.switcher.idle()
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
        assert orch.current_plan.replica_counts() == {"big": 2}
        assert orch.history[-1].outcome.startswith("applied")
        assert done and all(n == 20 for n in done)
        assert metric(orch, "oserve_orchestrator_requests_aborted_total") == 0
        assert metric(orch, "oserve_transitions_total", {"status": "applied"}) == 2  # initial deployment + switch
        assert metric(orch, "oserve_switches_total", {"outcome": "reached"}) == 1  # one decision changed replicas
        assert [t.status for t in orch.targets.records] == ["reached"]
        assert metric(orch, "oserve_reconfig_seconds_count") == 1
        assert metric(orch, "oserve_replicas_actual", {"variant": "big"}) == 2
        assert metric(orch, "oserve_replicas_actual", {"variant": "fast"}) == 0
        assert metric(orch, "oserve_forecast_rate_rps", {"request_class": LONG.name}) > 0
        assert metric(orch, "oserve_transition_duration_seconds_count") == 2
    finally:
        await orch.stop()
    assert all(r.state == "stopped" for r in backend.replicas.values())


async def test_replica_killed_mid_stream_retries_requests_and_is_replaced_at_once():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01, prefill_delay_s=0.15))
    orch, router, *_ = build(backend, initial_plan=plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    await orch.start()
    try:
        warm = 8  # 2 warm-up requests x 4 tokens per replica
        # a request with output already streaming: its replica becomes the victim
        streaming = asyncio.create_task(send_stream(orch, 200))
        while not any(r.tokens_emitted > warm + 2 for r in backend.replicas.values()):
            await asyncio.sleep(0.01)
        victim = next(r for r in backend.replicas.values() if r.tokens_emitted > warm + 2)
        victim_id = victim.replica_id
        # requests still waiting for their first token, spread over both replicas
        waiting = [asyncio.create_task(send(orch, f"w{i}")) for i in range(6)]
        await asyncio.sleep(0.05)
        on_victim = victim.requests_started - 2 - 1
        assert on_victim >= 2  # least outstanding put some of them on the victim
        victim.kill()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert results == [20] * 6, results
        assert endpoint_metric(orch, "oserve_requests_retried_total") == on_victim
        payloads = await streaming  # it had output: an explicit error event, not a silent drop
        assert "error" in payloads[-1] and any(p.get("choices") for p in payloads[:-1])
        # the health loop never runs here (interval 3600 s): the endpoint's report took the dead
        # replica out and the orchestrator replaced it
        await orch.switcher.idle()
        assert victim_id not in orch.switcher.replicas and router.get(victim_id) is None
        assert orch.current_plan.replica_counts() == {"fast": 2} and router.ready_count() == 2
        assert metric(orch, "oserve_replica_failures_total", {"variant": "fast"}) == 1
    finally:
        await orch.stop()


async def test_a_replica_error_reported_by_a_request_is_checked_at_once():
    backend = FakeBackend()
    orch, router, *_ = build(backend, initial_plan=plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
    await orch.start()
    try:
        healthy, dead = sorted(orch.switcher.replicas)
        backend.replicas[dead].kill()
        orch.report_replica_error(healthy, ReplicaError("a transient error", replica_id=healthy))
        orch.report_replica_error(dead, RequestAbortedError("drained", replica_id=dead))  # says nothing
        await asyncio.sleep(0)
        assert dead in orch.switcher.replicas  # a drain abort is not a replica failure
        orch.report_replica_error(dead, ReplicaError("engine died", replica_id=dead))
        while dead in orch.switcher.replicas or orch.switcher.busy:
            await asyncio.sleep(0.01)
        assert healthy in orch.switcher.replicas  # its health check passed: it stays
        assert router.get(dead) is None and router.ready_count() == 2
        assert metric(orch, "oserve_replica_failures_total", {"variant": "fast"}) == 1
    finally:
        await orch.stop()


async def test_hung_replica_is_taken_out_and_replaced():
    backend = FakeBackend()
    orch, router, *_ = build(backend, health_timeout_s=0.05)
    await orch.start()
    try:
        rid = next(iter(orch.switcher.replicas))

        async def hang() -> bool:
            await asyncio.sleep(10)
            return True

        backend.replicas[rid].health = hang  # type: ignore[method-assign]
        assert await orch.check_health() == [rid]
        assert router.get(rid) is None
        await orch.switcher.idle()
        assert orch.current_plan.replica_counts() == {"fast": 1} and rid not in orch.switcher.replicas
        assert await orch.check_health() == []
    finally:
        await orch.stop()


async def test_admin_routes_pin_and_status_cli():
    backend = FakeBackend()
    orch, *_ = build(backend)
    app = FastAPI()

    install_exception_handlers(app)
    app.include_router(make_admin_router(orch, auth=api_key_check))
    await orch.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/admin/plan")).status_code == 401
            h = {"Authorization": "Bearer k"}
            body = (await c.get("/admin/plan", headers=h)).json()
            assert body["current_plan"]["replicas"][0]["variant"] == "fast" and not body["pinned"]
            bad = await c.post("/admin/plan", headers=h, json={"plan": {"replicas": [
                {"variant": "nope", "node": "node0", "device_ids": [0]}]}})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "plan.replicas.variant"
            pin = plan_of(("big", "node0", (0,)), ("big", "node0", (1,)))
            r = await c.post("/admin/plan", headers=h, json={"plan": pin.model_dump(mode="json")})
            assert r.status_code == 200 and r.json()["pinned"] and r.json()["decision"]["changed"]
            await orch.switcher.idle()
            body = (await c.get("/admin/plan", headers=h)).json()
            assert body["pinned"] and sorted(x["variant"] for x in body["replicas"]) == ["big", "big"]
            assert body["decisions"][-1]["reason"].startswith("pinned")
            assert body["decisions"][-1]["outcome"].startswith("applied")
            # the planner stays overridden on the next tick
            await orch.step()
            assert orch.history[-1].plan.replica_counts() == {"big": 2}
            r = await c.post("/admin/plan", headers=h, json={"unpin": True})
            assert r.status_code == 200 and not r.json()["pinned"]
            assert (await c.post("/admin/plan", headers=h, content=b"{nope")).status_code == 400
        await orch.switcher.idle()

        def handler(request: httpx.Request) -> httpx.Response:
            assert request.headers["authorization"] == "Bearer k"
            return httpx.Response(200, json=orch.status())

        text = format_status(fetch_status("http://x", "k", transport=httpx.MockTransport(handler)))
        assert "Current deployment:" in text and "x fast on node0" in text and "CHANGE" in text
        assert "make-before-break" in text
    finally:
        await orch.stop()


async def test_a_replica_still_starting_is_never_health_checked_or_removed():
    backend = FakeBackend()
    orch, router, *_ = build(backend)
    await orch.start()
    try:
        backend.start_delay_s = 0.3
        fut = orch.switcher.submit(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
        await asyncio.sleep(0.05)
        starting = [m for m in orch.switcher.replicas.values() if m.state == "starting"]
        assert len(starting) == 1
        assert await orch.check_health() == []
        assert starting[0].replica_id in orch.switcher.replicas
        assert (await fut).status == "applied" and router.ready_count() == 2
    finally:
        await orch.stop()


async def test_a_plan_invalid_for_the_cluster_is_recorded_failed_and_not_applied():
    class BadPlanner:
        def plan(self, cluster, table, demand, current) -> Plan:
            return plan_of(("fast", "node9", (0,)))

    backend = FakeBackend()
    orch, router, *_ = build(backend, planner=BadPlanner())
    await orch.start()
    try:
        await orch.step()
        assert orch.history[-1].outcome.startswith("failed: invalid plan")
        assert "plan.replicas.node" in orch.history[-1].outcome
        assert orch.current_plan.replica_counts() == {"fast": 1} and not orch.switcher.busy
    finally:
        await orch.stop()


class AlwaysBigPlanner:
    """Always one 'big' replica on core 0 (a variant the test's backend cannot start)."""

    def plan(self, cluster, table, demand, current) -> Plan:
        return plan_of(("big", "node0", (0,)))


@pytest.mark.parametrize("backoff_s", [0.0, 3600.0])
async def test_a_variant_that_failed_to_start_is_backed_off(backoff_s):
    backend = FakeBackend(fail_start_variants={"big"})
    orch, router, monitor, mclock = build(backend, planner=AlwaysBigPlanner(), start_backoff_s=backoff_s)
    await orch.start()
    try:
        starts0 = backend.starts
        for _ in range(3):
            await orch.step()
            await orch.switcher.idle()
        tried = backend.starts - starts0
        assert router.ready_count() >= 1 and orch.current_plan.replica_counts() == {"fast": 1}
        if backoff_s:
            assert tried == 1  # the failing plan is not re-submitted every tick
            assert orch.history[-1].outcome.startswith("backed off: big on node0")
        else:
            assert tried == 3  # no back-off: every tick retries the same failing start
    finally:
        await orch.stop(0)


async def test_requests_queued_in_the_router_move_to_a_replica_the_orchestrator_starts():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.02))
    orch, router, *_ = build(backend)  # one 'fast' replica; spec_factory's batch limit is 8
    await orch.start()
    try:
        (first,) = backend.replicas.values()
        started_before = first.requests_started
        tasks = [asyncio.create_task(send(orch, f"q{i}")) for i in range(16)]
        for _ in range(200):
            if router.queue_length() == 8:
                break
            await asyncio.sleep(0.01)
        assert router.outstanding(first.replica_id) == 8 and router.queue_length() == 8
        await orch.pin(plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,))))
        await orch.switcher.idle()
        assert await asyncio.gather(*tasks) == [20] * 16
        (new,) = [r for r in backend.replicas.values() if r is not first]
        assert new.requests_started - 2 >= 1  # beyond its 2 warm-up requests: it took queued work
        assert first.requests_started - started_before + new.requests_started - 2 == 16
        assert router.queue_length() == 0 and router.queue_timeouts == 0
    finally:
        await orch.stop()
