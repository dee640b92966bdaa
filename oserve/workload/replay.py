"""Open-loop trace replay against an OpenAI-compatible ``/v1/completions`` endpoint.

Each request of the trace is sent at its arrival time (scaled by ``time_scale``), without waiting
for earlier ones (open loop), as a streaming completion (server-sent events). Prompts are
synthesised to the trace's input token count; the output length is forced with ``max_tokens``
plus ``ignore_eos: true`` (a vLLM extension; ``ignore_eos=False`` omits it for servers that reject
unknown fields).

Metric definitions follow ``vllm bench serve`` (``vllm/benchmarks/serve.py``,
``calculate_metrics``): over successful requests, TTFT is the time to the first streamed chunk
with text; ITLs are the gaps between successive chunks; TPOT is
``(E2E - TTFT) / (output_tokens - 1)`` for requests with more than one output token; E2E is the
time from send to the end of the stream; request throughput is completed requests / duration;
output token throughput is output tokens / duration; duration runs from the replay's start to the
last response. Goodput counts completed requests meeting every given SLO (TTFT, TPOT, E2E) per
second; SLO attainment is that count over *all* requests sent (failed and refused requests count
as misses). Failed and refused requests are counted, never dropped.

Rows the trace marks as failed (``Trace.failed``: BurstGPT rows with zero response tokens, rows of
any format with zero output tokens) record no workload to reproduce; they are skipped by default,
as vLLM's own BurstGPT loader does (``vllm/benchmarks/datasets.py``, ``BurstGPTDataset`` keeps
``Response tokens > 0``), and counted in the summary as ``skipped_failed``. With
``include_failed=True`` they are sent with ``max_tokens = max(1, output tokens)``.

Prompt synthesis:

- With a tokenizer (``tokenizer=`` a local Hugging Face folder or a loaded tokenizer): random
  words drawn from the tokenizer's own vocabulary entries that are one space-prefixed alphabetic
  token and re-encode to exactly one token; the prompt is re-encoded (with the special tokens the
  server adds, e.g. BOS) and words are added or removed until the count is exact. Requests get
  different word sequences (seeded by request index) so prefix caching does not merge them.
- Without a tokenizer (documented approximation): ``n - 1`` words drawn from
  :data:`FALLBACK_WORDS`, common English words that are a single token with their leading space
  in the GPT-2, Llama 3, Qwen 2 and SmolLM BPE vocabularies, leaving one token for a BOS. The
  server's ``usage.prompt_tokens`` is recorded so the deviation is visible.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.types import DEFAULT_SCHEME, ClassScheme
from oserve.workload.prompts import PromptBuilder
from oserve.workload.trace import Trace

__all__ = [
    "RequestRecord",
    "ReplayResult",
    "parse_slo",
    "replay",
    "summarize",
]

log = logging.getLogger(__name__)

SLO_KEYS = ("ttft", "tpot", "e2e")

#: How long the replay client reuses an idle connection, s: under uvicorn's default keep-alive (5 s, which
#: vLLM's OpenAI server keeps), so it never sends on a connection the server is closing (a reset).
CLIENT_KEEPALIVE_S = 4.0


def parse_slo(text: str | None) -> dict[str, float]:
    """Parse ``"ttft=2.0,tpot=0.2"`` (seconds) into ``{"ttft": 2.0, "tpot": 0.2}``.

    Raises:
        ConfigError: unknown key (allowed ttft, tpot, e2e) or a non-positive / non-numeric value.
    """
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise ConfigError(f"bad SLO item {part!r}", field="slo", allowed="ttft=S,tpot=S,e2e=S (seconds)")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"SLO {key} is not a number: {value!r}", field=f"slo.{key}",
                              allowed="> 0 seconds") from None
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"SLO {key} must be positive, got {v}", field=f"slo.{key}", allowed="> 0 seconds")
        out[key] = v
    return out


@dataclass
class RequestRecord:
    """One replayed request. Times are seconds; ``scheduled_s``/``send_s`` from the replay start.

    Attributes:
        index: row of the trace.
        request_class: class name by (trace input tokens, trace output tokens).
        source: the trace's source tag, if any.
        scheduled_s: when the request was due (arrival / time_scale).
        send_s: when it was actually sent; ``lateness_s = send_s - scheduled_s``.
        input_tokens: trace input tokens (the prompt's target length).
        max_tokens: output tokens asked for.
        prompt_tokens / output_tokens: from the server's ``usage`` (output falls back to the number
            of streamed chunks with text when the server reports no usage).
        ttft_s, tpot_s, e2e_s: as ``vllm bench serve`` defines them; None when not measured.
        itl_s: every inter-chunk latency.
        status: HTTP status (None when no response came).
        ok: the stream finished without error.
        error: error text when not ok.
    """

    index: int
    request_class: str
    source: str | None
    scheduled_s: float
    input_tokens: int
    max_tokens: int
    send_s: float = float("nan")
    lateness_s: float = float("nan")
    prompt_tokens: int | None = None
    output_tokens: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    status: int | None = None
    ok: bool = False
    error: str | None = None
    end_s: float = float("nan")


@dataclass
class ReplayResult:
    """Records (one per request sent, trace order) and the summary (see :func:`summarize`)."""

    records: list[RequestRecord]
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """``{"summary": ..., "records": [...]}``, JSON-serialisable."""
        return {"summary": self.summary, "records": [_clean(asdict(r)) for r in self.records]}

    def write(self, path: str | Path) -> None:
        """Write the records and summary: ``.jsonl`` = one record per line with the summary as the
        last line (``{"summary": ...}``); anything else = one JSON document."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        with open(p, "w", encoding="utf-8") as fh:
            if p.suffix == ".jsonl":
                for rec in data["records"]:
                    fh.write(json.dumps(rec) + "\n")
                fh.write(json.dumps({"summary": data["summary"]}) + "\n")
            else:
                json.dump(data, fh, indent=1)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _stats_ms(values: Sequence[float], name: str, percentiles: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray(values, dtype=np.float64) * 1e3
    out: dict[str, float | None] = {}
    if a.size == 0:
        out[f"mean_{name}_ms"] = out[f"median_{name}_ms"] = out[f"std_{name}_ms"] = None
        for p in percentiles:
            out[f"p{p:g}_{name}_ms"] = None
        return out
    out[f"mean_{name}_ms"] = float(a.mean())
    out[f"median_{name}_ms"] = float(np.median(a))
    out[f"std_{name}_ms"] = float(a.std())
    for p in percentiles:
        out[f"p{p:g}_{name}_ms"] = float(np.percentile(a, p))
    return out


def summarize(records: Sequence[RequestRecord], duration_s: float, slo: dict[str, float] | None = None,
              percentiles: Sequence[float] = (99,)) -> dict[str, Any]:
    """Summary with ``vllm bench serve``'s metric names and definitions plus goodput and SLO attainment.

    Args:
        records: every request sent.
        duration_s: replay start to the last response, seconds.
        slo: ``{"ttft": s, "tpot": s, "e2e": s}`` (any subset).
        percentiles: extra percentiles to report (99 by default).

    Returns:
        ``completed``, ``failed`` (errors and refusals), ``refused`` (HTTP 429/503), ``requests``,
        ``duration`` (s), ``total_input_tokens``, ``total_output_tokens``, ``request_throughput``
        (req/s), ``output_throughput`` and ``total_token_throughput`` (tok/s),
        ``mean/median/std/pNN_{ttft,tpot,itl,e2el}_ms``, ``request_goodput`` (req/s),
        ``slo_attainment`` (0..1 over all requests), ``slo`` (the SLOs used), ``errors`` (count by
        message) and ``mean/p50/p99/max_lateness_ms`` (send time minus schedule).
    """
    slo = dict(slo or {})
    ok = [r for r in records if r.ok]
    dur = max(duration_s, 1e-9)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [r.tpot_s for r in ok if r.tpot_s is not None]
    itls = [x for r in ok for x in r.itl_s]
    e2es = [r.e2e_s for r in ok if r.e2e_s is not None]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens if r.prompt_tokens is not None else r.input_tokens for r in ok)
    good = 0
    for r in ok:
        if "ttft" in slo and (r.ttft_s is None or r.ttft_s > slo["ttft"]):
            continue
        if "tpot" in slo and (r.tpot_s or 0.0) > slo["tpot"]:
            continue
        if "e2e" in slo and (r.e2e_s is None or r.e2e_s > slo["e2e"]):
            continue
        good += 1
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = f"{r.status}: {(r.error or '')[:120]}"
            errors[key] = errors.get(key, 0) + 1
    late = np.asarray([r.lateness_s for r in records if math.isfinite(r.lateness_s)]) * 1e3
    summary: dict[str, Any] = {
        "requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "refused": sum(1 for r in records if r.status in (429, 503)),
        "duration": duration_s,
        "total_input_tokens": int(in_tokens),
        "total_output_tokens": int(out_tokens),
        "request_throughput": len(ok) / dur,
        "output_throughput": out_tokens / dur,
        "total_token_throughput": (in_tokens + out_tokens) / dur,
    }
    for vals, name in ((ttfts, "ttft"), (tpots, "tpot"), (itls, "itl"), (e2es, "e2el")):
        summary.update(_stats_ms(vals, name, percentiles))
    summary["request_goodput"] = good / dur
    summary["slo_attainment"] = good / len(records) if records else None
    summary["slo"] = slo
    summary["errors"] = errors
    if late.size:
        summary.update({"mean_lateness_ms": float(late.mean()), "p50_lateness_ms": float(np.median(late)),
                        "p99_lateness_ms": float(np.percentile(late, 99)), "max_lateness_ms": float(late.max())})
    return summary


def _completions_url(url: str) -> str:
    u = url.rstrip("/")
    if u.endswith("/completions"):
        return u
    if u.endswith("/v1"):
        return u + "/completions"
    return u + "/v1/completions"


class _Stream:
    """Fills a record from SSE ``data:`` lines as they arrive."""

    __slots__ = ("rec", "send", "last", "chunks", "usage", "t0")

    def __init__(self, rec: RequestRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0
        self.send = time.perf_counter()
        self.last = self.send
        self.chunks = 0
        self.usage: dict[str, Any] | None = None
        rec.send_s = self.send - t0
        rec.lateness_s = rec.send_s - rec.scheduled_s

    def line(self, line: str) -> bool:
        """Handle one line; returns False when the stream reported an error."""
        if not line.startswith("data:"):
            return True
        payload = line[5:].strip()
        if payload == "[DONE]" or not payload:
            return True  # read on to the end of the body so the connection is kept alive
        data = json.loads(payload)
        if "error" in data:
            self.rec.error = _error_text(payload)
            return False
        if data.get("usage"):
            self.usage = data["usage"]
        choices = data.get("choices") or []
        if choices and choices[0].get("text"):
            now = time.perf_counter()
            if self.chunks == 0:
                self.rec.ttft_s = now - self.send
            else:
                self.rec.itl_s.append(now - self.last)
            self.last = now
            self.chunks += 1
        return True

    def finish(self) -> None:
        rec = self.rec
        end = time.perf_counter()
        rec.end_s = end - self.t0
        rec.e2e_s = end - self.send
        if self.usage:
            rec.prompt_tokens = self.usage.get("prompt_tokens")
            rec.output_tokens = int(self.usage.get("completion_tokens") or self.chunks)
        else:
            rec.output_tokens = self.chunks
        if self.chunks == 0:
            rec.error = "stream ended without any output token"
            return
        if rec.output_tokens > 1 and rec.ttft_s is not None:
            rec.tpot_s = (rec.e2e_s - rec.ttft_s) / (rec.output_tokens - 1)
        rec.ok = True

    def fail(self, exc: BaseException) -> None:
        self.rec.end_s = time.perf_counter() - self.t0
        self.rec.error = f"{type(exc).__name__}: {exc}"[:500]


async def _send_aiohttp(session: Any, url: str, body: bytes, rec: RequestRecord, t0: float,
                        headers: dict[str, str]) -> None:
    """Send one streaming completion with aiohttp and fill ``rec``; never raises."""
    st = _Stream(rec, t0)
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            rec.status = resp.status
            if resp.status != 200:
                rec.error = _error_text((await resp.read()).decode("utf-8", "replace")) or f"HTTP {resp.status}"
                return
            async for raw in resp.content:
                if not st.line(raw.decode("utf-8", "replace")):
                    return
        st.finish()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is dropped
        st.fail(exc)


async def _send_httpx(client: Any, url: str, body: bytes, rec: RequestRecord, t0: float,
                      headers: dict[str, str]) -> None:
    """Send one streaming completion with httpx and fill ``rec``; never raises."""
    st = _Stream(rec, t0)
    try:
        async with client.stream("POST", url, content=body, headers=headers) as resp:
            rec.status = resp.status_code
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                rec.error = _error_text(text) or f"HTTP {resp.status_code}"
                return
            async for line in resp.aiter_lines():
                if not st.line(line):
                    return
        st.finish()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is dropped
        st.fail(exc)


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text.strip()[:500]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)[:500]
    return str(err)[:500]


TRANSPORTS = ("auto", "aiohttp", "httpx")


def _pick_transport(transport: str) -> str:
    if transport not in TRANSPORTS:
        raise ConfigError(f"unknown transport {transport!r}", field="transport", allowed=", ".join(TRANSPORTS))
    if transport != "auto":
        return transport
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return "httpx"
    return "aiohttp"


async def replay(
    trace: Trace,
    url: str,
    model: str | None = None,
    *,
    time_scale: float = 1.0,
    duration_s: float | None = None,
    slo: dict[str, float] | str | None = None,
    tokenizer: Any = None,
    prompt_builder: PromptBuilder | None = None,
    ignore_eos: bool = True,
    timeout_s: float = 600.0,
    scheme: ClassScheme = DEFAULT_SCHEME,
    api_key: str | None = None,
    extra_body: dict[str, Any] | None = None,
    seed: int = 0,
    transport: str = "auto",
    on_record: Callable[[RequestRecord], None] | None = None,
    include_failed: bool = False,
) -> ReplayResult:
    """Replay a trace open-loop against an OpenAI-compatible completions endpoint.

    Args:
        trace: requests to send (``arrival_s`` in seconds from the first request).
        url: server base URL (``http://host:port``), its ``/v1``, or the full ``/v1/completions`` URL.
        model: model id; None = the first id of ``GET /v1/models``.
        time_scale: speed-up: request ``i`` is sent at ``arrival_s[i] / time_scale`` (2 = twice as fast).
        duration_s: send only requests scheduled before this many seconds (after scaling).
        slo: SLOs in seconds, ``{"ttft": 2.0, "tpot": 0.2, "e2e": ...}`` or ``"ttft=2.0,tpot=0.2"``.
        tokenizer: local Hugging Face tokenizer folder or loaded tokenizer for exact prompt lengths
            (None = the approximation described in the module docstring).
        prompt_builder: a prepared :class:`PromptBuilder` (overrides ``tokenizer``).
        ignore_eos: send ``ignore_eos: true`` (vLLM extension) so outputs run to ``max_tokens``.
        timeout_s: per-request read timeout, seconds.
        scheme: request classes for the records' ``request_class``.
        api_key: sent as ``Authorization: Bearer``.
        extra_body: extra JSON fields for every request.
        seed: prompt synthesis seed.
        transport: HTTP client: ``"httpx"``, ``"aiohttp"`` (what ``vllm bench serve`` uses; about 4x
            less CPU per streamed request than httpx, which matters at hundreds of req/s) or
            ``"auto"`` (aiohttp when installed, else httpx).
        on_record: called with each finished record (e.g. to feed a progress bar).
        include_failed: also send the rows ``trace.failed`` marks (default: skip them; the summary's
            ``skipped_failed`` counts them).

    Returns:
        :class:`ReplayResult` with one record per request sent and the :func:`summarize` summary
        (plus ``skipped_failed``: failed rows within ``duration_s`` that were not sent).

    Raises:
        ConfigError: bad ``time_scale``/``duration_s``/``slo``/``transport``, no request to send, or
            no model found.
    """
    if not (time_scale > 0 and math.isfinite(time_scale)):
        raise ConfigError(f"time_scale must be positive, got {time_scale}", field="time_scale", allowed="> 0")
    if duration_s is not None and not duration_s > 0:
        raise ConfigError(f"duration_s must be positive, got {duration_s}", field="duration_s", allowed="> 0 seconds")
    slo_d = parse_slo(slo) if isinstance(slo, str) else dict(slo or {})
    for key in slo_d:
        if key not in SLO_KEYS:
            raise ConfigError(f"unknown SLO {key!r}", field="slo", allowed=", ".join(SLO_KEYS))
    kind = _pick_transport(transport)
    sched = (trace.arrival_s - trace.arrival_s[0]) / time_scale
    n = int(np.searchsorted(sched, duration_s, side="left")) if duration_s is not None else len(trace)
    if n == 0:
        raise ConfigError("no request is scheduled within duration_s", field="duration_s",
                          allowed=f"> {float(sched[0])} seconds")
    failed = np.zeros(n, dtype=bool) if trace.failed is None else np.asarray(trace.failed[:n], dtype=bool)
    rows = np.arange(n) if include_failed else np.flatnonzero(~failed)
    skipped = 0 if include_failed else int(failed.sum())
    if rows.size == 0:
        raise ConfigError(f"all {n} requests to send are marked failed in the trace", field="include_failed",
                          allowed="True to send failed rows, or a trace with successful rows")
    builder = prompt_builder or PromptBuilder(tokenizer, seed=seed)
    classes = scheme.classify_many(trace.input_tokens[:n], trace.output_tokens[:n])
    names = scheme.names
    endpoint = _completions_url(url)
    models_url = endpoint[: -len("/completions")] + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # prompts are synthesised before the clock starts so the sending loop only sends
    bodies: list[dict[str, Any]] = []
    records: list[RequestRecord] = []
    for i in (int(r) for r in rows):
        n_in = int(trace.input_tokens[i])
        n_out = max(1, int(trace.output_tokens[i]))
        records.append(RequestRecord(
            index=i, request_class=names[int(classes[i])],
            source=None if trace.source is None else str(trace.source[i]),
            scheduled_s=float(sched[i]), input_tokens=n_in, max_tokens=n_out,
        ))
        bodies.append({"prompt": builder.build(n_in, i), "max_tokens": n_out, "stream": True,
                       "stream_options": {"include_usage": True}, "temperature": 0.0,
                       **({"ignore_eos": True} if ignore_eos else {}), **(extra_body or {})})

    if kind == "aiohttp":
        import aiohttp

        client: Any = aiohttp.ClientSession(
            # reuse an idle connection for less than uvicorn's default keep-alive (5 s, vLLM's server): a
            # connection the server is closing as the client reuses it ends in "connection reset by peer"
            connector=aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=CLIENT_KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, timeout_s), sock_read=timeout_s),
        )
        send = _send_aiohttp
    else:
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None,
                                                       keepalive_expiry=CLIENT_KEEPALIVE_S),
                                   timeout=httpx.Timeout(timeout_s, connect=min(30.0, timeout_s)))
        send = _send_httpx
    async with client:
        if model is None:
            model = await _first_model(client, kind, models_url, headers)
        for b in bodies:
            b["model"] = model
        # serialised before the clock starts: the sending loop only sends bytes
        payloads = [json.dumps(b).encode() for b in bodies]
        headers = {**headers, "Content-Type": "application/json"}
        tasks: list[asyncio.Task] = []

        async def run_one(i: int) -> None:
            await send(client, endpoint, payloads[i], records[i], t0, headers)
            if on_record is not None:
                on_record(records[i])

        # the prepared prompts and records are long-lived: move them out of the GC's way so a
        # full collection does not stall the sending loop (gc.freeze, CPython >= 3.7)
        gc.collect()
        gc.freeze()
        try:
            t0 = time.perf_counter()
            for i in range(len(records)):
                delay = records[i].scheduled_s - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(run_one(i)))
            await asyncio.gather(*tasks)
        finally:
            gc.unfreeze()
        ends = [r.end_s for r in records if math.isfinite(r.end_s)]
        duration = max(ends) if ends else time.perf_counter() - t0
    summary = summarize(records, duration, slo_d)
    summary.update({"model": model, "url": endpoint, "time_scale": time_scale, "transport": kind,
                    "prompt_tokens_exact": builder.exact, "trace": trace.name, "skipped_failed": skipped})
    return ReplayResult(records=records, summary=summary)


async def _first_model(client: Any, kind: str, models_url: str, headers: dict[str, str]) -> str:
    """The first model id listed by ``GET /v1/models``."""
    if kind == "aiohttp":
        async with client.get(models_url, headers=headers) as resp:
            status = resp.status
            data = await resp.json(content_type=None) if status == 200 else {}
    else:
        resp = await client.get(models_url, headers=headers)
        status = resp.status_code
        data = resp.json() if status == 200 else {}
    models = data.get("data") or []
    if not models:
        raise ConfigError(f"{models_url} lists no model (HTTP {status}); pass model=", field="model",
                          allowed="a served model id")
    return str(models[0]["id"])
