"""Helpers of the endpoint unit tests: a real uvicorn server on 127.0.0.1 over FakeBackend replicas.

A uniquely named module (not ``conftest``) so tests can import its constants safely."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from oserve.backends.base import ReplicaSpec
from oserve.server import create_app
from oserve.server.router import Router
from oserve.testing.fake_backend import FakeBackend, FakeReplica, FakeReplicaOptions

MODEL = "fake-model"
SPEC_MAX_MODEL_LEN = 4096
EFFECTIVE_MAX_MODEL_LEN = 1024
MAX_BODY_BYTES = 64 * 1024


@dataclass
class RunningServer:
    base_url: str
    app: FastAPI
    router: Router
    backend: FakeBackend
    replicas: list[FakeReplica]

    async def total_running(self) -> int:
        return sum([(await r.stats()).running or 0 for r in self.replicas])


def make_spec(variant: str = "v0", max_num_seqs: int = 64) -> ReplicaSpec:
    return ReplicaSpec(variant=variant, model="fake", served_model_name=MODEL, max_model_len=SPEC_MAX_MODEL_LEN,
                       max_num_seqs=max_num_seqs)


@asynccontextmanager
async def _serve(
    n_replicas: int = 2,
    options: FakeReplicaOptions | None = None,
    api_key: str | None = None,
    monitor: object | None = None,
    max_num_seqs: int = 64,
    replica_class: type[FakeReplica] | None = None,
    timeout_keep_alive_s: int = 5,
    **app_kwargs: object,
) -> AsyncIterator[RunningServer]:
    options = options or FakeReplicaOptions(token_delay_s=0.002, effective_max_model_len=EFFECTIVE_MAX_MODEL_LEN)
    backend = FakeBackend(options)
    router = Router(retry_after_s=2.0)
    if replica_class is None:
        replicas = [await backend.start_replica(make_spec(max_num_seqs=max_num_seqs), f"r{i}")
                    for i in range(n_replicas)]
    else:  # a test's own FakeReplica subclass (e.g. one that fails in a given way)
        replicas = [replica_class(make_spec(max_num_seqs=max_num_seqs), f"r{i}", options) for i in range(n_replicas)]
    for r in replicas:
        router.add(r)
    app = create_app(router, served_model_names=[MODEL, "alias"], api_key=api_key, monitor=monitor,
                     max_body_bytes=MAX_BODY_BYTES, **app_kwargs)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           timeout_keep_alive=timeout_keep_alive_s))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, router, backend, replicas)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def serve_factory() -> Callable[..., AbstractAsyncContextManager[RunningServer]]:
    """``async with serve(n_replicas=2, options=..., api_key=...) as srv:`` runs a server for one test."""
    return _serve
