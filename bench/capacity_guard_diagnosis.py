"""Where oserve (MILP + the simulator-scored guard) loses SLO attainment to the best static deployment, per window.

On one model and trace (default Llama-2-70B, Azure code + conv merged, first 300 s, 4 x 8 A100-80GB,
the shipped modelled table; the same config as ``bench/capacity.py``) at one arrival-rate scale
(default 1.97, between oserve's and static int8 TP2's measured capacity), simulates oserve (live loop,
``sim_scored_plans`` on) and the named static deployments, and records per ``--window`` seconds:
requests, class mix, SLO attainment, misses by cause (TTFT only, TPOT only, both, never served),
and the replicas oserve runs (ready, by variant); plus every oserve decision that changed the
replicas (time, target replicas by variant, the guard's reason). Writes ``--out`` (JSON).

    PYTHONPATH=$PWD nice -n 19 .venv/bin/python bench/capacity_guard_diagnosis.py [--scale 1.97] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data/traces/azure_llm_2023"
TRACE_FILES = {"code": ["AzureLLMInferenceTrace_code.csv"], "conv": ["AzureLLMInferenceTrace_conv.csv"],
               "merged": ["AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_conv.csv"]}
CONTROL = {"interval_s": 30, "horizon_s": 90, "monitor_window_s": 30, "history_bin_s": 30, "history_s": 3600}


def _windows(records: list[dict], names: list[str], ttft: float, tpot: float, window_s: float) -> list[dict]:
    """Per-window SLO attainment and misses by cause (TTFT only, TPOT only, both, unserved)."""
    out: dict[int, dict] = {}
    for r in records:
        w = int(r["arrival_s"] // window_s)
        d = out.setdefault(w, {"start_s": w * window_s, "requests": 0, "met": 0, "miss_ttft": 0, "miss_tpot": 0,
                               "miss_both": 0, "unserved": 0, "by_class": Counter(), "miss_by_class": Counter()})
        d["requests"] += 1
        c = names[int(r["cls"])]
        d["by_class"][c] += 1
        if r["finish_s"] is None or r["first_token_s"] is None:
            d["unserved"] += 1
            d["miss_by_class"][c] += 1
            continue
        t1 = r["first_token_s"] - r["arrival_s"]
        n = r["generated_tokens"]
        t2 = (r["finish_s"] - r["first_token_s"]) / (n - 1) if n > 1 else 0.0
        a, b = t1 > ttft, t2 > tpot
        if not a and not b:
            d["met"] += 1
            continue
        d["miss_by_class"][c] += 1
        d["miss_both" if a and b else "miss_ttft" if a else "miss_tpot"] += 1
    rows = []
    for w in sorted(out):
        d = out[w]
        d["slo_attainment"] = d["met"] / d["requests"]
        d["by_class"], d["miss_by_class"] = dict(d["by_class"]), dict(d["miss_by_class"])
        rows.append(d)
    return rows


def _replicas_over_time(res: object, window_s: float) -> dict[str, dict[str, float]]:
    """Mean ready replicas by variant per window (from the simulator's timeline samples)."""
    acc: dict[int, list[dict]] = {}
    for s in res.timeline:
        acc.setdefault(int(s["time_s"] // window_s), []).append(s["replicas"])
    out = {}
    for w, samples in sorted(acc.items()):
        tot: Counter = Counter()
        for s in samples:
            tot.update(s)
        out[str(w * window_s)] = {v: k / len(samples) for v, k in sorted(tot.items())}
    return out


def _mixes(args: argparse.Namespace, table: object, cluster: object, scheme: object, cfg: object, slo: object,
           base: object) -> dict:
    """Fixed plans (planner routing for the scaled trace's mean demand) on the trace at ``--mix-scales`` (static
    ones also round-robin), and as the guard scores them: SLO attainment on its synthetic Poisson workload
    (trace lengths, mean class mix) at 0.8, 1, 1.25, 1.5 x the MILP plan's simulated capacity."""
    import numpy as np

    from oserve.compose.capacity import mean_demand
    from oserve.compose.simulation import class_lengths, sim_options
    from oserve.policies.base import Allocation, build_plan
    from oserve.policies.problem import ObjectiveWeights, build_problem
    from oserve.sim.engine import Simulation
    from oserve.sim.metrics import summarise
    from oserve.sim.scored_planner import SimScoredPlanner, _Workload, plan_attainment
    from oserve.workload.transforms import scale_rate

    seed = int(args.seeds.split(",")[0])
    scales = [float(x) for x in args.mix_scales.split(",")]
    ref_trace = scale_rate(base, args.scale, seed=seed)
    demand = mean_demand(ref_trace, scheme)
    prob = build_problem(cluster, table, demand, None, ObjectiveWeights())
    guard = SimScoredPlanner("milp", lengths=class_lengths(ref_trace, scheme), scheme=scheme, slo=slo)
    guard.plan(cluster, table, demand)
    ref = guard.last_scores["inner"]
    total = sum(demand.rates_rps.values())
    shares = np.array([demand.rates_rps[c] for c in prob.classes]) / total
    shares = np.round(shares / guard.mix_resolution) * guard.mix_resolution
    used = [c for j, c in enumerate(prob.classes) if shares[j] > 0]
    wl = _Workload(shares, prob.classes, guard._class_lengths(used), guard.n_requests, guard.seed,
                   max_total=max(v.max_model_len for v in table.variants.values()))
    factors = (0.8, 1.0, 1.25, 1.5)
    out: dict = {"seed": seed, "guard_inner_capacity_rps": ref, "guard_factors": list(factors),
                 "trace_mean_rps_at_scale": {str(s): total / args.scale * s for s in scales}, "plans": {}}
    for mix in args.mixes.split(";"):
        counts = np.zeros(prob.fits.shape, np.int64)
        for part in mix.split("+"):
            v, k = part.split(":")
            counts[prob.variants.index(f"{args.model}-{v}"), 0] = int(k)
        plan = build_plan(prob, Allocation(counts), cluster, table, demand, None, "fixed")
        row: dict = {"routing": plan.routing, "trace_plan_routing": {}, "trace_round_robin": {}}
        for s in scales:
            tr = scale_rate(base, s, seed=seed)
            for key, routing in (("trace_plan_routing", "plan"), ("trace_round_robin", "round-robin")):
                if routing == "round-robin" and "+" in mix:
                    continue
                res = Simulation(tr, table, cluster, plan, routing=routing, scheme=scheme,
                                 options=sim_options(cfg), policy="fixed").run()
                row[key][str(s)] = summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)["slo_attainment"]
        row["guard_synthetic"] = [plan_attainment(plan, table, cluster, wl, ref * f, slo=slo, scheme=scheme)
                                  for f in factors]
        row["guard_overload_score"] = float(np.mean(row["guard_synthetic"][1:]))
        out["plans"][mix] = row
        print(f"{mix}: trace {row['trace_plan_routing']} rr {row['trace_round_robin']} guard "
              f"{[round(x, 3) for x in row['guard_synthetic']]}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "examples/profiles/a100-80gb-mixed.json"))
    ap.add_argument("--model", default="llama-2-70b")
    ap.add_argument("--trace", default="merged", choices=sorted(TRACE_FILES))
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--scale", type=float, default=1.97)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the rate scaling and the engine")
    ap.add_argument("--statics", default="int8-tp2,int8-tp4", help="static variants (suffix after the model)")
    ap.add_argument("--window", type=float, default=30.0, help="window of the per-window report, seconds")
    ap.add_argument("--sample-interval", type=float, default=10.0, help="simulator timeline sample period, seconds")
    ap.add_argument("--sim-scored", default="on", choices=("on", "off"))
    ap.add_argument("--mixes", default="",
                    help="fixed plans to compare on the trace and in the guard's synthetic score, ';'-separated, each "
                         "'variant-suffix:count+...' (e.g. 'int8-tp2:16;int8-tp2:12+int8-tp4:2'), planner routing")
    ap.add_argument("--mix-scales", default="1.97,2.1,2.2", help="trace scales at which the fixed plans run")
    ap.add_argument("--no-live", action="store_true", help="skip the per-window runs (only --mixes)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/capacity_guard_diagnosis.json"))
    args = ap.parse_args()
    if not args.scale > 0 or not args.window > 0 or not args.duration > 0:
        ap.error("--scale, --window and --duration must be > 0")

    from oserve.compose.capacity import mean_demand
    from oserve.compose.simulation import load_traces, run_policy
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.metrics import summarise
    from oserve.sim.policies import PolicySpec, restrict_table
    from oserve.workload.transforms import clip_tokens, scale_rate

    table = restrict_table(ProfileTable.load(args.table), model=args.model)
    cfg = SimConfig(table=args.table, control=CONTROL, planner={"kind": "milp"}, forecaster={"kind": "ewma"},
                    sim_scored_plans=args.sim_scored == "on", sample_interval_s=args.sample_interval)
    scheme, cluster, slo = cfg.classes.to_scheme(), cfg.cluster.spec(), cfg.slo or table.slo
    base = load_traces([str(TRACES / f) for f in TRACE_FILES[args.trace]], duration_s=args.duration)
    base = clip_tokens(base, max_total=max(v.max_model_len for v in table.variants.values()))
    out: dict = {"command": " ".join(["bench/capacity_guard_diagnosis.py", *sys.argv[1:]]), "model": args.model, "trace": args.trace, "duration_s": args.duration, "scale": args.scale,
                 "slo": slo.model_dump(), "window_s": args.window, "sim_scored_plans": args.sim_scored == "on",
                 "load_average_before": list(os.getloadavg()), "runs": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        trace = base if args.scale == 1.0 else scale_rate(base, args.scale, seed=seed)
        out.setdefault("requests", {})[str(seed)] = len(trace)
        out.setdefault("class_mix_rps", {})[str(seed)] = {c: float(r) for c, r in
                                                          mean_demand(trace, scheme).rates_rps.items()}
        specs = {} if args.no_live else {"oserve:milp": PolicySpec("oserve")}
        if not args.no_live:
            specs |= {f"static:{s}": PolicySpec("static", f"{args.model}-{s}") for s in args.statics.split(",") if s}
        for label, spec in specs.items():
            t0 = time.perf_counter()
            run = run_policy(spec, trace, table, cluster, scheme, cfg, seed=seed)
            res = run.result
            s = summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
            entry = {"slo_attainment": s["slo_attainment"], "ttft_p99_s": s["ttft_p99_s"],
                     "tpot_p99_s": s["tpot_p99_s"], "aborted": s["aborted"], "refused": s["refused"],
                     "windows": _windows(res.requests, scheme.names, slo.ttft_s, slo.tpot_s, args.window),
                     "replicas_by_window": _replicas_over_time(res, args.window), "wall_s": 0.0}
            if res.decisions:
                entry["replica_decisions"] = [
                    {"time_s": d["time_s"], "replicas": dict(Counter(r["variant"] for r in d["plan"]["replicas"])),
                     "demand_rps": d["demand"].get("rates_rps"), "reason": d["reason"]}
                    for d in res.decisions if d.get("replicas_changed")]
                entry["decisions"] = len(res.decisions)
            entry["wall_s"] = time.perf_counter() - t0
            out["runs"][f"{label}@seed{seed}"] = entry
            print(f"seed {seed} {label}: attainment {s['slo_attainment']:.4f} ({entry['wall_s']:.0f} s)", flush=True)
            for w in entry["windows"]:
                print(f"   {w['start_s']:5.0f}s n={w['requests']:4d} att={w['slo_attainment']:.3f} "
                      f"ttft={w['miss_ttft']} tpot={w['miss_tpot']} both={w['miss_both']} un={w['unserved']} "
                      f"miss={w['miss_by_class']}", flush=True)
    if args.mixes:
        out["mixes"] = _mixes(args, table, cluster, scheme, cfg, slo, base)
    out["load_average_after"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(out, indent=1, default=lambda x: None))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
