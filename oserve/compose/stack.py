"""The serving stack (backend, router, monitor, orchestrator, OpenAI endpoint) built from a
:class:`~oserve.config.ServeConfig`: what ``oserve serve``, the demo and the pytest plugin start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from oserve.backends.base import Backend, BackendLifecycle, ClusterSource
from oserve.clock import Clock, WallClock
from oserve.compose.components import (
    build_control_planner,
    build_forecaster,
    build_serve_backend,
    build_templates,
    needs_checkpoint,
    resolve_model_path,
)
from oserve.config import ServeConfig
from oserve.errors import ConfigError

__all__ = ["Stack", "start_stack", "free_port", "watch_cluster"]

log = logging.getLogger(__name__)

#: How long the endpoint keeps an idle HTTP connection open, s: longer than clients' connection pools keep
#: one (aiohttp 15 s, httpx and the openai client 5 s), so a client never reuses one the server is closing.
KEEP_ALIVE_S = 75


def _plain_text_tokenizer() -> tuple[Callable[[str | list[int]], int], Callable[[list[dict[str, str]]], str]]:
    """Token counting and chat rendering for backends that load no checkpoint (fake, simulated):
    a token per whitespace-separated word (as :class:`~oserve.testing.fake_backend.FakeReplica` counts),
    chat turns rendered as ``role: content`` lines."""

    def count_tokens(prompt: str | list[int]) -> int:
        return len(prompt) if isinstance(prompt, list) else len(prompt.split())

    def render_chat(messages: list[dict[str, str]]) -> str:
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages) + "\nassistant:"

    return count_tokens, render_chat


def _checkpoint_tokenizer(model_path: str) -> tuple[Callable[[str | list[int]], int],
                                                     Callable[[list[dict[str, str]]], str]]:
    """Token counting and chat template of the checkpoint's Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def count_tokens(prompt: str | list[int]) -> int:
        return len(prompt) if isinstance(prompt, list) else len(tokenizer.encode(prompt, add_special_tokens=False))

    def render_chat(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return count_tokens, render_chat


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """A running serving stack. Stop it with :meth:`stop` (or ``async with``)."""

    config: ServeConfig
    app: Any
    router: Any
    monitor: Any
    backend: Backend
    orchestrator: Any = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    replicas: list[Any] = field(default_factory=list)
    server: Any = None
    server_task: asyncio.Task[None] | None = None
    cluster_task: asyncio.Task[None] | None = None
    url: str = ""

    async def serve_http(self) -> str:
        """Start uvicorn in this event loop; returns the base URL (``http://host:port``)."""
        import uvicorn

        host = self.config.server.host
        port = self.config.server.port or free_port(host)
        # keep idle connections longer than clients' pools do (aiohttp 15 s, httpx 5 s): with uvicorn's 5-s
        # default, a client reusing a connection the server is closing gets a reset (one lost request in a demo)
        ucfg = uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="on",
                              timeout_keep_alive=KEEP_ALIVE_S)
        self.server = uvicorn.Server(ucfg)
        self.server_task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.server_task.done():
                self.server_task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.05)
        self.url = f"http://{host}:{port}"
        log.info("OpenAI-compatible endpoint on %s/v1", self.url)
        return self.url

    async def stop(self) -> None:
        if self.cluster_task is not None:
            self.cluster_task.cancel()
            with contextlib.suppress(BaseException):
                await self.cluster_task
            self.cluster_task = None
        if self.server is not None:
            self.server.should_exit = True
            if self.server_task is not None:
                with contextlib.suppress(Exception):
                    await self.server_task
        if self.orchestrator is not None:
            await self.orchestrator.stop()
        for r in self.replicas:
            with contextlib.suppress(Exception):
                await r.stop()
        if isinstance(self.backend, BackendLifecycle):
            with contextlib.suppress(Exception):
                await self.backend.close()

    async def __aenter__(self) -> Stack:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def watch_cluster(source: ClusterSource, orchestrator: Any, interval_s: float, clock: Clock | None = None) -> None:
    """Poll ``source`` every ``interval_s`` seconds and hand its cluster to the orchestrator when the
    nodes differ from the ones it plans on (``Orchestrator.update_cluster``). Runs until cancelled;
    a failed poll is logged and retried at the next interval.

    Side effects: ``source.refresh_cluster()`` in a worker thread (it may block on the network).
    """
    clock = clock or WallClock()
    while True:
        await clock.sleep(interval_s)
        try:
            await asyncio.to_thread(source.refresh_cluster)
            cluster = source.cluster
            if cluster.nodes:
                await orchestrator.update_cluster(cluster)
            else:
                log.error("the backend sees no node with devices; the orchestrator keeps its cluster")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one failed poll must not end the watch
            log.exception("cluster refresh failed")


async def start_stack(config: ServeConfig, *, backend: Backend | None = None, http: bool = True) -> Stack:
    """Start replicas, the router, the monitor, the orchestrator (when configured) and the endpoint.

    Args:
        config: the validated config.
        backend: a built backend to use; None builds ``config.backend`` from the backend registry.
            A backend with ``needs_checkpoint = False`` (fake) loads no model and no tokenizer.
        http: also serve the app with uvicorn on ``config.server``.

    Raises:
        EngineStartError: a replica of the initial deployment failed to start.
        ProfileError: the orchestrator's profile table does not match the config.
    """

    from oserve.control.specs import spec_factory_from_templates
    from oserve.server import api_key_dependency
    from oserve.server.app import create_app
    from oserve.server.router import Router
    from oserve.workload.monitor import WorkloadMonitor

    clock = WallClock()
    registry = CollectorRegistry()  # monitor and orchestrator metrics; the endpoint keeps its own
    backend = backend or build_serve_backend(config, allow_core_sharing=config.orchestrator is not None)
    if needs_checkpoint(backend):
        model_path = resolve_model_path(config)
        count_tokens, render_chat = _checkpoint_tokenizer(model_path)
    else:
        model_path = config.model.path
        count_tokens, render_chat = _plain_text_tokenizer()
    scheme = config.classes.to_scheme()
    templates = build_templates(config, model_path)
    spec_factory = spec_factory_from_templates(templates, config.cluster_spec)
    router = Router(queue_max=config.server.queue_max, queue_timeout_s=config.server.queue_timeout_s,
                    replica_load=config.server.replica_load, now=clock.now)
    monitor = WorkloadMonitor(scheme, clock, registry=registry)

    stack = Stack(config=config, app=None, router=router, monitor=monitor, backend=backend, registry=registry)
    try:
        if isinstance(backend, BackendLifecycle):
            await backend.start()  # e.g. join the Ray cluster before any replica is placed on it
        if config.orchestrator is not None:
            from oserve.compose.serve_table import orchestrator_table
            from oserve.control.orchestrator import Orchestrator, OrchestratorOptions
            from oserve.control.surge import SurgeRule

            oc = config.orchestrator
            table = orchestrator_table(config)  # restricted to the config's variants, rescored if configured
            for i, rep in enumerate(config.deployment):
                need = table.variants[rep.variant].devices_per_replica
                if len(rep.device_ids) != need:
                    raise ConfigError(
                        f"deployment[{i}] gives variant {rep.variant!r} {len(rep.device_ids)} device(s) but its "
                        f"profile says it uses {need}", field=f"deployment.{i}.device_ids",
                        allowed=f"exactly {need} device id(s)")
            planner = build_control_planner(oc.planner, oc.hysteresis, oc.horizon_s, oc.parking)
            initial = config.initial_plan()
            if oc.parking is not None:  # parked (warm) replicas: kept started beside the active ones
                from oserve.policies.parking import park_plan

                initial = park_plan(initial, oc.parking.keep_warm, config.cluster_spec, table)
            stack.orchestrator = Orchestrator.build(
                backend,
                build_forecaster(oc.forecaster), planner,
                config.cluster_spec, table,
                router=router, monitor=monitor, spec_factory=spec_factory, clock=clock,
                options=OrchestratorOptions(control_interval_s=oc.control_interval_s, horizon_s=oc.horizon_s,
                                            drain_timeout_s=oc.drain_timeout_s, min_history=oc.min_history,
                                            history_bin_s=oc.history_bin_s,
                                            scale_down_window_s=(oc.hysteresis.scale_down_window_s
                                                                 if oc.hysteresis.enabled else 0.0),
                                            surge=SurgeRule(**oc.surge.model_dump()) if oc.surge is not None else None,
                                            migrate_on_drain=oc.migrate_on_drain,
                                            migration_grace_s=oc.migration_grace_s),
                initial_plan=initial, scheme=scheme, registry=registry,
            )
            await stack.orchestrator.start()
            if isinstance(backend, ClusterSource):
                stack.cluster_task = asyncio.create_task(
                    watch_cluster(backend, stack.orchestrator, oc.cluster_refresh_s, clock), name="oserve-cluster-watch")
        else:
            specs = [spec_factory(p, f"{p.variant}-{i}") for i, p in enumerate(config.deployment)]
            started = await asyncio.gather(*(backend.start_replica(s, s.variant + f"-{i}")
                                             for i, s in enumerate(specs)), return_exceptions=True)
            errors = [r for r in started if isinstance(r, BaseException)]
            stack.replicas = [r for r in started if not isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            for r in stack.replicas:
                router.add(r, state="ready")
        app = create_app(router, served_model_names=[config.model.served_name], tokenizer_counter=count_tokens,
                         prompt_renderer=render_chat, monitor=monitor, api_key=config.server.api_key,
                         max_body_bytes=config.server.max_body_bytes, scheme=scheme, clock=clock,
                         metrics_registries=(registry,),
                         on_replica_error=None if stack.orchestrator is None else stack.orchestrator.report_replica_error)
        if stack.orchestrator is not None:
            from oserve.server.admin import make_admin_router

            app.include_router(make_admin_router(stack.orchestrator, auth=api_key_dependency(config.server.api_key)))
        stack.app = app
        if http:
            await stack.serve_http()
    except BaseException:
        await stack.stop()
        raise
    return stack
