"""Ray backend: each replica is a Ray actor hosting one vLLM engine, on the node the plan names.

What runs where:

- driver (the ``oserve serve`` process): endpoint, router, monitor, orchestrator, and one
  :class:`RayReplica` handle per replica (plus the model's tokenizer, for counting prompt tokens).
- each replica: a placement group of one bundle sized to the variant (``CPU``: cores x
  ``cpus_per_core``; GPUs: ``GPU`` = TP x PP and one ``CPU``; strategy ``STRICT_PACK``) pinned to
  the node through its ``ray.io/node-id`` label, and in it an async actor
  (:class:`~oserve.backends.ray_actor.EngineActor`) that runs
  :class:`~oserve.backends.vllm.VLLMBackend`'s replica code in its own process. vLLM starts its
  engine core as a child of that actor, on the same node.

Tokens come back through Ray streaming generators (async actor methods called with
``num_returns="streaming"``). By default (``multiplexed=True``) each replica has one long-lived
stream, ``EngineActor.events``, whose items are the ``(request_id, TokenChunk)`` pairs produced since
the previous item (about one engine step of all running requests); a request is one ``submit`` call
and a driver task hands each chunk to its request. With ``multiplexed=False`` each request has its
own stream (``EngineActor.generate``, one Ray item per request and token).

Errors raised on purpose in the actor (validation, drain abort, engine failure) come back as data
and are raised again as the same typed oserve errors; the actor's death (killed, crashed, its node
gone) is a :class:`~oserve.errors.ReplicaError` with code ``"replica_died"`` and marks the replica
``failed``, so the orchestrator's health check replaces it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.backends.ray_actor import EngineActor, RemoteError, actor_spec
from oserve.backends.ray_cluster import NODE_LABEL, ClusterChange, RayClusterWatcher, RayNode
from oserve.errors import (
    ConfigError,
    EngineStartError,
    ReplicaError,
)

__all__ = ["RayBackend", "RayReplica"]

log = logging.getLogger(__name__)


def _died(replica_id: str, exc: BaseException) -> ReplicaError:
    return ReplicaError(f"replica {replica_id} died: {type(exc).__name__}: {str(exc)[:300]}",
                        replica_id=replica_id, code="replica_died")


class RayReplica(Replica):
    """The driver's handle on one engine actor. Created by :meth:`RayBackend.start_replica`.

    Attributes:
        node: the Ray node the actor runs on.
        actor: the Ray actor handle.
        actor_node_id: the node id the actor reported (equals ``node.node_id``).
        requests_served: requests that finished on this replica.
    """

    def __init__(self, replica_id: str, spec: ReplicaSpec, node: RayNode, actor: Any, placement_group: Any,
                 info: dict[str, Any], tokenizer: Any, control_timeout_s: float,
                 on_stop: Callable[[str], None] | None = None, multiplexed: bool = True) -> None:
        self.replica_id = replica_id
        self.spec = spec
        self.node = node
        self.actor = actor
        self.actor_node_id = str(info.get("node_id", ""))
        self.max_model_len = int(info["max_model_len"])
        self.start_time_s = float(info.get("start_time_s", 0.0))
        self._pg = placement_group
        self._tokenizer = tokenizer
        self._control_timeout_s = control_timeout_s
        self._on_stop = on_stop
        self._state: ReplicaState = "ready"
        self._in_flight: set[str] = set()
        self.requests_served = 0
        self.multiplexed = multiplexed
        self._queues: dict[str, asyncio.Queue[TokenChunk | RemoteError | ReplicaError]] = {}
        self._demux: asyncio.Task[None] | None = None

    @property
    def state(self) -> ReplicaState:
        return self._state

    def count_tokens(self, prompt: str | list[int]) -> int:
        """Prompt tokens, with the driver's copy of the tokenizer (or, without one, the actor's)."""
        if isinstance(prompt, list):
            return len(prompt)
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(prompt, add_special_tokens=False))
        import ray

        return int(ray.get(self.actor.count_tokens.remote(prompt), timeout=self._control_timeout_s))

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not taking requests",
                               replica_id=self.replica_id, code="replica_not_ready")
        inner = self._generate_muxed if self.multiplexed else self._generate_streamed
        async for chunk in inner(request_id, prompt, params):
            yield chunk

    # ------------------------------------------------------------- multiplexed streaming
    def _start_demux(self) -> None:
        if self._demux is None or self._demux.done():
            self._demux = asyncio.get_running_loop().create_task(self._demux_loop(), name=f"oserve-demux-{self.replica_id}")

    async def _demux_loop(self) -> None:
        """Read the actor's event stream and hand each chunk to its request's queue."""
        import ray

        try:
            async for ref in self.actor.events.options(num_returns="streaming").remote():
                for rid, item in await ref:
                    q = self._queues.get(rid)
                    if q is not None:
                        q.put_nowait(item)
            err: ReplicaError = ReplicaError(f"replica {self.replica_id}: event stream ended",
                                             replica_id=self.replica_id, code="engine_error")
        except ray.exceptions.RayActorError as exc:
            if self._state != "stopped":
                self._state = "failed"
            err = _died(self.replica_id, exc)
        except ray.exceptions.RayError as exc:
            err = ReplicaError(f"replica {self.replica_id} failed: {type(exc).__name__}: {str(exc)[:300]}",
                               replica_id=self.replica_id, code="engine_error")
        for q in self._queues.values():
            q.put_nowait(err)

    async def _generate_muxed(self, request_id: str, prompt: str | list[int],
                              params: SamplingParams) -> AsyncIterator[TokenChunk]:
        import ray

        self._start_demux()
        q: asyncio.Queue[TokenChunk | RemoteError | ReplicaError] = asyncio.Queue()
        self._queues[request_id] = q
        self._in_flight.add(request_id)
        done = False
        try:
            try:
                await self.actor.submit.remote(request_id, prompt, params)
            except ray.exceptions.RayActorError as exc:
                self._state = "failed"
                raise _died(self.replica_id, exc) from exc
            while not done:
                item = await q.get()
                if isinstance(item, ReplicaError):
                    raise item
                if isinstance(item, RemoteError):
                    raise item.to_exc()
                done = item.finished
                if done:
                    self.requests_served += 1
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            if not done:
                self._abort_nowait(request_id)
            raise
        finally:
            self._queues.pop(request_id, None)
            self._in_flight.discard(request_id)

    # ------------------------------------------------------------- one stream per request
    async def _generate_streamed(self, request_id: str, prompt: str | list[int],
                                 params: SamplingParams) -> AsyncIterator[TokenChunk]:
        import ray

        self._in_flight.add(request_id)
        stream = self.actor.generate.options(num_returns="streaming").remote(request_id, prompt, params)
        done = False
        try:
            async for ref in stream:
                item = await ref
                if isinstance(item, RemoteError):
                    raise item.to_exc()
                done = item.finished
                if done:
                    self.requests_served += 1
                yield item
        except ray.exceptions.RayActorError as exc:
            self._state = "failed"
            raise _died(self.replica_id, exc) from exc
        except ray.exceptions.RayError as exc:
            raise ReplicaError(f"replica {self.replica_id} failed: {type(exc).__name__}: {str(exc)[:300]}",
                               replica_id=self.replica_id, code="engine_error") from exc
        except (asyncio.CancelledError, GeneratorExit):
            # The consumer went away (client disconnect): free the engine slot on the actor.
            if not done:
                self._abort_nowait(request_id)
            raise
        finally:
            self._in_flight.discard(request_id)

    def _abort_nowait(self, request_id: str) -> None:
        try:
            self.actor.abort.remote(request_id)
        except Exception:  # noqa: BLE001 - the actor may be gone; nothing left to free then
            log.debug("abort of %s on %s failed", request_id, self.replica_id, exc_info=True)

    async def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Await an actor method; the actor's death marks this replica failed and raises ReplicaError."""
        import ray

        try:
            return await asyncio.wait_for(getattr(self.actor, method).remote(*args),
                                          timeout=timeout_s or self._control_timeout_s)
        except ray.exceptions.RayActorError as exc:
            if self._state != "stopped":
                self._state = "failed"
            raise _died(self.replica_id, exc) from exc

    async def abort(self, request_id: str) -> None:
        try:
            await self._call("abort", request_id)
        except ReplicaError:
            pass  # a dead actor holds no request

    async def stats(self) -> ReplicaStats:
        return await self._call("stats")

    async def health(self) -> bool:
        if self._state in ("stopped", "failed"):
            return False
        try:
            ok = bool(await self._call("health"))
        except (ReplicaError, TimeoutError):
            return False
        if not ok:
            try:
                if await self._call("state") == "failed":
                    self._state = "failed"
            except (ReplicaError, TimeoutError):
                pass
        return ok

    async def drain(self, timeout_s: float) -> int:
        if self._state == "ready":
            self._state = "draining"
        return int(await self._call("drain", timeout_s, timeout_s=timeout_s + self._control_timeout_s))

    async def stop(self) -> None:
        """Stop the engine, then kill the actor and free its placement group. Idempotent."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if self._state == "stopped":
            return
        was_failed = self._state == "failed"
        self._state = "stopped"
        if self._demux is not None:
            self._demux.cancel()
        for q in self._queues.values():  # requests still waiting end with an explicit error
            q.put_nowait(ReplicaError(f"replica {self.replica_id} was stopped", replica_id=self.replica_id,
                                      code="replica_stopped"))
        try:
            if not was_failed:
                await self._call("stop")
        except (ReplicaError, TimeoutError) as exc:
            log.debug("stop of %s: %s", self.replica_id, exc)
        finally:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
            try:
                remove_placement_group(self._pg)
            except Exception:  # noqa: BLE001 - its node may be gone with it
                log.debug("removing the placement group of %s failed", self.replica_id, exc_info=True)
            if self._on_stop is not None:
                self._on_stop(self.replica_id)


class RayBackend(Backend):
    """Starts replicas as Ray actors on the nodes of a Ray cluster.

    Args:
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
            a local Ray instance (``ray.init()``) that is shut down with :meth:`close`.
        local_node_name: name (label ``oserve-node``) of the node of a local Ray instance started
            because ``address`` is None, so a config's ``cluster.nodes`` can name it (default
            ``"local"``, as in the one-machine examples).
        namespace: Ray namespace of the actors.
        runtime_env: Ray runtime environment of the job (e.g. ``{"env_vars": {"PYTHONPATH": ...}}``
            when oserve is not installed on the workers).
        start_timeout_s: how long an engine may take to start in its actor, seconds.
        placement_timeout_s: how long a replica's placement group may wait for room on its node,
            seconds; past it the start fails with ``EngineStartError(cause="resource_busy")``.
        control_timeout_s: time limit of control calls to an actor (stats, health, abort, stop), s.
        cpus_per_core: Ray ``CPU`` resource reserved per pinned core. 1.0 lets no two replicas share a
            core; 0.5 lets an old and a new replica overlap on a core during a make-before-break switch
            (what the orchestrator does on CPU; oserve's planner accounts for memory itself).
        default_gpu_memory_bytes: memory per GPU for nodes without the ``oserve-device-memory-bytes`` label.
        init_kwargs: more keyword arguments for ``ray.init`` (e.g. ``object_store_memory``).
        multiplexed: stream all of a replica's requests through one Ray streaming generator whose
            items are the chunks of one engine step (one Ray item per step instead of one per request
            and step); False: one streaming generator per request.

    Raises:
        ConfigError: a timeout <= 0 or ``cpus_per_core`` outside (0, 1].

    No side effects: Ray is contacted on :meth:`connect` (or the first :meth:`start_replica`).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, local_node_name: str = "local", namespace: str = "oserve",
                 runtime_env: dict | None = None,
                 start_timeout_s: float = 300.0, placement_timeout_s: float = 60.0, control_timeout_s: float = 30.0,
                 cpus_per_core: float = 1.0, default_gpu_memory_bytes: int | None = None,
                 init_kwargs: dict[str, Any] | None = None, multiplexed: bool = True) -> None:
        for name, val in (("start_timeout_s", start_timeout_s), ("placement_timeout_s", placement_timeout_s),
                          ("control_timeout_s", control_timeout_s)):
            if not val > 0:
                raise ConfigError(f"{name} must be > 0, got {val}", field=f"backend.params.{name}", allowed="> 0 s")
        if not 0 < cpus_per_core <= 1:
            raise ConfigError(f"cpus_per_core must be in (0, 1], got {cpus_per_core}",
                              field="backend.params.cpus_per_core", allowed="(0, 1]")
        self.address = address
        self.local_node_name = local_node_name
        self.namespace = namespace
        self.runtime_env = runtime_env
        self.start_timeout_s = float(start_timeout_s)
        self.placement_timeout_s = float(placement_timeout_s)
        self.control_timeout_s = float(control_timeout_s)
        self.cpus_per_core = float(cpus_per_core)
        self.init_kwargs = dict(init_kwargs or {})
        self.multiplexed = bool(multiplexed)
        self.watcher = RayClusterWatcher(default_gpu_memory_bytes=default_gpu_memory_bytes)
        self.replicas: dict[str, RayReplica] = {}
        self._owns_ray = False
        self._actor_cls: Any = None
        self._tokenizers: dict[str, Any] = {}

    # ----------------------------------------------------------------- cluster
    def connect(self) -> ClusterChange:
        """Join the cluster at ``address`` (or start a local one) unless Ray is already initialised,
        then read its nodes. Blocking (seconds when it starts Ray).

        Raises:
            ConfigError: see :meth:`RayClusterWatcher.refresh`.
        """
        import ray

        if not ray.is_initialized():
            kwargs = dict(self.init_kwargs)
            if self.address is None:
                kwargs.setdefault("labels", {NODE_LABEL: self.local_node_name})
            ray.init(address=self.address, namespace=self.namespace, runtime_env=self.runtime_env,
                     log_to_driver=False, **kwargs)
            self._owns_ray = True
        if self._actor_cls is None:
            self._actor_cls = ray.remote(EngineActor)
        return self.watcher.refresh()

    def refresh_cluster(self) -> ClusterChange:
        """Read Ray's nodes now; replicas on nodes that left are marked ``failed`` (the orchestrator's
        health check then takes them out and re-plans). Poll it from the composition root.

        Side effects: replica states; a call to Ray's GCS.
        """
        change = self.connect()
        alive = {n.node_id for n in self.watcher.nodes.values()}
        for r in self.replicas.values():
            if r.node.node_id not in alive and r.state in ("ready", "draining"):
                log.warning("replica %s: node %s left the Ray cluster", r.replica_id, r.node.name)
                r._state = "failed"
        return change

    @property
    def cluster(self):
        """The cluster seen at the last refresh (:class:`~oserve.types.ClusterSpec`)."""
        return self.watcher.cluster

    async def start(self) -> None:
        """Connect to Ray (see :meth:`connect`) without blocking the event loop."""
        await asyncio.to_thread(self.connect)

    async def close(self) -> None:
        """Stop every replica still running, then shut Ray down if this backend started it."""
        await asyncio.gather(*(r.stop() for r in list(self.replicas.values())), return_exceptions=True)
        self.replicas.clear()
        if self._owns_ray:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._owns_ray = False

    # ----------------------------------------------------------------- replicas
    def _node_for(self, spec: ReplicaSpec, replica_id: str) -> RayNode:
        nodes = self.watcher.nodes
        name = spec.node
        if name is None:
            if len(nodes) != 1:
                raise EngineStartError(f"replica {replica_id}: the spec names no node and the Ray cluster has "
                                       f"{len(nodes)}", cause="resource_busy", replica_id=replica_id)
            name = next(iter(nodes))
        node = nodes.get(name)
        if node is None:
            raise EngineStartError(f"replica {replica_id}: Ray node {name!r} is not in the cluster (alive: "
                                   f"{', '.join(sorted(nodes)) or 'none'})", cause="resource_busy",
                                   replica_id=replica_id)
        return node

    def _bundle(self, spec: ReplicaSpec, node: RayNode) -> dict[str, float]:
        if node.spec.device_type == "cpu":
            cores = len(spec.cpu_cores) if spec.cpu_cores else spec.tensor_parallel_size * spec.pipeline_parallel_size
            return {"CPU": round(cores * self.cpus_per_core, 4)}
        return {"GPU": float(spec.tensor_parallel_size * spec.pipeline_parallel_size), "CPU": 1.0}

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> RayReplica:
        """Place a placement group on the spec's node, start the engine actor in it and wait until
        the engine has served its warm-up request.

        Raises:
            EngineStartError: cause ``"resource_busy"`` (unknown or gone node, no room on it within
            ``placement_timeout_s``), ``"timeout"``, or the engine's own cause (``"bad_model_path"``,
            ``"out_of_memory"``, ``"engine_error"``).
        """
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        await asyncio.to_thread(self.refresh_cluster)
        node = self._node_for(spec, replica_id)
        try:
            remote_spec = actor_spec(spec, node)
        except ConfigError as exc:
            raise EngineStartError(f"replica {replica_id}: {exc}", cause="resource_busy", replica_id=replica_id) from exc
        bundle = self._bundle(spec, node)
        pg = placement_group([bundle], strategy="STRICT_PACK", name=f"oserve-{replica_id}",
                             bundle_label_selector=[{"ray.io/node-id": node.node_id}])
        actor = None
        try:
            try:
                await asyncio.wait_for(pg.ready(), timeout=self.placement_timeout_s)
            except TimeoutError as exc:
                raise EngineStartError(f"replica {replica_id}: no room for {bundle} on Ray node {node.name!r} "
                                       f"after {self.placement_timeout_s:.0f} s", cause="resource_busy",
                                       replica_id=replica_id) from exc
            actor = self._actor_cls.options(
                name=f"oserve-{replica_id}", num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
                max_restarts=0, max_concurrency=10_000,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
            ).remote(remote_spec, replica_id, self.start_timeout_s)
            try:
                info = await asyncio.wait_for(actor.start.remote(), timeout=self.start_timeout_s + 30)
            except TimeoutError as exc:
                raise EngineStartError(f"replica {replica_id}: engine not up after {self.start_timeout_s:.0f} s",
                                       cause="timeout", replica_id=replica_id) from exc
            except ray.exceptions.RayError as exc:
                raise EngineStartError(f"replica {replica_id}: the engine actor failed: {str(exc)[:500]}",
                                       cause="engine_error", replica_id=replica_id) from exc
            if isinstance(info, RemoteError):
                raise info.to_exc()
        except BaseException:
            if actor is not None:
                ray.kill(actor, no_restart=True)
            remove_placement_group(pg)
            raise
        tokenizer = await asyncio.to_thread(self._tokenizer, spec.model)
        replica = RayReplica(replica_id, spec, node, actor, pg, info, tokenizer, self.control_timeout_s,
                             on_stop=self.forget, multiplexed=self.multiplexed)
        self.replicas[replica_id] = replica
        log.info("replica %s (%s) ready on Ray node %s in %.1f s", replica_id, spec.variant, node.name,
                 replica.start_time_s)
        return replica

    def _tokenizer(self, model: str) -> Any:
        """The model's tokenizer in the driver, or None when the checkpoint is not on this machine."""
        if model not in self._tokenizers:
            try:
                from transformers import AutoTokenizer

                self._tokenizers[model] = AutoTokenizer.from_pretrained(model)
            except Exception:  # noqa: BLE001 - fall back to the actor's tokenizer
                log.info("no local tokenizer for %s; counting tokens in the actors", model)
                self._tokenizers[model] = None
        return self._tokenizers[model]

    def forget(self, replica_id: str) -> None:
        """Drop a stopped replica from :attr:`replicas`."""
        self.replicas.pop(replica_id, None)
