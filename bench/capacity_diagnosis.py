"""Why oserve's plans carry less than the best static deployment: one load, every policy, read closely.

On one model and trace (default Llama-2-70B, Azure code + conv merged, first 1,200 s, 4 x 8
A100-80GB, the shipped modelled table) at one arrival-rate scale (default: near the best static
deployment's capacity), simulates plain vLLM, the best single-variant static deployment, the
hindsight static mix and oserve (MILP planner), plus oserve with free switching (every variant's
``start_time_s`` and ``stop_time_s`` set to 0), and records per policy: SLO attainment overall and
per class, the replicas deployed (mean, min ready devices), the plan's routing of each class,
decisions (plan changes vs routing-only), transitions by status and aborted requests. (The table's
per-class capacities against the simulator's are in ``bench/results/capacity.json``, ``studies.*.oracle``.)
Writes ``bench/results/capacity_diagnosis.json``.

    .venv/bin/python bench/capacity_diagnosis.py [--scale 0.9] [--duration 1200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data/traces/azure_llm_2023"
CONTROL = {"interval_s": 30, "horizon_s": 90, "monitor_window_s": 30, "history_bin_s": 30, "history_s": 3600}


def _per_class(records: list[dict], names: list[str], ttft: float, tpot: float) -> dict:
    out = {}
    for j, c in enumerate(names):
        sel = [r for r in records if int(r["cls"]) == j]
        good = 0
        for r in sel:
            if r["finish_s"] is None or r["first_token_s"] is None:
                continue
            t1 = r["first_token_s"] - r["arrival_s"]
            n = r["generated_tokens"]
            t2 = (r["finish_s"] - r["first_token_s"]) / (n - 1) if n > 1 else 0.0
            good += t1 <= ttft and t2 <= tpot
        out[c] = {"requests": len(sel), "slo_attainment": good / len(sel) if sel else None}
    return out


def _deployment(res: object) -> dict:
    tl = res.timeline
    ready = [sum(s["replicas"].values()) for s in tl]
    mix = Counter()
    for s in tl:
        mix.update(s["replicas"])
    n = max(1, len(tl))
    return {"ready_replicas_mean": float(np.mean(ready)) if ready else None,
            "ready_replicas_min": int(min(ready)) if ready else None,
            "replicas_by_variant_mean": {v: k / n for v, k in sorted(mix.items())}}


def _control(res: object) -> dict:
    d = res.decisions
    changed = [x for x in d if x.get("changed")]
    replan = [x for x in changed if x.get("replicas_changed")]
    tr = res.transitions
    last_routing = changed[-1]["plan"].get("routing") if changed else None
    return {"ticks": len(d), "plan_changes": len(changed), "replica_changes": len(replan),
            "routing_only_changes": len(changed) - len(replan),
            "transitions": len(tr), "transitions_by_status": dict(Counter(t["status"] for t in tr)),
            "aborted_by_drains": int(sum(t["aborted_requests"] for t in tr)),
            "transition_duration_s": [t["duration_s"] for t in tr if t["duration_s"] is not None],
            "last_routing": last_routing}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "examples/profiles/a100-80gb-mixed.json"))
    ap.add_argument("--model", default="llama-2-70b")
    ap.add_argument("--traces", default="AzureLLMInferenceTrace_code.csv,AzureLLMInferenceTrace_conv.csv")
    ap.add_argument("--duration", type=float, default=1200.0)
    ap.add_argument("--scale", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/capacity_diagnosis.json"))
    args = ap.parse_args()

    from oserve.compose.capacity import mean_demand
    from oserve.compose.simulation import load_traces, run_policy, sim_options
    from oserve.policies import make_planner
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.engine import Simulation
    from oserve.sim.metrics import summarise
    from oserve.sim.policies import PolicySpec, plain_vllm_variant, restrict_table
    from oserve.workload.transforms import clip_tokens, scale_rate

    table = restrict_table(ProfileTable.load(args.table), model=args.model)
    cfg = SimConfig(table=args.table, control=CONTROL, planner={"kind": "milp"}, forecaster={"kind": "ewma"})
    scheme, cluster, slo = cfg.classes.to_scheme(), cfg.cluster.spec(), table.slo
    base = load_traces([str(TRACES / f) for f in args.traces.split(",")], duration_s=args.duration)
    base = clip_tokens(base, max_total=max(v.max_model_len for v in table.variants.values()))
    trace = scale_rate(base, args.scale, seed=args.seed)
    names = scheme.names
    out: dict = {"model": args.model, "traces": args.traces, "duration_s": args.duration, "scale": args.scale,
                 "requests": len(trace), "slo": slo.model_dump(), "policies": {}}
    free = table.model_copy(update={"variants": {k: v.model_copy(update={"start_time_s": 0.0})
                                                 for k, v in table.variants.items()}})
    free_cfg = cfg.model_copy(update={"switching": cfg.switching.model_copy(update={"stop_time_s": 0.0})})
    plain = plain_vllm_variant(table)
    runs = {
        "plain-vllm": lambda: run_policy(PolicySpec("static", plain), trace, table, cluster, scheme, cfg).result,
        "static:int8-tp2": lambda: run_policy(PolicySpec("static", f"{args.model}-int8-tp2"), trace, table, cluster,
                                              scheme, cfg).result,
        "static-mix": lambda: Simulation(
            trace, table, cluster, make_planner("milp").plan(cluster, table, mean_demand(trace, scheme), None),
            routing="plan", scheme=scheme, options=sim_options(cfg), policy="static-mix").run(),
        "oserve:milp": lambda: run_policy(PolicySpec("oserve"), trace, table, cluster, scheme, cfg).result,
        "oserve:milp free switching": lambda: run_policy(PolicySpec("oserve"), trace, free, cluster, scheme,
                                                         free_cfg).result,
    }
    for label, fn in runs.items():
        t0 = time.perf_counter()
        res = fn()
        s = summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
        out["policies"][label] = {
            "slo_attainment": s["slo_attainment"], "ttft_p99_s": s["ttft_p99_s"], "tpot_p99_s": s["tpot_p99_s"],
            "aborted": s["aborted"], "refused": s["refused"], "switch_touched_share": s["switch_touched_share"],
            "per_class": _per_class(res.requests, names, slo.ttft_s, slo.tpot_s),
            "initial_plan": dict(Counter(p["variant"] for p in res.initial_plan["replicas"])),
            "initial_routing": res.initial_plan.get("routing"),
            **_deployment(res), **(_control(res) if res.decisions else {}), "wall_s": time.perf_counter() - t0,
        }
        print(label, json.dumps({k: out["policies"][label][k] for k in ("slo_attainment", "initial_plan")}),
              flush=True)
    out["class_mix"] = {c: float(r) for c, r in mean_demand(trace, scheme).rates_rps.items()}
    Path(args.out).write_text(json.dumps(out, indent=1, default=lambda x: None))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
