"""Burst backlog (issues 12/13): 40 requests at once on one replica, energy-saving planner, in the simulator.

The reported case: 40 requests arrived at once on one replica that serves about 2 req/s (SLO TTFT
2 s); in energy-saving mode the plan fell to 0 replicas with 34 still queued, and replicas started
later served none of the queued requests (they sat in the first engine's queue). This bench replays
that case in the discrete-event simulator with the measured CPU profile table
(``examples/profiles/cpu-smollm2.json``, variant ``smollm2-135m-fp32-1c-s8``: 2.94 req/s for
short-in/short-out, batch limit 8, start 31.7 s) on a 4-core CPU node, the real controller (EWMA
forecaster, greedy planner with ``fill_idle_devices=False``), and four settings side by side:

- ``before``: no backlog in the demand, no router-side queue (requests pile into engine queues);
- ``backlog_only`` / ``queue_only``: one of the two fixes;
- ``after``: backlog in the demand and the router-side queue (the defaults now).

Trace: a burst of short requests (100 prompt tokens, 32 output tokens) at t = 0 -- 40 (the
reported case: it drains in about 20 s, shorter than a 31.7 s start) and 160 (longer than a
switch) -- then 0.2 req/s of the same for 120 s (so the control loop keeps ticking). Control every
5 s, monitor window 10 s.

Reported per setting: TTFT p50 / p90 of the 40 burst requests, SLO attainment (TTFT <= 2 s and
TPOT <= 0.2 s) of all requests, burst requests served by replicas other than the first one, and the
most replicas planned / ready.

Usage::

    python bench/burst_backlog.py [--out bench/results/burst_backlog.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from oserve.control.controller import Controller
from oserve.forecast import make as make_forecaster
from oserve.policies import make_planner
from oserve.profiles.table import ProfileTable
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.metrics import summarise
from oserve.types import DEFAULT_SCHEME, ClusterSpec, Plan, ReplicaPlacement
from oserve.workload.trace import Trace

VARIANT = "smollm2-135m-fp32-1c-s8"
TABLE = Path(__file__).resolve().parent.parent / "examples" / "profiles" / "cpu-smollm2.json"
BURST = 40


def _trace(burst: int) -> Trace:
    rng = np.random.default_rng(0)
    trickle = np.cumsum(rng.exponential(5.0, 40))
    trickle = trickle[trickle < 120.0] + 1.0
    arrivals = np.concatenate([np.arange(burst) * 1e-3, trickle])
    n = arrivals.size
    return Trace(arrivals, np.full(n, 100), np.full(n, 32), name=f"burst{burst}")


def _run(table: ProfileTable, burst_n: int, backlog: bool, router_queue: bool) -> dict:
    cluster = ClusterSpec.homogeneous(1, 4, "cpu", 4 * 1024**3)
    start = Plan(replicas=[ReplicaPlacement(variant=VARIANT, node="node0", device_ids=(0,))],
                 routing={c: {VARIANT: 1.0} for c in DEFAULT_SCHEME.names})
    ctrl = Controller(make_forecaster("ewma"), make_planner("greedy", weights={"fill_idle_devices": False}), cluster,
                      table, DEFAULT_SCHEME, horizon_s=10.0, min_history=3, backlog=backlog)
    opts = SimOptions(control_interval_s=5.0, monitor_window_s=10.0, history_bin_s=5.0, router_queue=router_queue)
    t0 = time.perf_counter()
    res = Simulation(_trace(burst_n), table, cluster, start, controller=ctrl, options=opts).run()
    wall = time.perf_counter() - t0
    burst = [r for r in res.requests if r["rid"] < burst_n]
    ttft = np.array([r["first_token_s"] - r["arrival_s"] for r in burst if r["first_token_s"] is not None])
    first = burst[0]["replica"]
    summary = summarise(res, slo_ttft_s=table.slo.ttft_s, slo_tpot_s=table.slo.tpot_s)
    planned = [sum(1 for _ in d["plan"]["replicas"]) for d in res.decisions]
    ready = [sum(s["replicas"].values()) for s in res.timeline]
    waiting_at_first_tick = res.decisions[0]["backlog_rps"] if res.decisions else {}
    return {
        "backlog_in_demand": backlog, "router_queue": router_queue,
        "burst_ttft_p50_s": float(np.percentile(ttft, 50)), "burst_ttft_p90_s": float(np.percentile(ttft, 90)),
        "burst_served": int(ttft.size),
        "burst_served_by_other_replicas": sum(1 for r in burst if r["replica"] not in (None, first)),
        "slo_attainment_all": summary["slo_attainment"], "requests": len(res.requests),
        "replicas_planned_min_max": [min(planned), max(planned)] if planned else None,
        "replicas_planned_first_ticks": planned[:6], "replicas_ready_max": max(ready) if ready else None,
        "backlog_rps_first_tick": waiting_at_first_tick, "sim_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results/burst_backlog.json")
    ap.add_argument("--bursts", default=f"{BURST},160", help="burst sizes, requests (comma-separated)")
    args = ap.parse_args()
    full = ProfileTable.load(TABLE)
    table = full.model_copy(update={"variants": {VARIANT: full.variants[VARIANT]}})
    load_before = list(os.getloadavg())
    settings = (("before", False, False), ("backlog_only", True, False), ("queue_only", False, True),
                ("after", True, True))
    rows = {f"burst{b}/{name}": _run(table, b, backlog, queue)
            for b in (int(x) for x in args.bursts.split(",")) for name, backlog, queue in settings}
    out = {
        "benchmark": "burst_backlog", "table": str(TABLE.relative_to(TABLE.parent.parent.parent)), "variant": VARIANT,
        "cluster": "1 node x 4 CPU cores (4 GiB each)", "slo": table.slo.model_dump(),
        "trace": f"burst (requests: {args.bursts}) at t=0 + 0.2 req/s for 120 s; 100 prompt / 32 output tokens",
        "controller": "EWMA forecaster, greedy planner fill_idle_devices=False (energy saving), control 5 s, "
                      "window 10 s",
        "simulated": True,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_1_5_15_before": load_before, "load_avg_1_5_15_after": list(os.getloadavg())},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
