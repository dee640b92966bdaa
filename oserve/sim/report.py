"""Write a simulation's outputs: ``results.json``, ``requests_<policy>.csv``, ``report.md`` and PNG plots.

matplotlib (Agg backend) is imported only here, inside the plotting function.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oserve.sim.engine import SimResult
from oserve.sim.metrics import timeseries
from oserve.sim.request import RECORD_FIELDS

__all__ = ["PolicyRun", "write_outputs", "comparison_table", "slug", "finite_json"]

@dataclass
class PolicyRun:
    """One policy's simulation.

    Attributes:
        label: the policy as given (``oserve``, ``static:V``, ``best-static``, ``plain-vllm``).
        variant: the static variant used (static policies), else None.
        result: the simulation result.
        summary: :func:`oserve.sim.metrics.summarise` of it.
        candidates: for ``best-static``: summary per variant tried.
    """

    label: str
    variant: str | None
    result: SimResult
    summary: dict[str, Any]
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)



_TABLE_KEYS = (
    ("throughput_avg_rps", "throughput avg (req/s)"),
    ("throughput_peak_rps", "throughput peak (req/s)"),
    ("goodput_avg_rps", "goodput avg (req/s)"),
    ("goodput_peak_rps", "goodput peak (req/s)"),
    ("slo_attainment", "SLO attainment"),
    ("ttft_p50_s", "TTFT p50 (s)"),
    ("ttft_p99_s", "TTFT p99 (s)"),
    ("tpot_p99_s", "TPOT p99 (s)"),
    ("p99_latency_s", "p99 latency (s/token)"),
    ("memory_utilization", "memory utilization"),
    ("switch_touched_share", "touched by a switch"),
    ("switches", "switches"),
    ("reconfig_s", "reconfiguration (s)"),
    ("aborted", "aborted"),
    ("refused", "refused"),
    ("preemptions", "preemptions"),
)


def slug(label: str) -> str:
    """A file-name-safe form of a policy label."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def comparison_table(runs: Sequence[PolicyRun]) -> str:
    """A Markdown table, one column per policy, one row per metric."""
    head = "| metric | " + " | ".join(r.label + (f" ({r.variant})" if r.variant else "") for r in runs) + " |"
    sep = "|---|" + "---:|" * len(runs)
    rows = [f"| {name} | " + " | ".join(_fmt(r.summary.get(k)) for r in runs) + " |" for k, name in _TABLE_KEYS]
    return "\n".join([head, sep, *rows])


def finite_json(x: Any) -> Any:
    """A JSON-safe copy: numpy arrays and scalars as Python values, non-finite floats (an unbounded window,
    a missing ratio) as None."""
    if isinstance(x, dict):
        return {str(k): finite_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return finite_json(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(RECORD_FIELDS))
        w.writeheader()
        w.writerows(records)


def _plots(run: PolicyRun, out: Path, bin_s: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = run.result
    k = len(res.class_names)
    ts = timeseries(res.requests, bin_s=bin_s, n_classes=k, end_s=res.end_s)
    files = []
    name = slug(run.label)
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    tmin = ts["t_s"] / 60
    axes[0].plot(tmin, ts["throughput_rps"], label="completed")
    axes[0].plot(tmin, ts["arrivals_rps"].sum(axis=1), label="arrived", alpha=0.6)
    axes[0].set_ylabel("req/s")
    axes[0].set_title(f"{run.label}: throughput")
    axes[0].legend()
    axes[1].plot(tmin, ts["ttft_p99_s"], label="p99 TTFT")
    axes[1].plot(tmin, ts["tpot_p99_s"], label="p99 TPOT")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("s")
    axes[1].set_title("p99 TTFT and TPOT of requests finishing in each bin")
    axes[1].legend()
    tl = res.timeline
    variants = sorted({v for s in tl for v in s["replicas"]})
    if tl:
        t = np.array([s["time_s"] for s in tl]) / 60
        ys = [np.array([s["replicas"].get(v, 0) for s in tl]) for v in variants]
        if ys:
            axes[2].stackplot(t, *ys, labels=variants, step="post")
        axes[2].plot(t, [s["starting"] for s in tl], "k--", label="starting", drawstyle="steps-post")
        axes[2].legend(fontsize=7, loc="upper left")
    axes[2].set_ylabel("ready replicas")
    axes[2].set_title("deployment mix (replicas by variant)")
    for j, cname in enumerate(res.class_names):
        line = axes[3].plot(tmin, ts["arrivals_rps"][:, j], label=f"{cname} observed")[0]
        if res.decisions:
            dt = np.array([d["time_s"] for d in res.decisions]) / 60
            fc = [d["forecast_rps"].get(cname, np.nan) for d in res.decisions]
            axes[3].plot(dt, fc, "--", color=line.get_color(), label=f"{cname} forecast")
    axes[3].set_ylabel("req/s")
    axes[3].set_xlabel("time (min)")
    axes[3].set_title("arrival rate per class: observed vs forecast")
    axes[3].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    p = out / f"timeline_{name}.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    files.append(p.name)
    return files


def write_outputs(runs: Sequence[PolicyRun], out_dir: str | Path, *, config: dict[str, Any],
                  trace_info: dict[str, Any], command: str = "", bin_s: float = 60.0, plots: bool = True) -> Path:
    """Write every output of one ``oserve simulate`` invocation into ``out_dir``.

    Files: ``results.json`` (config, trace, per policy: summary, decisions, transitions, timeline),
    ``requests_<policy>.csv`` per policy, ``report.md`` (side-by-side table when several policies),
    ``timeline_<policy>.png`` per policy (throughput, p99 TTFT/TPOT, replicas by variant, forecast vs
    observed per class).

    Returns:
        The path of ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, list[str]] = {}
    for r in runs:
        _write_records(out / f"requests_{slug(r.label)}.csv", r.result.requests)
        if plots:
            pngs[r.label] = _plots(r, out, bin_s)
    results = {
        "command": command,
        "config": config,
        "trace": trace_info,
        "policies": {
            r.label: {
                "variant": r.variant,
                "summary": r.summary,
                "candidates": r.candidates,
                "sim": {"events": r.result.events, "wall_s": r.result.wall_s, "iterations": r.result.iterations,
                        "end_s": r.result.end_s},
                "initial_plan": r.result.initial_plan,
                "decisions": r.result.decisions,
                "transitions": r.result.transitions,
                "timeline": r.result.timeline,
            }
            for r in runs
        },
    }
    path = out / "results.json"
    path.write_text(json.dumps(finite_json(results), indent=1))
    lines = [f"# Simulation report ({', '.join(r.label for r in runs)})", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    lines += [f"Trace: {trace_info.get('name')} - {trace_info.get('requests')} requests over "
              f"{_fmt(trace_info.get('duration_s'))} s (scale {trace_info.get('scale')}).", "",
              comparison_table(runs), ""]
    for r in runs:
        lines.append(f"## {r.label}")
        if r.variant:
            lines.append(f"Static variant: `{r.variant}`.")
        if r.candidates:
            lines.append("Candidates (best-static): " + ", ".join(
                f"`{v}` goodput {_fmt(s['goodput_avg_rps'])} req/s" for v, s in r.candidates.items()))
        lines.append(f"Simulated {r.result.events} events in {r.result.wall_s:.1f} s.")
        for f in pngs.get(r.label, []):
            lines.append(f"![{r.label}]({f})")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return path
