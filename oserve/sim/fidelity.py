"""Simulator vs reality: rebuild the trace a real replay sent, simulate it, compare the metrics.

A real replay (``oserve replay``, :class:`oserve.workload.replay.ReplayResult`) writes one record per
request: ``scheduled_s`` (or ``send_s``), ``input_tokens`` (or the server's ``prompt_tokens``),
``output_tokens`` (generated), ``ttft_s``, ``e2e_s``, ``ok``. :func:`trace_from_replay` turns them into
the :class:`Trace` the simulator replays (the same requests at the same times, with the output
lengths the real engines produced) and :func:`replay_to_records` into the simulator's record form,
so :func:`oserve.sim.metrics.compare_fidelity` compares like with like.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from oserve.errors import TraceError
from oserve.workload.trace import Trace

__all__ = ["load_replay", "trace_from_replay", "replay_to_records", "load_metrics", "compare_load", "LOAD_METRICS",
           "trace_order", "quiet_requests", "serving_overheads", "bootstrap_interval"]


def load_replay(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a replay result: ``.jsonl`` (records, then a ``{"summary": ...}`` line) or JSON
    (``{"summary", "records"}``, or a demo ``results.json`` whose values are summaries).

    Returns:
        ``(records, summary)``; records may be empty when the file holds summaries only.

    Raises:
        TraceError: unreadable or malformed file.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TraceError(f"cannot read replay result: {exc}", path=str(p)) from exc
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    try:
        if p.suffix == ".jsonl":
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"malformed replay record: {exc.msg}", path=str(p), row=i) from exc
                if "summary" in obj and len(obj) == 1:
                    summary = obj["summary"]
                else:
                    records.append(obj)
        else:
            obj = json.loads(text)
            records = list(obj.get("records", []))
            summary = obj.get("summary", obj)
    except json.JSONDecodeError as exc:
        raise TraceError(f"malformed replay result: {exc.msg}", path=str(p), row=exc.lineno) from exc
    return records, summary


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def replay_to_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real replay records as simulator-style records (arrival, first token and finish times, s)."""
    out = []
    for r in records:
        t0 = _num(r.get("send_s", r.get("scheduled_s")))
        if not math.isfinite(t0):
            t0 = _num(r.get("scheduled_s"))
        ok = bool(r.get("ok", True))
        ttft, e2e = _num(r.get("ttft_s")), _num(r.get("e2e_s"))
        out.append({
            "arrival_s": t0,
            "first_token_s": t0 + ttft if ok and math.isfinite(ttft) else None,
            "finish_s": t0 + e2e if ok and math.isfinite(e2e) else None,
            "generated_tokens": int(r.get("output_tokens") or 0),
            "aborted": not ok,
        })
    return out


def trace_from_replay(records: list[dict[str, Any]], *, name: str = "replay") -> Trace:
    """The requests a replay sent, as a trace: due times (``scheduled_s``), prompt tokens (the
    server's count when known), and output tokens actually generated (at least 1).

    Raises:
        TraceError: no record.
    """
    if not records:
        raise TraceError("the replay result has no per-request records", column="records")
    t = np.array([_num(r.get("scheduled_s", r.get("send_s"))) for r in records])
    inp = np.array([int(r.get("prompt_tokens") or r.get("input_tokens") or 1) for r in records], dtype=np.int64)
    out = np.array([max(1, int(r.get("output_tokens") or r.get("max_tokens") or 1)) for r in records],
                   dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    t -= t[0]
    return Trace(t, inp[order], out[order], name=name)


LOAD_METRICS = ("throughput_rps", "goodput_rps", "slo_attainment", "ttft_p50_s", "ttft_p99_s", "tpot_mean_s",
                "tpot_p99_s")
"""The metrics :func:`compare_load` compares, in its output order."""


def load_metrics(records: list[dict[str, Any]], *, slo_ttft_s: float, slo_tpot_s: float) -> dict[str, float | None]:
    """Metrics of one run's per-request records (real via :func:`replay_to_records`, or simulated).

    Throughput and goodput (req/s) are completed and SLO-meeting requests over the span from the
    first arrival to the last finish; SLO attainment is SLO-meeting requests / all requests (a
    request meets the SLO when it completed with TTFT <= ``slo_ttft_s`` and TPOT <= ``slo_tpot_s``,
    seconds; one-token outputs have no TPOT). TTFT percentiles and TPOT mean/p99 (seconds) are over
    completed requests, TPOT over those with more than one output token.

    Raises:
        TraceError: no record.
    """
    if not records:
        raise TraceError("no per-request records to measure", column="records")
    arr = np.array([_num(r.get("arrival_s")) for r in records])
    first = np.array([_num(r.get("first_token_s")) for r in records])
    fin = np.array([_num(r.get("finish_s")) for r in records])
    gen = np.array([float(r.get("generated_tokens", r.get("output_tokens", 0)) or 0) for r in records])
    done = np.isfinite(fin) & np.isfinite(first)
    ttft = np.where(done, first - arr, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(done & (gen > 1), (fin - first) / (gen - 1), np.nan)
    good = done & (ttft <= slo_ttft_s) & (np.isnan(tpot) | (tpot <= slo_tpot_s))
    span = float(np.nanmax(fin) - np.nanmin(arr)) if done.any() else 0.0

    def pct(a: np.ndarray, q: float) -> float | None:
        a = a[np.isfinite(a)]
        return float(np.percentile(a, q)) if a.size else None

    t = tpot[np.isfinite(tpot)]
    return {
        "throughput_rps": float(done.sum() / span) if span > 0 else None,
        "goodput_rps": float(good.sum() / span) if span > 0 else None,
        "slo_attainment": float(good.sum() / len(records)),
        "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
        "tpot_mean_s": float(t.mean()) if t.size else None, "tpot_p99_s": pct(tpot, 99),
    }


def compare_load(real: dict[str, float | None], sim: dict[str, float | None]) -> dict[str, dict[str, float | None]]:
    """Per metric of :data:`LOAD_METRICS`: ``real``, ``simulated`` and ``relative_error`` =
    ``|simulated - real| / real`` (None when either is missing or real is 0)."""
    out: dict[str, dict[str, float | None]] = {}
    for k in LOAD_METRICS:
        r, s_ = real.get(k), sim.get(k)
        err = abs(s_ - r) / abs(r) if r is not None and s_ is not None and r != 0 else None
        out[k] = {"real": r, "simulated": s_, "relative_error": err}
    return out


def trace_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replay records in the order :func:`trace_from_replay` gives their requests (the simulator's ``rid``)."""
    t = np.array([_num(r.get("scheduled_s", r.get("send_s"))) for r in records])
    return [records[i] for i in np.argsort(t, kind="stable")]


def quiet_requests(records: list[dict[str, Any]], *, whole_life: bool = False) -> np.ndarray:
    """Mask of the completed replay records sent while no other request was in flight on the deployment
    (reconstructed from ``send_s`` and ``e2e_s``): their TTFT holds no queueing and no other prefill.
    With ``whole_life``, nothing else may be in flight at any time between their send and their end
    (no batching, one engine busy: their TPOT is the lone decode step as served)."""
    rr = replay_to_records(records)
    send = np.array([r["arrival_s"] for r in rr])
    end = np.array([np.nan if r["finish_s"] is None else r["finish_s"] for r in rr])
    ok = np.isfinite(end) & np.array([r["first_token_s"] is not None for r in rr])
    busy_end = np.where(ok, end, np.inf)  # a failed request's end is unknown: count it as in flight
    if whole_life:
        return np.array([ok[i] and int(((send < end[i]) & (busy_end > s)).sum()) == 1 for i, s in enumerate(send)],
                        dtype=bool)
    return np.array([ok[i] and int(((send < s) & (busy_end > s)).sum()) == 0 for i, s in enumerate(send)], dtype=bool)


def serving_overheads(runs: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]], *,
                      whole_life: bool = False) -> dict[str, float | int]:
    """Per-step and per-request serving-path costs, measured from the quiet requests of real replays.

    ``runs`` pairs each real replay's records with the simulator's records of the same requests
    (``rid`` = trace order, as :func:`trace_from_replay`), simulated *without* these overheads and
    without contention. Over the requests :func:`quiet_requests` selects (``whole_life`` passed on),
    pooled over the runs:

    * ``step_overhead_s`` = max(0, median(real TPOT - simulated TPOT)), s per iteration (requests
      with > 1 output token; one decode iteration per output token);
    * ``request_overhead_s`` = max(0, median(real TTFT - simulated TTFT) - step_overhead_s), s (the
      first token's iteration pays the step overhead too; the rest is the HTTP / tokenisation /
      routing / SSE latency).

    Returns:
        ``{"step_overhead_s", "request_overhead_s", "quiet_requests", "quiet_tpot_requests"}``.

    Raises:
        TraceError: a run's record counts differ, or no quiet request completed.
    """
    ttft_gap: list[float] = []
    tpot_gap: list[float] = []
    for records, simulated in runs:
        real = trace_order(records)
        if len(real) != len(simulated):
            raise TraceError(f"{len(real)} replay records but {len(simulated)} simulated ones", column="records")
        sim = {int(q["rid"]): q for q in simulated}
        for i in np.flatnonzero(quiet_requests(real, whole_life=whole_life)):
            r, q = real[i], sim.get(int(i))
            if q is None or q.get("finish_s") is None or q.get("first_token_s") is None:
                continue
            ttft_gap.append(float(r["ttft_s"]) - (q["first_token_s"] - q["arrival_s"]))
            n = int(r.get("output_tokens") or 0)
            if n > 1:
                real_tpot = (float(r["e2e_s"]) - float(r["ttft_s"])) / (n - 1)
                tpot_gap.append(real_tpot - (q["finish_s"] - q["first_token_s"]) / (n - 1))
    if not ttft_gap:
        raise TraceError("no request of the replays was sent while nothing else was in flight", column="send_s")
    step = max(0.0, float(np.median(tpot_gap))) if tpot_gap else 0.0
    return {"step_overhead_s": step, "request_overhead_s": max(0.0, float(np.median(ttft_gap)) - step),
            "quiet_requests": len(ttft_gap), "quiet_tpot_requests": len(tpot_gap), "whole_life": whole_life}


def bootstrap_interval(values: np.ndarray | list[float], q: float, *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the ``q``-th percentile of ``values`` (resampling the values,
    seeded), e.g. how noisy a p99 of a few hundred requests is. None when no finite value."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if not a.size:
        return None
    rng = np.random.default_rng(seed)
    est = np.percentile(a[rng.integers(0, a.size, size=(n_boot, a.size))], q, axis=1)
    lo, hi = np.percentile(est, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)
