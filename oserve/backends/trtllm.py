"""TensorRT-LLM backend: replicas run TensorRT-LLM's Python LLM API (``tensorrt_llm.LLM``) in-process.

**Status: written against TensorRT-LLM's documented LLM API (``LLM(...)``, ``generate_async(...,
streaming=True)``, ``RequestOutput.outputs[0].text_diff`` / ``token_ids_diff`` / ``finish_reason``,
``RequestOutput.abort()``, ``LLM.get_stats_async``, ``LLM.shutdown()``; the result and
iteration-stats classes were checked against ``tensorrt_llm/executor/result.py`` of TensorRT-LLM's
public repository); it has not run in this project's CI, which has no GPU and no TensorRT-LLM wheel.** Validate it on an NVIDIA GPU with
``python bench/gpu/trtllm_check.py`` (it runs :func:`oserve.testing.backend_check.check_backend`).

``tensorrt_llm`` is imported only when a replica starts; without it :meth:`TRTLLMBackend.start_replica`
raises :class:`~oserve.errors.EngineStartError` (cause ``"engine_error"``) saying to install the
``trtllm`` extra.

A :class:`~oserve.backends.base.ReplicaSpec` maps to ``LLM(model, dtype, tensor_parallel_size,
pipeline_parallel_size, max_batch_size=max_num_seqs, max_seq_len=max_model_len,
max_num_tokens=max_num_batched_tokens, kv_cache_config=KvCacheConfig(free_gpu_memory_fraction=
memory_utilization), quant_config=QuantConfig(quant_algo=...))``; ``devices`` become
``CUDA_VISIBLE_DEVICES`` while the engine is built. ``quantization`` names are those of
:data:`QUANT_ALGOS` (with the PyTorch flow, a pre-quantized checkpoint carries its own quantization
and ``quantization`` may stay None).

Errors: ``ValueError`` from the LLM API's request checks (prompt longer than ``max_seq_len``, bad
sampling values) and TensorRT-LLM's ``RequestError`` become :class:`~oserve.errors.InvalidRequestError`;
anything else while serving is a :class:`~oserve.errors.ReplicaError`, and an engine that reports
itself dead (``EngineDeadError``) turns the replica ``"failed"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.backends.hf_tokenizer import HFTokenizerMixin
from oserve.errors import EngineStartError, InvalidRequestError, ReplicaError, RequestAbortedError

__all__ = ["TRTLLMBackend", "TRTLLMReplica", "QUANT_ALGOS", "llm_kwargs", "trtllm_available"]

log = logging.getLogger(__name__)

#: ``ReplicaSpec.quantization`` -> ``tensorrt_llm.llmapi.QuantAlgo`` member name.
QUANT_ALGOS: dict[str, str] = {
    "fp8": "FP8",
    "int8": "W8A8_SQ_PER_CHANNEL",
    "w8a8": "W8A8_SQ_PER_CHANNEL",
    "int4": "W4A16",
    "w4a16": "W4A16",
    "awq": "W4A16_AWQ",
    "int4_awq": "W4A16_AWQ",
    "gptq": "W4A16_GPTQ",
    "nvfp4": "NVFP4",
}

_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort", "timeout": "abort"}
_ENV_LOCK = threading.Lock()


def trtllm_available() -> bool:
    """True if ``tensorrt_llm`` can be imported (imports it)."""
    try:
        import tensorrt_llm  # noqa: F401
    except Exception:  # ImportError, or a CUDA library missing at import
        return False
    return True


def llm_kwargs(spec: ReplicaSpec) -> dict[str, Any]:
    """The keyword arguments of ``tensorrt_llm.LLM`` for ``spec``, without TensorRT-LLM objects.

    ``kv_cache_free_gpu_memory_fraction`` and ``quant_algo`` are turned into ``KvCacheConfig`` and
    ``QuantConfig`` by :func:`_build_llm`.

    Raises:
        EngineStartError: ``spec.quantization`` is not in :data:`QUANT_ALGOS` (cause ``"engine_error"``).
    """
    kw: dict[str, Any] = dict(
        model=spec.model, dtype=spec.dtype, tensor_parallel_size=spec.tensor_parallel_size,
        pipeline_parallel_size=spec.pipeline_parallel_size, max_batch_size=spec.max_num_seqs,
        max_seq_len=spec.max_model_len,
    )
    if spec.max_num_batched_tokens is not None:
        kw["max_num_tokens"] = spec.max_num_batched_tokens
    if spec.memory_utilization is not None:
        kw["kv_cache_free_gpu_memory_fraction"] = spec.memory_utilization
    if spec.quantization is not None:
        algo = QUANT_ALGOS.get(spec.quantization.lower())
        if algo is None:
            raise EngineStartError(
                f"variant {spec.variant!r}: quantization {spec.quantization!r} is not supported by the TensorRT-LLM "
                f"backend (allowed: {', '.join(sorted(QUANT_ALGOS))})", cause="engine_error")
        kw["quant_algo"] = algo
    return kw


def _build_llm(spec: ReplicaSpec, extra: dict[str, Any]) -> Any:
    from tensorrt_llm import LLM
    from tensorrt_llm.llmapi import KvCacheConfig, QuantAlgo, QuantConfig

    kw = llm_kwargs(spec)
    fraction = kw.pop("kv_cache_free_gpu_memory_fraction", None)
    if fraction is not None:
        kw["kv_cache_config"] = KvCacheConfig(free_gpu_memory_fraction=fraction)
    algo = kw.pop("quant_algo", None)
    if algo is not None:
        kw["quant_config"] = QuantConfig(quant_algo=getattr(QuantAlgo, algo))
    kw.update(extra)
    with _ENV_LOCK:
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            if spec.devices is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec.devices)
            return LLM(**kw)
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def is_client_error(exc: BaseException) -> bool:
    if isinstance(exc, ValueError):
        return True
    return type(exc).__name__ == "RequestError"  # tensorrt_llm.executor.utils.RequestError


def _is_engine_dead(exc: BaseException) -> bool:
    return type(exc).__name__ == "EngineDeadError"


class TRTLLMReplica(HFTokenizerMixin, Replica):
    """One TensorRT-LLM ``LLM`` instance. Created by :meth:`TRTLLMBackend.start_replica`."""

    def __init__(self, replica_id: str, spec: ReplicaSpec, llm: Any, on_stop: Callable[[str], None] | None = None
                 ) -> None:
        self.replica_id = replica_id
        self.spec = spec
        self.max_model_len = spec.max_model_len
        self.start_time_s: float | None = None
        self._llm = llm
        self._tokenizer = getattr(llm, "tokenizer", None)
        self._on_stop = on_stop
        self._state: ReplicaState = "ready"
        self._results: dict[str, Any] = {}
        self._aborted_by_oserve: dict[str, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def state(self) -> ReplicaState:
        return self._state

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams
                       ) -> AsyncIterator[TokenChunk]:
        from tensorrt_llm import SamplingParams as TSamplingParams

        if self._state != "ready":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not taking requests",
                               replica_id=self.replica_id, code="replica_not_ready")
        try:
            tparams = TSamplingParams(
                max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else None, seed=params.seed,
                stop=list(params.stop) or None, ignore_eos=params.ignore_eos, n=1)
            result = self._llm.generate_async(prompt, tparams, streaming=True)
        except Exception as exc:
            raise self._translate(exc) from exc
        self._results[request_id] = result
        self._idle.clear()
        sent = 0
        finished = False
        try:
            async for out in result:
                c = out.outputs[0]
                ids = tuple(c.token_ids_diff)
                sent = len(c.token_ids)
                finished = bool(out.finished)
                reason = _FINISH.get(c.finish_reason, c.finish_reason) if finished else None
                if finished and reason == "abort" and request_id in self._aborted_by_oserve:
                    break
                yield TokenChunk(text=c.text_diff, token_ids=ids, finished=finished, finish_reason=reason,
                                 prompt_tokens=len(out.prompt_token_ids or ()), completion_tokens=sent)
                if finished:
                    return
            if request_id in self._aborted_by_oserve:
                raise RequestAbortedError(f"request {request_id} aborted: {self._aborted_by_oserve[request_id]}",
                                          replica_id=self.replica_id, code="aborted")
            if not finished:
                raise ReplicaError(f"replica {self.replica_id} ended request {request_id} early",
                                   replica_id=self.replica_id, code="incomplete")
        except (RequestAbortedError, ReplicaError, InvalidRequestError):
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._abort_quietly(result)  # the consumer went away: free the slot
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            self._results.pop(request_id, None)
            self._aborted_by_oserve.pop(request_id, None)
            if not self._results:
                self._idle.set()

    def _translate(self, exc: BaseException) -> Exception:
        if is_client_error(exc):
            return InvalidRequestError(f"the engine refused the request: {exc}", param="prompt", code="invalid_value")
        if _is_engine_dead(exc):
            self._state = "failed"
        return ReplicaError(f"replica {self.replica_id} failed: {type(exc).__name__}: {exc}",
                            replica_id=self.replica_id, code="engine_error")

    def _abort_quietly(self, result: Any) -> None:
        try:
            result.abort()
        except Exception:  # the engine may be gone already
            log.debug("abort on %s failed", self.replica_id, exc_info=True)

    async def abort(self, request_id: str) -> None:
        result = self._results.get(request_id)
        if result is not None:
            self._abort_quietly(result)

    async def stats(self) -> ReplicaStats:
        """Live stats from the latest iteration stats (``LLM.get_stats_async``), capped by the requests in flight.

        Keys read: ``numActiveRequests``, ``numQueuedRequests``, ``kvCacheStats.usedNumBlocks`` /
        ``maxNumBlocks``. Iteration stats need ``enable_iter_perf_stats=True`` (passed by default);
        reading drains the queued ones and waits 0.05 s for more. With no new iteration (idle engine)
        and nothing in flight, running and waiting are 0; with requests in flight, unknown (None).
        """
        in_flight = len(self._results)
        out = ReplicaStats(max_model_len=self.max_model_len, extra={"in_flight": in_flight})
        if self._state in ("stopped", "failed"):
            return out
        latest: dict[str, Any] | None = None
        try:
            async for item in self._llm.get_stats_async(timeout=0.05):
                latest = item if isinstance(item, dict) else json.loads(item)
        except Exception as exc:
            log.debug("replica %s: stats unreadable: %s", self.replica_id, exc)
        if latest is None:
            out.running = 0 if in_flight == 0 else None
            out.waiting = 0 if in_flight == 0 else None
            return out
        running = int(latest.get("numActiveRequests", 0))
        waiting = int(latest.get("numQueuedRequests", 0))
        out.running = min(running, in_flight)
        out.waiting = min(waiting, max(0, in_flight - out.running))
        kv = latest.get("kvCacheStats") or {}
        if kv.get("maxNumBlocks"):
            out.kv_cache_usage = float(kv.get("usedNumBlocks", 0)) / float(kv["maxNumBlocks"])
        return out

    async def health(self) -> bool:
        return self._state in ("ready", "draining")

    async def drain(self, timeout_s: float) -> int:
        if self._state == "ready":
            self._state = "draining"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
            return 0
        except TimeoutError:
            left = list(self._results)
            for rid in left:
                self._aborted_by_oserve[rid] = f"replica {self.replica_id} drain timeout ({timeout_s:.1f} s)"
                self._abort_quietly(self._results[rid])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=10.0)
            return len(left)

    async def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        try:
            for rid, result in list(self._results.items()):
                self._aborted_by_oserve[rid] = f"replica {self.replica_id} stopped"
                self._abort_quietly(result)
            await asyncio.to_thread(self._llm.shutdown)
        finally:
            if self._on_stop is not None:
                self._on_stop(self.replica_id)


class TRTLLMBackend(Backend):
    """Starts replicas on TensorRT-LLM's LLM API (see the module docstring: not run in this project's CI).

    Args:
        start_timeout_s: an engine not up by then fails with cause ``"timeout"``, seconds.
        llm_extra: more keyword arguments of ``tensorrt_llm.LLM`` (e.g. ``{"backend": "pytorch"}``);
            default ``{"enable_iter_perf_stats": True}`` so :meth:`TRTLLMReplica.stats` has data.
    """

    name = "trtllm"

    def __init__(self, start_timeout_s: float = 1200.0, llm_extra: dict[str, Any] | None = None) -> None:
        self.start_timeout_s = start_timeout_s
        self.llm_extra = {"enable_iter_perf_stats": True} if llm_extra is None else dict(llm_extra)
        self._devices_in_use: dict[int, str] = {}

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> TRTLLMReplica:
        """Build the ``LLM`` in a worker thread and return the replica once it served a one-token request.

        Raises:
            EngineStartError: cause ``"engine_error"`` (TensorRT-LLM not installed, unsupported
                quantization, engine failure), ``"bad_model_path"``, ``"resource_busy"`` (a GPU held
                by another replica of this backend), ``"out_of_memory"`` or ``"timeout"``.
        """
        if spec.model.startswith(("/", "./", "../", "~")) and not Path(spec.model).expanduser().exists():
            raise EngineStartError(f"replica {replica_id}: model path {spec.model!r} does not exist",
                                   cause="bad_model_path", replica_id=replica_id)
        llm_kwargs(spec)  # validates the quantization before importing anything heavy
        for d in spec.devices or ():
            if d in self._devices_in_use:
                raise EngineStartError(f"replica {replica_id}: GPU {d} already used by replica "
                                       f"{self._devices_in_use[d]}", cause="resource_busy", replica_id=replica_id)
        if not trtllm_available():
            raise EngineStartError(f"replica {replica_id}: tensorrt_llm is not installed (pip install 'oserve[trtllm]'"
                                   ", on a machine with an NVIDIA GPU)", cause="engine_error", replica_id=replica_id)
        t0 = time.monotonic()
        try:
            llm = await asyncio.wait_for(asyncio.to_thread(_build_llm, spec, self.llm_extra),
                                         timeout=self.start_timeout_s)
        except TimeoutError as exc:
            raise EngineStartError(f"replica {replica_id}: engine not up after {self.start_timeout_s:.0f} s",
                                   cause="timeout", replica_id=replica_id) from exc
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            low = text.lower()
            cause = ("out_of_memory" if "out of memory" in low or "oom" in low
                     else "bad_model_path" if "not found" in low or "no such file" in low else "engine_error")
            raise EngineStartError(f"replica {replica_id}: TensorRT-LLM failed to start ({text[:500]})",
                                   cause=cause, replica_id=replica_id) from exc
        replica = TRTLLMReplica(replica_id, spec, llm, on_stop=self._free)
        for d in spec.devices or ():
            self._devices_in_use[d] = replica_id
        try:
            async for _ in replica.generate(f"{replica_id}-warmup", "Hello", SamplingParams(max_tokens=1,
                                                                                              temperature=0.0)):
                pass
        except Exception as exc:
            await replica.stop()
            raise EngineStartError(f"replica {replica_id}: warm-up request failed: {exc}", cause="engine_error",
                                   replica_id=replica_id) from exc
        replica.start_time_s = time.monotonic() - t0
        return replica

    def _free(self, replica_id: str) -> None:
        for d in [d for d, owner in self._devices_in_use.items() if owner == replica_id]:
            del self._devices_in_use[d]
