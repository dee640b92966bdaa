"""Trace transforms: windowing, merging on one clock, time compression, rate scaling, token fitting.

Every transform returns a new :class:`Trace` (traces are immutable) whose ``arrival_s`` is sorted
and, except after thinning in :func:`scale_rate` (which keeps the time axis), starts at 0;
``meta["t0_s"]`` moves with it so merged traces stay on their common clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from oserve.errors import ConfigError, TraceError
from oserve.workload.trace import Trace

__all__ = ["window", "merge", "compress", "scale_rate", "clip_tokens", "scale_tokens", "select"]


def _positive(value: float, field: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{field} must be a positive finite number, got {value!r}", field=field, allowed="> 0")


def select(trace: Trace, mask_or_index: np.ndarray, *, name: str | None = None, rebase: bool = True) -> Trace:
    """Keep the rows picked by a boolean mask or an index array (kept in arrival order).

    Args:
        trace: the trace.
        mask_or_index: boolean mask of shape ``(n,)`` or integer indices.
        name: label of the result (default: the input's).
        rebase: shift arrivals so the first kept request is at 0 (``meta["t0_s"]`` follows).

    Raises:
        TraceError: nothing is kept (an empty trace is not a trace).
    """
    idx = np.asarray(mask_or_index)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if idx.size == 0:
        raise TraceError(f"transform left trace {trace.name!r} with no request")
    idx = np.sort(idx, kind="stable")
    t = trace.arrival_s[idx]
    shift = float(t[0]) if rebase else 0.0
    meta = dict(trace.meta)
    if "t0_s" in meta:
        meta["t0_s"] = float(meta["t0_s"]) + shift
    return Trace(
        arrival_s=t - shift,
        input_tokens=trace.input_tokens[idx],
        output_tokens=trace.output_tokens[idx],
        source=None if trace.source is None else trace.source[idx],
        failed=None if trace.failed is None else trace.failed[idx],
        name=name or trace.name,
        meta=meta,
    )


def window(trace: Trace, start_s: float, end_s: float) -> Trace:
    """Requests arriving in ``[start_s, end_s)`` seconds (of the trace's relative clock).

    The result is rebased to its first request (``meta["window_s"] = (start_s, end_s)``).

    Raises:
        ConfigError: ``end_s <= start_s``.
        TraceError: no request in the window.
    """
    if not (math.isfinite(start_s) and end_s > start_s):
        raise ConfigError(f"window needs start_s < end_s, got [{start_s}, {end_s})", field="end_s",
                          allowed=f"> start_s ({start_s})")
    mask = (trace.arrival_s >= start_s) & (trace.arrival_s < end_s)
    out = select(trace, mask, name=f"{trace.name}[{start_s:g}:{end_s:g}]")
    out.meta["window_s"] = (float(start_s), float(end_s))
    return out


def merge(traces: Sequence[Trace], tags: Sequence[str] | None = None, *, align: str = "auto",
          name: str | None = None) -> Trace:
    """Merge several traces onto one clock, keeping each request's source tag.

    Args:
        traces: traces to merge (at least one).
        tags: source tag per trace; it overrides the trace's own ``source``. Without tags a trace
            keeps its ``source`` array, or is tagged with its ``name``.
        align: ``"clock"``: place each trace at its ``meta["t0_s"]`` on the shared clock (the Azure
            2023 code and conv files, sampled over the same hour); ``"start"``: all traces start at
            0; ``"auto"``: ``"clock"`` when every trace has ``t0_s`` on the same kind of clock
            (``meta["clock"]``), else ``"start"``.
        name: label of the result.

    Returns:
        The merged trace; every request of every input appears once (stable sort on arrival, ties
        keep input order). ``meta["sources"]`` lists the tags, ``meta["align"]`` the alignment used.

    Raises:
        ConfigError: no trace, ``tags`` of the wrong length or unknown ``align``.
    """
    if not traces:
        raise ConfigError("merge needs at least one trace", field="traces", allowed=">= 1 trace")
    if tags is not None and len(tags) != len(traces):
        raise ConfigError(f"{len(tags)} tags for {len(traces)} traces", field="tags",
                          allowed=f"exactly {len(traces)} tags")
    if align not in ("auto", "clock", "start"):
        raise ConfigError(f"unknown align {align!r}", field="align", allowed="auto, clock, start")
    clocks = {tr.meta.get("clock") for tr in traces}
    have_t0 = all("t0_s" in tr.meta for tr in traces)
    if align == "auto":
        align = "clock" if have_t0 and len(clocks) == 1 else "start"
    if align == "clock" and not have_t0:
        raise ConfigError("align='clock' needs meta['t0_s'] on every trace", field="align", allowed="start")
    offsets = [float(tr.meta["t0_s"]) if align == "clock" else 0.0 for tr in traces]
    base = min(offsets)
    times = np.concatenate([tr.arrival_s + (o - base) for tr, o in zip(traces, offsets, strict=True)])
    sources = []
    for i, tr in enumerate(traces):
        if tags is not None:
            sources.append(np.full(len(tr), tags[i], dtype=object))
        elif tr.source is not None:
            sources.append(np.asarray(tr.source, dtype=object))
        else:
            sources.append(np.full(len(tr), tr.name, dtype=object))
    failed = np.concatenate([
        np.zeros(len(tr), dtype=bool) if tr.failed is None else np.asarray(tr.failed, dtype=bool) for tr in traces
    ])
    order = np.argsort(times, kind="stable")
    t = times[order]
    shift = float(t[0])
    meta: dict = {"sources": list(tags) if tags is not None else [tr.name for tr in traces], "align": align,
                  "merged_from": [tr.name for tr in traces]}
    if align == "clock":
        meta["t0_s"] = base + shift
        meta["clock"] = next(iter(clocks))
    return Trace(
        arrival_s=t - shift,
        input_tokens=np.concatenate([tr.input_tokens for tr in traces]).astype(np.int64)[order],
        output_tokens=np.concatenate([tr.output_tokens for tr in traces]).astype(np.int64)[order],
        source=np.concatenate(sources)[order],
        failed=failed[order] if any(tr.failed is not None for tr in traces) else None,
        name=name or "+".join(tr.name for tr in traces),
        meta=meta,
    )


def compress(trace: Trace, factor: float) -> Trace:
    """Speed the trace up by ``factor``: every inter-arrival gap is divided by ``factor``.

    ``factor=2`` replays an hour in 30 minutes at twice the rate with the same mix; ``factor<1``
    stretches time.

    Raises:
        ConfigError: ``factor`` not positive.
    """
    _positive(factor, "factor")
    meta = dict(trace.meta)
    meta["time_compression"] = float(meta.get("time_compression", 1.0)) * factor
    return Trace(
        arrival_s=(trace.arrival_s - trace.arrival_s[0]) / factor,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        source=trace.source,
        failed=trace.failed,
        name=trace.name,
        meta=meta,
    )


def scale_rate(trace: Trace, factor: float, seed: int = 0) -> Trace:
    """Scale the arrival rate by ``factor`` without changing the time axis, seeded and nested.

    Request ``i`` appears as copies ``k = 0, 1, ...``; copy ``k`` exists when ``u_k[i] < factor - k``, with
    ``u_k`` uniform draws of a stream per ``(seed, k)``: ``factor < 1`` thins (each request kept
    independently with probability ``factor``), ``factor >= 1`` keeps every request and adds
    ``floor(factor) - 1`` copies plus one more with probability ``factor - floor(factor)``. Copy ``k >= 1``
    arrives at ``t + v_k[i] x gap``, ``gap`` the time to the next original request, so copies do not form
    bursts. Expected count is ``factor * n``; the same ``seed`` gives the same trace.

    Nested: for one ``seed``, the trace at a smaller factor is a subset of the trace at a larger one (same
    requests, same times), so load only grows with the factor (common random numbers across factors). A
    capacity search then compares nearby factors on nearly the same requests; before, one more copy
    shifted every later copy's jitter, and at 2.41x vs 2.4112x the Azure 2023 merged trace's first 300 s
    gave SLO attainments 0.856 vs 0.901 for one deployment (bench/results/capacity_integrated.json).

    Raises:
        ConfigError: ``factor`` not positive.
        TraceError: thinning kept no request.
    """
    _positive(factor, "factor")
    n = len(trace)
    if factor < 1.0:
        out = select(trace, np.random.default_rng(seed).random(n) < factor, rebase=False)
    else:
        gaps = np.append(np.diff(trace.arrival_s), 0.0)
        idx_parts, t_parts = [np.arange(n)], [trace.arrival_s.astype(float)]
        for k in range(1, int(math.ceil(factor))):
            stream = np.random.default_rng([seed, k])
            u, v = stream.random(n), stream.random(n)
            keep = np.flatnonzero(u < factor - k)
            idx_parts.append(keep)
            t_parts.append(trace.arrival_s[keep] + v[keep] * gaps[keep])
        idx, t = np.concatenate(idx_parts), np.concatenate(t_parts)
        order = np.lexsort((idx, t))
        idx, t = idx[order], t[order]
        out = Trace(
            arrival_s=t - t[0],
            input_tokens=trace.input_tokens[idx],
            output_tokens=trace.output_tokens[idx],
            source=None if trace.source is None else trace.source[idx],
            failed=None if trace.failed is None else trace.failed[idx],
            name=trace.name,
            meta=dict(trace.meta),
        )
    out.meta["rate_scale"] = float(trace.meta.get("rate_scale", 1.0)) * factor
    out.meta["rate_scale_seed"] = seed
    return out


def _check_max(value: int | None, field: str) -> None:
    if value is not None and (not isinstance(value, int | np.integer) or value < 1):
        raise ConfigError(f"{field} must be a positive integer or None, got {value!r}", field=field,
                          allowed=">= 1 tokens")


def clip_tokens(trace: Trace, max_input: int | None = None, max_output: int | None = None,
                max_total: int | None = None) -> Trace:
    """Clip token lengths to fit a small model's context.

    Args:
        trace: the trace.
        max_input: cap on input tokens per request (None: no cap).
        max_output: cap on output tokens per request (None: no cap).
        max_total: cap on input + output (a model's ``max_model_len``): the input is cut first,
            keeping at least 1 input token, then the output.

    Raises:
        ConfigError: a cap is not a positive integer, or ``max_total < 2``.
    """
    _check_max(max_input, "max_input")
    _check_max(max_output, "max_output")
    _check_max(max_total, "max_total")
    if max_total is not None and max_total < 2:
        raise ConfigError("max_total must leave room for 1 input and 1 output token", field="max_total",
                          allowed=">= 2 tokens")
    inp = trace.input_tokens.copy()
    out = trace.output_tokens.copy()
    if max_input is not None:
        np.minimum(inp, max_input, out=inp)
    if max_output is not None:
        np.minimum(out, max_output, out=out)
    if max_total is not None:
        over = inp + out - max_total
        cut_in = np.clip(over, 0, np.maximum(inp - 1, 0))
        inp = inp - cut_in
        out = np.minimum(out, max_total - inp)
    meta = dict(trace.meta)
    meta["token_clip"] = {"max_input": max_input, "max_output": max_output, "max_total": max_total}
    return Trace(trace.arrival_s, inp.astype(np.int64), out.astype(np.int64), trace.source, trace.failed,
                 trace.name, meta)


def scale_tokens(trace: Trace, factor: float, max_input: int | None = None, max_output: int | None = None,
                 max_total: int | None = None) -> Trace:
    """Multiply token lengths by ``factor`` (rounded, at least 1 token for a non-zero length), then clip.

    Keeps the shape of the length distribution (class shares may change when the scaled lengths
    cross class edges) while fitting a small model: e.g. ``factor=0.25, max_total=2048``.

    Raises:
        ConfigError: ``factor`` not positive or a cap invalid.
    """
    _positive(factor, "factor")
    inp = np.rint(trace.input_tokens * factor).astype(np.int64)
    out = np.rint(trace.output_tokens * factor).astype(np.int64)
    inp = np.where(trace.input_tokens > 0, np.maximum(inp, 1), 0)
    out = np.where(trace.output_tokens > 0, np.maximum(out, 1), 0)
    meta = dict(trace.meta)
    meta["token_scale"] = float(meta.get("token_scale", 1.0)) * factor
    scaled = Trace(trace.arrival_s, inp, out, trace.source, trace.failed, trace.name, meta)
    return clip_tokens(scaled, max_input, max_output, max_total)
