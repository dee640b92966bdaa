"""The demo's results: one row per deployment, the side-by-side table and the timeline PNG.

Row keys (``out/demo/results.json``, one object per deployment: ``oserve``, ``plain``, ``int8``,
``best_static``):

* ``goodput_rps``: requests meeting both SLOs (TTFT and TPOT) per second of the replay, req/s;
  ``slo_attainment``: their share of all requests; ``throughput_rps``, ``output_tokens_per_s``.
* ``ttft_p50_s`` ... ``tpot_p99_s``: over completed requests, seconds.
* ``full_precision_share``: output tokens served by full-precision (fp32) replicas / all output
  tokens served (counted at the replicas, :class:`oserve.backends.warm_pool.WarmPoolBackend`).
* ``core_seconds``: integral over the replay of the cores held by ready replicas (sampled every 1 s),
  core-seconds. Idle pooled engines are not counted (they hold memory, not a core's time).
* ``switches``: switches that changed replicas; ``switch_s``: per switch, seconds from the switch's
  start (the planner's decision is submitted) until the target deployment was reached;
  ``serving_s``: until the first new replica was ready and routed to.
* ``retried`` (requests the endpoint retried on another replica before their first token),
  ``resumed`` (requests moved mid-stream by a migrating drain and resumed on another replica from
  their last token, :mod:`oserve.server.resume`), ``aborted`` (ended with an error status), ``lost``
  (no response at all).
* ``touched_by_switch_share``: share of requests in flight while a switch ran (an upper bound: it
  counts requests on replicas the switch left alone, and requests that finished untouched within a
  migration grace); ``interrupted_share``: ``(retried + resumed + aborted) / requests``, the requests
  whose stream a switch (or a failure) cut (a request cut twice counts twice, so it can exceed 1).

Beside these (:data:`KEYS`), each row of ``results.json`` has ``deployment`` (what ran, in words),
``requests`` and ``completed`` (counts), ``output_tokens_by_variant``, ``queued_in_router`` and
``same_run_as`` (``best_static`` only, when it equals ``plain`` or ``int8`` and that run is reported
again; else None); ``meta`` describes the trace, the rate choice and the machine.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KEYS", "pct", "switch_times", "switch_windows", "touched_share", "interrupted_share",
           "full_precision_share", "core_seconds", "print_table", "plot_timeline"]

KEYS: tuple[str, ...] = (
    "goodput_rps", "slo_attainment", "throughput_rps", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s",
    "tpot_p50_s", "tpot_p99_s", "full_precision_share", "core_seconds", "switches", "switch_s", "serving_s",
    "retried", "resumed", "aborted", "lost", "touched_by_switch_share", "interrupted_share",
)


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile, or None for no values."""
    return float(np.percentile(values, q)) if values else None


def switch_times(switches: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """``(switch_s, serving_s)`` of the switches that changed replicas (from ``Orchestrator.status``).

    ``switch_s``: ``finished_s - started_s``; ``serving_s`` (decision to serving): from the switch's
    start to the end of its first successful start/warm/wake step, when a replica of the new plan takes
    requests (the switch's own duration when it started or woke nothing), seconds.
    """
    total, serving = [], []
    for sw in switches:
        if not sw.get("replicas_changed") or sw.get("target", {}).get("planner") == "config":
            continue
        total.append(round(sw["finished_s"] - sw["started_s"], 2))
        starts = [s["finished_s"] for s in sw.get("steps", []) if s["kind"] in ("start", "warm", "wake") and s["ok"]]
        serving.append(round((min(starts) if starts else sw["finished_s"]) - sw["started_s"], 2))
    return total, serving


def switch_windows(switches: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(started_s, finished_s)`` of the switches :func:`switch_times` counts (orchestrator clock, s)."""
    return [(sw["started_s"], sw["finished_s"]) for sw in switches
            if sw.get("replicas_changed") and sw.get("target", {}).get("planner") != "config"]


def touched_share(records: list[Any], windows: list[tuple[float, float]], t0: float) -> float | None:
    """Share of requests in flight while some switch ran (an upper bound of the requests a switch
    touched: a request on a replica the switch left alone counts too).

    Args:
        records: replay records (``send_s`` and ``e2e_s`` from the replay start, s).
        windows: switch ``(started_s, finished_s)`` on the orchestrator's clock, s.
        t0: the orchestrator-clock time of the replay start, s.
    """
    if not records:
        return None
    spans = [(a - t0, b - t0) for a, b in windows]
    n = 0
    for r in records:
        start = r.send_s
        end = start + (r.e2e_s if r.e2e_s is not None else 0.0)
        if any(start <= b and end >= a for a, b in spans):
            n += 1
    return round(n / len(records), 3)


def interrupted_share(retried: int, resumed: int, aborted: int, requests: int) -> float | None:
    """``(retried + resumed + aborted) / requests`` (None for no requests): the share of requests whose
    stream was cut, by a switch's drain or a replica failure; a request cut twice counts twice."""
    return None if requests <= 0 else round((retried + resumed + aborted) / requests, 3)


def full_precision_share(tokens_by_variant: dict[str, int], full_precision: set[str]) -> float | None:
    """Output tokens of full-precision variants / all output tokens (None when none were served)."""
    total = sum(tokens_by_variant.values())
    return None if total == 0 else sum(n for v, n in tokens_by_variant.items() if v in full_precision) / total


def core_seconds(samples: list[dict[str, Any]], period_s: float = 1.0) -> float:
    """Sum of cores held by ready replicas over 1-s samples (``samples[i]["cores"]``), core-seconds."""
    return float(sum(s["cores"] for s in samples) * period_s)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ", ".join(f"{x:.1f}" for x in v) or "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_table(results: dict[str, dict[str, Any]], title: str) -> None:
    """Print the deployments side by side (rich)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    for name in results:
        t.add_column(name, justify="right")
    t.add_row("deployment", *(str(r.get("deployment", "")) for r in results.values()))
    for k in KEYS:
        t.add_row(k, *(_fmt(r.get(k)) for r in results.values()))
    Console(width=200).print(t)


def plot_timeline(results: dict[str, dict[str, Any]], trace: Any, slo_ttft_s: float, path: Path,
                  full_precision: set[str]) -> None:
    """Arrival rate per class, ready replicas by variant and p99 TTFT per 10 s (SLO drawn), one column
    per deployment, axes shared along each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(3, n, figsize=(4.5 * n, 8), sharex=True, sharey="row", squeeze=False)
    end = float(trace.arrival_s[-1]) + 10 if len(trace) else 10.0
    edges = np.arange(0, end, 10)
    for col, (name, res) in enumerate(results.items()):
        ax = axes[0][col]
        for src in sorted(set(np.asarray(trace.source).tolist())):
            t = trace.arrival_s[np.asarray(trace.source == src)]
            h, _ = np.histogram(t, edges)
            ax.step(edges[:-1], h / 10.0, where="post", label=f"{src}")
        # deployment descriptions run to ~150 characters: wrap to the column or they overlap the next title
        ax.set_title("\n".join([name, *textwrap.wrap(str(res.get("deployment", "")), 60)]), fontsize=8)
        ax = axes[1][col]
        ts = [s["t_s"] for s in res["timeline"]]
        variants = sorted({v for s in res["timeline"] for v in s["ready_by_variant"]})
        for v in variants:
            style = "-" if v in full_precision else "--"
            ax.step(ts, [s["ready_by_variant"].get(v, 0) for s in res["timeline"]], style, where="post",
                    label=v.replace("smollm2-135m-", ""))
        ax.legend(fontsize=7)
        ax = axes[2][col]
        recs = [r for r in res["records"] if r["ok"] and r["ttft"] is not None]
        if recs:
            t = np.array([r["t"] for r in recs])
            y = np.array([r["ttft"] for r in recs])
            mids, p99 = [], []
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                sel = (t >= a) & (t < b)
                if sel.any():
                    mids.append(a)
                    p99.append(np.percentile(y[sel], 99))
            ax.step(mids, p99, where="post", label="p99 TTFT")
        ax.axhline(slo_ttft_s, color="red", linestyle=":", label=f"SLO {slo_ttft_s:g} s")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("arrivals (req/s)")
    axes[0][0].legend(fontsize=7)
    axes[1][0].set_ylabel("ready replicas")
    axes[2][0].set_ylabel("TTFT p99 per 10 s (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
