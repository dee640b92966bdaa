"""How much serving each window from an idle cluster flatters one fixed plan (the window oracle's lead-in check).

For a finished capacity study (``bench/capacity.py``'s JSON) and a rate scale, simulates each fixed plan named
(static-mix's plan for the scaled trace's mean demand and single-variant static deployments, plan routing) three
ways and writes the SLO attainment of each to ``--out``:

* ``whole``: the plan serves the whole (scaled, clipped) trace, as a capacity search does;
* ``windows_from_idle``: each ``--window`` window's requests from an idle cluster (the first window oracle);
* ``windows_after_one_window``: each window after a lead-in of the window before it, uncounted;
* ``windows_after_the_whole_trace_before``: each window after the whole trace before it, uncounted
  (:func:`oserve.compose.window_oracle.window_oracle_attainment`'s default).

A fixed plan cannot beat itself: the way of serving windows whose attainment is closer to ``whole`` is the sound one.

    PYTHONPATH=$PWD .venv/bin/python bench/window_idle_bias.py --study llama-2-70b/conv --scale 6.749 \\
        --variants llama-2-70b-int8-tp4,llama-2-70b-int8-tp2 --out bench/results/window_idle_bias.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from capacity import ROOT, study_inputs


class _FixedPlan:
    """A planner whose plan is always ``plan`` (the one candidate of every window)."""

    def __init__(self, plan: Any) -> None:
        self._plan = plan

    def plan(self, *_args: Any) -> Any:
        return self._plan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--study", required=True, help="model/trace of --results")
    ap.add_argument("--scale", type=float, required=True, help="arrival-rate scale (> 0)")
    ap.add_argument("--variants", default="", help="comma-separated single-variant static deployments to add")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/window_idle_bias.json"))
    args = ap.parse_args()
    if not (math.isfinite(args.scale) and args.scale > 0):
        ap.error(f"--scale must be a finite number > 0, got {args.scale:g}")
    if not (math.isfinite(args.window) and args.window > 0):
        ap.error(f"--window must be a finite number of seconds > 0, got {args.window:g}")
    if not Path(args.results).exists():
        ap.error(f"--results {args.results} does not exist (run bench/capacity.py first)")
    out = json.loads(Path(args.results).read_text())
    if args.study not in out["studies"]:
        ap.error(f"--study {args.study!r} not in --results; allowed: {', '.join(out['studies'])}")

    from oserve.compose.capacity import default_scaler, mean_demand
    from oserve.compose.simulation import sim_scored
    from oserve.compose.window_oracle import _met, window_oracle_attainment
    from oserve.policies import make_planner
    from oserve.sim.capacity_check import derate_table
    from oserve.sim.policies import static_plan
    from oserve.workload.transforms import clip_tokens

    table, cfg, trace = study_inputs(out, args.study)
    scheme, cluster = cfg.classes.to_scheme(), cfg.cluster.spec()
    trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
    scaled = default_scaler(int(out["studies"][args.study].get("seed", 0)))(trace, args.scale)
    planner = sim_scored(make_planner(cfg.planner.kind, **cfg.planner.params), cfg, scheme, scaled)
    plans = {"static-mix": planner.plan(cluster, derate_table(table, cfg.planner_capacity_factor),
                                        mean_demand(scaled, scheme), None)}
    plans.update({f"static:{v}": static_plan(cluster, table, v) for v in args.variants.split(",") if v})
    rows = []
    t0 = time.perf_counter()
    for label, plan in plans.items():
        whole = _met(plan, "plan", scaled, table, cluster, scheme, cfg, label)
        fixed = _FixedPlan(plan)  # every candidate of every window is this plan
        idle, one, history = (window_oracle_attainment(scaled, table, cluster, scheme, cfg, fixed, table,
                                                       window_s=args.window, static_variants=[], lead_in_s=lead_in)[0]
                              for lead_in in (0.0, args.window, math.inf))
        n = len(scaled)
        rows.append({"plan": label, "replicas": plan.replica_counts(), "whole": whole / n,
                     "windows_from_idle": idle, "windows_after_one_window": one,
                     "windows_after_the_whole_trace_before": history})
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "window_idle_bias", "study": args.study, "scale": args.scale, "window_s": args.window,
              "requests": len(scaled), "rows": rows, "wall_s": time.perf_counter() - t0,
              "load_average_1_5_15": list(os.getloadavg()), "results": args.results}
    path = Path(args.out)
    doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
    doc["runs"] = [r for r in doc["runs"] if (r["study"], r["scale"]) != (args.study, args.scale)] + [result]
    path.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
