"""A harness that measures switches between two variants on real engines: parked (wake) vs cold start.

Used by ``bench/park_switch.py`` and the real-engine test of parked replicas. One
:class:`~oserve.control.switcher.Switcher` runs on a real backend and a real
:class:`~oserve.server.router.Router`; an open-loop client sends requests at a fixed rate through
the router while the switcher moves all traffic from one variant to the other on the same cores,
either by waking a parked replica (the old one is drained and parked) or by starting one cold (the
old one is drained and stopped).

Per switch it reports:

* ``decision_to_serving_s``: from the switch's submission until the first output token of a request
  served by the new variant, s (includes the wait for the next arrival, at most ``1 / rate_rps``);
* ``route_s``: from the submission until the router's routing includes the new variant, s;
* ``touched``: requests in flight on the old variant's replicas when their drain began (they finish
  on the old replica: the drain waits for them), and ``lost``: requests that failed in the window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from oserve.backends.base import Backend, ReplicaSpec, SamplingParams
from oserve.control.records import SwitchResult
from oserve.control.resources import ResourceModel
from oserve.control.specs import spec_factory_from_templates
from oserve.control.switcher import Switcher
from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.server.router import Router
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Plan, ReplicaPlacement

__all__ = ["SwitchMeasure", "RequestRecord", "ParkSwitchHarness"]

PROMPT = "Write one sentence about the sea."


@dataclass
class RequestRecord:
    """One client request: times on the switcher's clock (s), the variant that served it, outcome."""

    sent_s: float
    variant: str = ""
    first_token_s: float | None = None
    finished_s: float | None = None
    error: str = ""


@dataclass
class SwitchMeasure:
    """One measured switch (see the module docstring)."""

    mode: str
    from_variant: str
    to_variant: str
    status: str
    decision_to_serving_s: float | None
    route_s: float | None
    switch_duration_s: float
    requests: int
    touched: int
    lost: int
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ParkSwitchHarness:
    """Two variants on the same cores; switches between them, parked or cold, under open-loop load.

    Args:
        backend: starts the engines (e.g. ``VLLMBackend(allow_core_sharing=True)``).
        templates: variant -> replica template (model path, dtype, engine sizes).
        table: profile table holding both variants (memory, devices per replica).
        cluster: one CPU node whose cores the replicas use.
        cores: the device groups, one replica of the active variant (and one parked) on each.
        rate_rps: client arrival rate, req/s (> 0).
        max_tokens: output tokens per request (>= 1).
        drain_timeout_s: drain limit of the old replicas, s.

    Raises:
        ConfigError: a rate or token count out of range.
    """

    def __init__(self, backend: Backend, templates: dict[str, ReplicaSpec], table: ProfileTable,
                 cluster: ClusterSpec, cores: Sequence[tuple[int, ...]], *, rate_rps: float = 2.0,
                 max_tokens: int = 16, drain_timeout_s: float = 60.0) -> None:
        if not rate_rps > 0:
            raise ConfigError(f"rate_rps must be > 0, got {rate_rps}", field="rate_rps", allowed="> 0 req/s")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}", field="max_tokens", allowed=">= 1")
        self.router = Router()
        self.node = cluster.nodes[0].name
        self.cores = [tuple(c) for c in cores]
        self.switcher = Switcher(backend, self.router, spec_factory_from_templates(templates, cluster),
                                 ResourceModel(cluster, table), drain_timeout_s=drain_timeout_s, warmup_requests=1)
        self.rate_rps = float(rate_rps)
        self.max_tokens = int(max_tokens)
        self.records: list[RequestRecord] = []
        self._client: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def plan(self, active: str, parked: str | None) -> Plan:
        """``active`` on every core group, ``parked`` (if any) parked on the same groups."""
        place: Callable[[str], list[ReplicaPlacement]] = lambda v: [  # noqa: E731
            ReplicaPlacement(variant=v, node=self.node, device_ids=c) for c in self.cores]
        return Plan(replicas=place(active), parked=place(parked) if parked else [],
                    routing={c: {active: 1.0} for c in DEFAULT_SCHEME.names})

    async def setup(self, active: str, parked: str | None) -> SwitchResult:
        """Start the deployment (no load yet)."""
        return await self.switcher.apply(self.plan(active, parked))

    # ------------------------------------------------------------------ load
    async def _one(self, rec: RequestRecord) -> None:
        clock = self.switcher.clock
        try:
            replica = self.router.acquire(None, self.max_tokens + 64)
        except Exception as exc:  # noqa: BLE001 - no replica ready: the request is lost
            rec.error = f"{type(exc).__name__}: {exc}"
            return
        rec.variant = replica.spec.variant
        try:
            params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0, ignore_eos=True)
            async for chunk in replica.generate(f"c{id(rec)}", PROMPT, params):
                if chunk.token_ids and rec.first_token_s is None:
                    rec.first_token_s = clock.now()
            rec.finished_s = clock.now()
        except Exception as exc:  # noqa: BLE001 - any failure of a request counts as lost
            rec.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.router.release(replica.replica_id)

    async def _load(self) -> None:
        period = 1.0 / self.rate_rps
        nxt = self.switcher.clock.now()
        while True:
            rec = RequestRecord(sent_s=self.switcher.clock.now())
            self.records.append(rec)
            t = asyncio.get_running_loop().create_task(self._one(rec))
            self._inflight.add(t)
            t.add_done_callback(self._inflight.discard)
            nxt += period
            await asyncio.sleep(max(0.0, nxt - self.switcher.clock.now()))

    def start_load(self) -> None:
        """Start the open-loop client."""
        self._client = asyncio.get_running_loop().create_task(self._load())

    async def stop_load(self) -> None:
        """Stop sending and wait for the requests in flight."""
        if self._client is not None:
            self._client.cancel()
            await asyncio.gather(self._client, return_exceptions=True)
        await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # ------------------------------------------------------------------ one switch
    async def switch(self, to_variant: str, from_variant: str, *, parked: bool, settle_s: float = 2.0
                     ) -> SwitchMeasure:
        """Move all traffic to ``to_variant`` (waking a parked replica, or starting one cold when
        ``parked`` is False) under load, and measure it. The load must be running."""
        first = len(self.records)
        t0 = self.switcher.clock.now()
        target = self.plan(to_variant, from_variant if parked else None)
        result = await self.switcher.apply(target)
        await asyncio.sleep(settle_s)
        window = self.records[first:]
        served = [r.first_token_s for r in window if r.variant == to_variant and r.first_token_s is not None]
        route = [s.finished_s for s in result.steps if s.kind == "route"]
        drains = [s.started_s for s in result.steps if s.kind == "drain"]
        drain_t = min(drains) if drains else None
        touched = 0 if drain_t is None else sum(
            1 for r in self.records if r.variant == from_variant and r.sent_s <= drain_t
            and (r.finished_s is None or r.finished_s > drain_t))
        steps = [{"kind": s.kind, "variant": s.variant, "ok": s.ok, "detail": s.detail,
                  "duration_s": round(s.finished_s - s.started_s, 4)} for s in result.steps]
        return SwitchMeasure(
            mode="parked" if parked else "cold", from_variant=from_variant, to_variant=to_variant,
            status=result.status, decision_to_serving_s=(min(served) - t0) if served else None,
            route_s=(min(route) - t0) if route else None, switch_duration_s=result.finished_s - t0,
            requests=len(window), touched=touched, lost=sum(1 for r in window if r.error), steps=steps)

    async def close(self) -> None:
        """Stop the load and every replica."""
        await self.stop_load()
        await self.switcher.shutdown(0.0)

