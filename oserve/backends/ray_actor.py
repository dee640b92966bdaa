"""The Ray actor side of :mod:`oserve.backends.ray`: the engine actor and the error transport.

Imported in the actor processes (and by the driver); importing it needs no Ray.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from oserve.backends.base import ReplicaSpec, ReplicaStats, SamplingParams, TokenChunk
from oserve.backends.ray_cluster import RayNode
from oserve.errors import (
    EngineStartError,
    InvalidRequestError,
    OserveError,
    ReplicaError,
    RequestAbortedError,
)

__all__ = ["EngineActor", "RemoteError", "actor_spec"]


@dataclass(frozen=True)
class RemoteError:
    """An oserve error raised in an actor, sent back as data (its class and fields) and raised again.

    oserve's errors take keyword-only fields, which Ray's exception pickling does not preserve; this
    keeps the type and fields exact across the process boundary.
    """

    kind: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exc(cls, exc: OserveError) -> RemoteError:
        names = ("param", "code", "replica_id", "cause")
        return cls(type(exc).__name__, getattr(exc, "message", str(exc)),
                   {k: getattr(exc, k) for k in names if getattr(exc, k, None) is not None})

    def to_exc(self) -> OserveError:
        """The oserve error to raise in the driver (a ReplicaError for an unknown kind)."""
        f = self.fields
        if self.kind == "InvalidRequestError":
            return InvalidRequestError(self.message, param=f.get("param"), code=f.get("code"))
        if self.kind == "RequestAbortedError":
            return RequestAbortedError(self.message, replica_id=f.get("replica_id"), code=f.get("code"))
        if self.kind == "EngineStartError":
            return EngineStartError(self.message, cause=f.get("cause", "engine_error"), replica_id=f.get("replica_id"))
        return ReplicaError(self.message, replica_id=f.get("replica_id"), code=f.get("code") or "engine_error")


def actor_spec(spec: ReplicaSpec, node: RayNode) -> ReplicaSpec:
    """The spec the actor starts: core ids mapped to the node's physical cores; GPU ids left to Ray.

    Ray sets ``CUDA_VISIBLE_DEVICES`` in the actor to the GPUs of its placement group bundle, so the
    plan's GPU ids (which only count devices here) are dropped.

    Raises:
        ConfigError: a core id out of range on the node.
    """
    update: dict[str, Any] = {"devices": None}
    if spec.cpu_cores is not None and node.spec.device_type == "cpu":
        update["cpu_cores"] = node.physical_cores(tuple(spec.cpu_cores))
    return spec.model_copy(update=update)


class EngineActor:
    """Runs one :class:`~oserve.backends.vllm.VLLMReplica` inside a Ray actor process.

    Wrapped with ``ray.remote`` by :class:`RayBackend` (so importing this module needs no Ray). Every
    method is async: the actor runs one event loop and serves concurrent requests on it.
    """

    def __init__(self, spec: ReplicaSpec, replica_id: str, start_timeout_s: float) -> None:
        self.spec = spec
        self.replica_id = replica_id
        self.start_timeout_s = start_timeout_s
        self._replica: Any = None
        self._outbox: list[tuple[str, TokenChunk | RemoteError]] = []
        self._has_items: asyncio.Event | None = None
        self._pumps: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> dict[str, Any] | RemoteError:
        """Start the engine (with VLLMBackend's checks and warm-up); returns facts about it."""
        import ray

        from oserve.backends.vllm import VLLMBackend

        # Cores are oserve's to share during a make-before-break switch; Ray's CPU resource is the guard.
        backend = VLLMBackend(start_timeout_s=self.start_timeout_s, allow_core_sharing=True)
        try:
            self._replica = await backend.start_replica(self.spec, self.replica_id)
        except OserveError as exc:
            return RemoteError.from_exc(exc)
        return {"max_model_len": self._replica.max_model_len, "start_time_s": self._replica.start_time_s,
                "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams):
        """Stream the request's chunks; an oserve error ends the stream as a :class:`RemoteError`."""
        try:
            async for chunk in self._replica.generate(request_id, prompt, params):
                yield chunk
        except OserveError as exc:
            yield RemoteError.from_exc(exc)

    async def submit(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        """Start a request whose chunks go out through :meth:`events` (multiplexed streaming)."""
        self._pumps[request_id] = asyncio.get_running_loop().create_task(self._pump(request_id, prompt, params))

    async def _pump(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        try:
            async for chunk in self._replica.generate(request_id, prompt, params):
                self._post(request_id, chunk)
        except OserveError as exc:
            self._post(request_id, RemoteError.from_exc(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the driver, never lost
            self._post(request_id, RemoteError("ReplicaError", f"replica {self.replica_id} failed: {exc!r}",
                                               {"replica_id": self.replica_id, "code": "engine_error"}))
        finally:
            self._pumps.pop(request_id, None)

    def _post(self, request_id: str, item: TokenChunk | RemoteError) -> None:
        self._outbox.append((request_id, item))
        if self._has_items is not None:
            self._has_items.set()

    async def events(self):
        """One endless stream per replica: each item is the list of ``(request_id, chunk or error)``
        produced since the previous item (about one engine step for all running requests)."""
        if self._has_items is None:
            self._has_items = asyncio.Event()
        while True:
            if not self._outbox:
                self._has_items.clear()
                await self._has_items.wait()
            batch, self._outbox = self._outbox, []
            yield batch

    async def abort(self, request_id: str) -> None:
        # The engine ends the request with finish reason "abort", which its pump forwards, as locally.
        await self._replica.abort(request_id)

    async def stats(self) -> ReplicaStats:
        return await self._replica.stats()

    async def health(self) -> bool:
        return await self._replica.health()

    async def state(self) -> str:
        return self._replica.state

    async def drain(self, timeout_s: float) -> int:
        return await self._replica.drain(timeout_s)

    async def stop(self) -> None:
        if self._replica is not None:
            await self._replica.stop()

    async def count_tokens(self, prompt: str | list[int]) -> int:
        return self._replica.count_tokens(prompt)
