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

__all__ = ["load_replay", "trace_from_replay", "replay_to_records", "load_metrics", "compare_load", "LOAD_METRICS"]


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
