"""What oserve's live loop decided on one capacity study, side by side for sim-scored guard settings.

A capacity row says *how much* load a policy carried, not *why*. This bench simulates ``oserve:P`` once on a
study of ``--results`` (``bench/results/capacity.json``) at one rate scale (default: that row's capacity), once
per ``--fractions`` setting of ``SimConfig.sim_split_fractions`` (``none``: the default guard), same trace, seed,
clipping and warm-up as the study, and writes for each run:

* the SLO attainment of the measured requests and per ``--window-s`` window of arrivals;
* the initial plan (replicas per variant, routing, and the planner's reason: the guard's scores);
* every decision: time, forecast demand (req/s), replicas, routing, whether the plan or its replicas changed and
  the reason the planner gave;
* every switch target (decided, reached or superseded, time to reach it).

    .venv/bin/python bench/guard_decisions.py --only llama-2-70b/code --fractions none 0.4,0.6,0.8
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _setting(text: str) -> list[float]:
    if text.strip().lower() == "none":
        return []
    try:
        out = [float(x) for x in text.split(",")]
    except ValueError:
        out = []
    if not out or not all(0 < f < 1 for f in out):
        raise argparse.ArgumentTypeError(f"each --fractions setting is 'none' or comma-separated numbers in (0, 1), "
                                         f"got {text!r}")
    return out


def window_attainment(records: list[dict[str, Any]], *, slo_ttft_s: float, slo_tpot_s: float, window_s: float,
                      from_s: float = 0.0) -> list[dict[str, Any]]:
    """SLO attainment (0-1) of the requests arriving in each ``window_s``-second window from ``from_s`` on
    (:func:`oserve.sim.metrics.summarise` on each window's records): ``[{"start_s", "requests", "slo_attainment"}]``,
    windows without arrivals left out."""
    from oserve.sim.metrics import summarise

    windows: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["arrival_s"] >= from_s:
            windows.setdefault(int((r["arrival_s"] - from_s) // window_s), []).append(r)
    return [{"start_s": from_s + k * window_s, "requests": len(rs),
             "slo_attainment": float(summarise(rs, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s)["slo_attainment"])}
            for k, rs in sorted(windows.items())]


def _decision(d: dict[str, Any]) -> dict[str, Any]:
    plan = d.get("plan") or {}
    return {"time_s": d.get("time_s"), "forecast_rps": sum((d.get("forecast_rps") or {}).values()),
            "replicas": dict(Counter(r["variant"] for r in plan.get("replicas", []))),
            "routing": plan.get("routing"), "changed": d.get("changed"), "replicas_changed": d.get("replicas_changed"),
            "reason": d.get("reason")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--only", required=True, help="one study, model/trace")
    ap.add_argument("--policy", default="oserve:milp", help="an oserve row of the study")
    ap.add_argument("--scale", type=float, default=None, help="rate scale (default: the row's capacity)")
    ap.add_argument("--fractions", type=_setting, nargs="+", default=[[]],
                    help="sim_split_fractions settings, each 'none' or e.g. 0.4,0.6,0.8")
    ap.add_argument("--window-s", type=float, default=30.0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/guard_decisions.json"))
    args = ap.parse_args(argv)
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        ap.error("--scale must be a finite number > 0")
    if not (math.isfinite(args.window_s) and args.window_s > 0):
        ap.error("--window-s must be a finite number of seconds > 0")
    if not args.policy.startswith("oserve"):
        ap.error(f"--policy must be an oserve row (oserve or oserve:PLANNER), got {args.policy!r}")
    sys.path.insert(0, str(ROOT / "bench"))
    from capacity import load_results, study_inputs, write_result

    from oserve.compose.capacity import default_scaler, measured_summary, parse_capacity_policy
    from oserve.compose.simulation import run_policy
    from oserve.sim.policies import PolicySpec
    from oserve.workload.transforms import clip_tokens

    out, keys = load_results(ap, Path(args.results), args.only)
    if len(keys) != 1:
        ap.error(f"--only names one study, got {keys}")
    key = keys[0]
    model, tname = key.split("/")
    mine = {r["policy"]: r for r in out["rows"] if r["model"] == model and r["trace"] == tname}
    if args.policy not in mine:
        ap.error(f"--policy: {args.policy!r} is not a row of {key}")
    study = out["studies"][key]
    table, cfg, trace = study_inputs(out, key)
    trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
    cluster, scheme = cfg.cluster.spec(), cfg.classes.to_scheme()
    policy = parse_capacity_policy(args.policy)
    if policy.planner:
        cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"kind": policy.planner, "params": {}})})
    seed, warmup = int(study["seed"]), float(study.get("warmup_s", 0.0))
    scale = args.scale if args.scale is not None else float(mine[args.policy]["capacity_scale"])
    slo = cfg.slo or table.slo
    result: dict[str, Any] = {
        "benchmark": "guard_decisions",
        "command": " ".join(["guard_decisions.py", *(sys.argv[1:] if argv is None else argv)]),
        "results": args.results, "study": key, "policy": args.policy, "scale": scale,
        "study_capacity": mine[args.policy]["capacity_scale"], "target": float(study["target"]),
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s}, "warmup_s": warmup, "window_s": args.window_s, "runs": []}
    t_all = time.perf_counter()
    scaled = default_scaler(seed)(trace, scale)
    for fractions in args.fractions:
        run_cfg = cfg.model_copy(update={"sim_split_fractions": list(fractions)})
        t0 = time.perf_counter()
        run = run_policy(PolicySpec("oserve"), scaled, table, cluster, scheme, run_cfg, seed=seed,
                         lengths_before_s=warmup if warmup > 0 else None)
        res = run.result
        summary = measured_summary(res, slo, warmup) if warmup > 0 else run.summary
        init = res.initial_plan or {}
        row = {"sim_split_fractions": list(fractions), "slo_attainment": float(summary["slo_attainment"]),
               "met": float(summary["slo_attainment"]) >= float(study["target"]),
               "windows": window_attainment(res.requests, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s,
                                            window_s=args.window_s, from_s=warmup),
               "initial_plan": {"replicas": dict(Counter(r["variant"] for r in init.get("replicas", []))),
                                "routing": init.get("routing"), "reason": init.get("reason")},
               "decisions": [_decision(d) for d in res.decisions],
               "targets": [{k: t.get(k) for k in ("decided_s", "status", "ended_s", "reconfig_s")} for t in res.targets],
               "wall_s": time.perf_counter() - t0}
        result["runs"].append(row)
        print(f"{key} {args.policy} at {scale:.4g}, split fractions {list(fractions) or 'none'}: attainment "
              f"{row['slo_attainment']:.4f}; per {args.window_s:g} s: "
              f"{[round(w['slo_attainment'], 3) for w in row['windows']]}; initial {row['initial_plan']['replicas']}",
              flush=True)
        write_result(args.out, result, t_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
