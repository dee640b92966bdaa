"""Wiring as the server uses it: the OpenAI app and /admin/plan over one Router, Monitor and Orchestrator.

The engine is FakeBackend (a fake engine); the HTTP app runs in-process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from orch_fakes import FakeForecaster, FakePlanner, make_cluster, make_table, plan_of, spec_factory

from oserve.clock import WallClock
from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
from oserve.server.admin import make_admin_router
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions
from oserve.types import DEFAULT_SCHEME
from oserve.workload.monitor import WorkloadMonitor

pytestmark = pytest.mark.timeout(60)
create_app = pytest.importorskip("oserve.server.app").create_app


async def test_streams_through_the_endpoint_survive_a_pinned_switch():
    backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.01))
    router = Router()
    monitor = WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=5, history_s=60)
    orch = Orchestrator.build(backend, FakeForecaster(), FakePlanner(), make_cluster(), make_table(), router=router,
                              monitor=monitor, spec_factory=spec_factory,
                              options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600),
                              initial_plan=plan_of(("fast", "node0", (0,))))
    app = create_app(router, served_model_names=["fake"], monitor=monitor)
    app.include_router(make_admin_router(orch))
    await orch.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:

            async def completion(i: int) -> int:
                body = {"model": "fake", "prompt": f"hello {i}", "max_tokens": 30, "stream": True,
                        "ignore_eos": True}
                tokens = 0
                async with c.stream("POST", "/v1/completions", json=body) as resp:
                    assert resp.status_code == 200
                    async for line in resp.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            chunk = json.loads(line[6:])
                            assert "error" not in chunk, chunk
                            tokens += sum(1 for ch in chunk["choices"] if ch.get("text"))
                return tokens

            streams = [asyncio.create_task(completion(i)) for i in range(8)]
            await asyncio.sleep(0.05)
            pin = plan_of(("big", "node0", (1,)), ("big", "node0", (2,)))
            r = await c.post("/admin/plan", json={"plan": pin.model_dump(mode="json")})
            assert r.status_code == 200
            assert await asyncio.gather(*streams) == [30] * 8  # every stream complete, none lost
            await orch.switcher.idle()
            status = (await c.get("/admin/plan")).json()
            assert sorted(x["variant"] for x in status["replicas"]) == ["big", "big"]
            assert status["switches"][-1]["status"] == "applied" and status["switches"][-1]["aborted_requests"] == 0
            assert await completion(99) == 30  # served by the new replicas
        admitted = sum(monitor.registry.get_sample_value("oserve_requests_admitted_total", {"request_class": c}) or 0
                       for c in DEFAULT_SCHEME.names)
        assert admitted == 9  # the endpoint fed the monitor the orchestrator reads
    finally:
        await orch.stop()


@pytest.mark.parametrize(("parked", "param"), [
    ({"variant": "bogus", "node": "node0", "device_ids": [1]}, "plan.parked.variant"),
    ({"variant": "big", "node": "node0", "device_ids": [7]}, "plan.parked.device_ids"),
    ({"variant": "big", "node": "nowhere", "device_ids": [1]}, "plan.parked.node"),
])
async def test_pinning_a_plan_with_an_invalid_parked_replica_is_a_400_and_pins_nothing(parked, param):
    orch = Orchestrator.build(FakeBackend(), FakeForecaster(), FakePlanner(), make_cluster(), make_table(),
                              router=Router(), spec_factory=spec_factory,
                              monitor=WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=5, history_s=60),
                              options=OrchestratorOptions(control_interval_s=3600, health_interval_s=3600),
                              initial_plan=plan_of(("fast", "node0", (0,))))
    app = create_app(Router(), served_model_names=["fake"])
    app.include_router(make_admin_router(orch))
    await orch.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:
            pin = plan_of(("fast", "node0", (0,))).model_dump(mode="json")
            pin["parked"] = [parked]
            r = await c.post("/admin/plan", json={"plan": pin})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == param
            assert orch.controller.pinned is None
    finally:
        await orch.stop()
