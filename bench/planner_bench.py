"""Planner benchmark: solve time and objective vs cluster size -> bench/results/planner.json.

Clusters: 1 node x 2 CPU cores; 4, 16 and 128 nodes x 8 A100-80GB. Tables: 8 variants x 6 classes,
synthetic (``oserve.testing.tables``; the A100 one follows a roofline sketch, not measurements) unless
``--table`` names a real table for the A100 clusters. Per cluster, ``--samples`` random demands
(seeded) with total load between 0.3x and 1.5x the cluster's rough capacity, so both met and unmet
demand are timed. Each planner is called once untimed (warm-up: imports, cvxpy compile; reported as
``solve_s_first``), then once per demand.

Row fields: ``cluster``, ``planner``, ``solve_s_median``, ``solve_s_p99`` (s, wall time of
``Planner.plan`` including placement and scoring), ``objective`` (mean over demands, req/s, scored by
``oserve.policies.evaluate``), ``cpu_s_median`` (process CPU time, s: less sensitive than wall time to
other jobs on a shared machine), ``gap_to_milp`` (mean of ``(milp - planner) / |milp|`` over demands
where the MILP was solved to optimality (HiGHS mip_rel_gap 1e-4); null where it never was).

Usage: python bench/planner_bench.py [--samples 20] [--out bench/results/planner.json] [--table T]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from oserve.policies import ClusterSpec, Demand, evaluate, make_planner
from oserve.policies.static import StaticPlanner, best_static
from oserve.profiles.table import ProfileTable
from oserve.testing.tables import GIB, SIX_CLASSES, synthetic_a100_table, synthetic_table


def cpu_table() -> ProfileTable:
    """A 0.5B-class model on CPU cores: fp32/bf16/int8/int4 x 1 or 2 cores (synthetic)."""
    caps, devs, mems = {}, {}, {}
    for prec, speed, mem in (("fp32", 1.0, 3.0), ("bf16", 1.6, 1.6), ("int8", 2.4, 1.0), ("int4", 3.0, 0.7)):
        for cores in (1, 2):
            v = f"0.5b-{prec}-{cores}c"
            devs[v] = cores
            mems[v] = int(mem * GIB / cores) + GIB // 2
            caps[v] = {}
            for c, (tin, tout) in SIX_CLASSES.items():
                work = tin / 4000 + tout / 40  # s of one core per request at fp32
                ok = tin <= 2048 or prec in ("fp32", "bf16")  # quantised kernels: long prompts miss TTFT
                caps[v][c] = round(speed * cores ** 0.85 / work, 4) if ok else 0.0
    return synthetic_table(caps, devs, memory_per_device_bytes=mems, start_time_s=10.0, device_type="cpu",
                           class_names=list(SIX_CLASSES))


def demands(table: ProfileTable, devices: int, per_device_rps: float, n: int, seed: int) -> list[Demand]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        total = devices * per_device_rps * rng.uniform(0.3, 1.5)
        shares = rng.dirichlet(np.ones(len(table.class_names)))
        out.append(Demand(rates_rps={c: float(total * s) for c, s in zip(table.class_names, shares, strict=True)}))
    return out


def run(samples: int, table_path: str | None) -> dict:
    a100 = ProfileTable.load(table_path) if table_path else synthetic_a100_table()
    cases = [("1x2-cpu", ClusterSpec.homogeneous(1, 2, "cpu", 4 * GIB), cpu_table(), 2.0)]
    for nodes in (4, 16, 128):
        cases.append((f"{nodes}x8-a100-80gb", ClusterSpec.homogeneous(nodes, 8, "a100-80gb", 80 * GIB), a100, 0.5))
    rows = []
    for ci, (name, cluster, table, per_dev) in enumerate(cases):
        ds = demands(table, cluster.total_devices, per_dev, samples, seed=ci)
        hindsight = best_static(cluster, table, ds)
        planners = {
            "milp": make_planner("milp"),
            "milp-highspy": make_planner("milp", backend="highspy"),
            "greedy": make_planner("greedy"),
            "flow": make_planner("flow"),
            "static-best-hindsight": StaticPlanner(hindsight),
        }
        results: dict[str, tuple[list[float], list[float], list[bool | None], float, list[float]]] = {}
        for pname, planner in planners.items():
            t0 = time.perf_counter()
            planner.plan(cluster, table, ds[0])
            first = time.perf_counter() - t0
            times, cpu, objs, opt = [], [], [], []
            for d in ds:
                t0, c0 = time.perf_counter(), time.process_time()
                plan = planner.plan(cluster, table, d)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                objs.append(evaluate(plan, cluster, table, d).objective)
                opt.append(plan.optimal)
            results[pname] = (times, objs, opt, first, cpu)
        milp_obj, milp_opt = results["milp"][1], results["milp"][2]
        for pname, (times, objs, _opt, first, cpu) in results.items():
            gaps = [(m - o) / abs(m) for m, o, ok in zip(milp_obj, objs, milp_opt, strict=True) if ok and abs(m) > 0]
            rows.append({
                "cluster": name, "planner": pname,
                "solve_s_median": float(np.median(times)), "solve_s_p99": float(np.percentile(times, 99)),
                "solve_s_first": first, "cpu_s_median": float(np.median(cpu)), "objective": float(np.mean(objs)),
                "gap_to_milp": float(np.mean(gaps)) if gaps else None,
                "gap_to_milp_max": float(np.max(gaps)) if gaps else None,
                "milp_optimal_fraction": float(np.mean([bool(o) for o in milp_opt])),
                **({"variant": hindsight} if pname.startswith("static") else {}),
            })
            print(f"{name:18s} {pname:22s} median {rows[-1]['solve_s_median'] * 1e3:8.1f} ms  "
                  f"cpu {rows[-1]['cpu_s_median'] * 1e3:8.1f} ms  "
                  f"p99 {rows[-1]['solve_s_p99'] * 1e3:8.1f} ms  obj {rows[-1]['objective']:9.3f}  "
                  f"gap {rows[-1]['gap_to_milp']}")
    return {
        "benchmark": "planner", "samples_per_cluster": samples,
        "tables": {"cpu": "synthetic (bench/planner_bench.py:cpu_table)",
                   "a100": table_path or "synthetic (oserve.testing.tables.synthetic_a100_table)"},
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]},
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--out", default="bench/results/planner.json")
    ap.add_argument("--table", default=None, help="A100 profile table JSON (default: synthetic)")
    args = ap.parse_args()
    out = run(args.samples, args.table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
