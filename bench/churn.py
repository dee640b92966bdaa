"""Plan churn of the control loop in the simulator: decisions, switches, time to target, aborted requests.

Runs the ``oserve`` policy of ``oserve simulate`` on four scenarios and writes one JSON entry per
(scenario, label) into ``bench/results/churn.json`` (entries of other labels are kept, so the script
can be run once against the code before a change, ``--label before``, and once after):

* ``a100-azure``: ``examples/sim-4x8-a100.yaml`` as shipped (Azure code + conv traces, 1 h).
* ``a100-70b``: the same with ``model: llama-2-70b`` (the set-up where docs/simulator.md counted
  26 switches).
* ``a100-steps``: the same config on the Azure traces at 10x their rate, thinned to a step load
  (x10/6 for 20 min, x10 for 20 min, x10/12 after): the load crosses the cluster's capacity.
* ``cpu-steps``: ``examples/sim-cpu-smollm2.yaml`` (2 CPU cores, SmolLM2-135M, the measured table),
  starting on two replicas, under 1 / 3 / 1.5 / 0.2 req/s steps of 5 min (80 % short-out, 20 %
  long-out requests, 64 prompt tokens, seeded Poisson arrivals).
* ``cpu-zero``: the CPU config on two replicas, 3 req/s for 120 s then no traffic until a last
  request at 720 s: when does the deployment reach its minimum?

Metrics computed here from the run's decisions and timeline, so that both code versions are
measured the same way: ``decisions_changed`` (plan changes), ``decisions_replicas_changed``
(changes of the replica set), ``transitions`` / ``transitions_superseded`` (the switcher's
records), ``targets_reached`` / ``targets_never_reached`` and ``time_to_target_s`` (first timeline
sample, every ``sample_interval_s`` = 2 s, at which the ready replicas per variant match a replica-set
decision, before the next one), ``aborted`` requests, SLO attainment. ``reported`` holds the
code's own ``switches`` / ``reconfig_s`` summary. ``--variant off`` runs with
``control.hysteresis.enabled: false`` (only where the config has that field);
``--scale-down-window S`` overrides ``control.hysteresis.scale_down_window_s``.

    PYTHONPATH=$PWD .venv/bin/python bench/churn.py --label after
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("a100-azure", "a100-70b", "a100-steps", "cpu-steps", "cpu-zero")


def _cpu_trace(phases: list[tuple[float, float]], seed: int, tail_s: float | None = None) -> Any:
    """Poisson arrivals per (duration_s, rate_rps) phase; 80 % (64, 12) and 20 % (64, 48) tokens."""
    from oserve.workload.trace import Trace

    rng = np.random.default_rng(seed)
    t, arr = 0.0, []
    for dur, rate in phases:
        if rate > 0:
            n = rng.poisson(rate * dur)
            arr.extend(sorted(t + rng.uniform(0, dur, n)))
        t += dur
    if tail_s is not None:
        arr.append(tail_s)
    arr_np = np.asarray(arr, dtype=float)
    long_out = rng.uniform(size=arr_np.size) < 0.2
    return Trace(arr_np, np.full(arr_np.size, 64, dtype=np.int64), np.where(long_out, 48, 12).astype(np.int64),
                 name="cpu-steps")


def _a100_steps(cfg: Any) -> Any:
    from oserve.compose.simulation import load_traces
    from oserve.workload.trace import Trace

    tr = load_traces([str(cfg.resolve(p)) for p in cfg.trace.paths], scale=10.0, seed=0)
    a = np.asarray(tr.arrival_s)
    keep_p = np.where(a < 1200, 1 / 6, np.where(a < 2400, 1.0, 1 / 12))
    keep = np.random.default_rng(1).uniform(size=a.size) < keep_p
    return Trace(a[keep], np.asarray(tr.input_tokens)[keep], np.asarray(tr.output_tokens)[keep], name="a100-steps")


def _setup(name: str, variant: str, window_s: float | None = None) -> tuple[Any, Any]:
    from oserve.compose.simulation import load_traces
    from oserve.sim.config import load_config
    from oserve.types import ReplicaPlacement

    cpu = name.startswith("cpu")
    cfg = load_config(ROOT / "examples" / ("sim-cpu-smollm2.yaml" if cpu else "sim-4x8-a100.yaml"))
    update: dict[str, Any] = {"sample_interval_s": 2.0}
    if name == "a100-70b":
        update["model"] = "llama-2-70b"
    if variant == "off":
        if "hysteresis" not in type(cfg.control).model_fields:
            raise SystemExit("--variant off needs control.hysteresis (this code has no such field)")
        ctl = cfg.control.model_copy(update={"hysteresis": cfg.control.hysteresis.model_copy(update={"enabled": False})})
        update["control"] = ctl
    if window_s is not None:
        ctl = update.get("control", cfg.control)
        update["control"] = ctl.model_copy(update={"hysteresis": ctl.hysteresis.model_copy(
            update={"scale_down_window_s": window_s})})
    if cpu:
        v = "smollm2-135m-fp32-1c-s32"
        update["deployment"] = [ReplicaPlacement(variant=v, node="node0", device_ids=(i,)) for i in (0, 1)]
    cfg = cfg.model_copy(update=update)
    if name in ("a100-azure", "a100-70b"):
        trace = load_traces([str(cfg.resolve(p)) for p in cfg.trace.paths], scale=cfg.trace.scale, seed=cfg.trace.seed)
    elif name == "a100-steps":
        trace = _a100_steps(cfg)
    elif name == "cpu-steps":
        trace = _cpu_trace([(300, 1.0), (300, 3.0), (300, 1.5), (300, 0.2)], seed=3)
    else:
        trace = _cpu_trace([(120, 3.0)], seed=4, tail_s=720.0)
    return cfg, trace


def _measure(res: Any, summary: dict[str, Any], interval_s: float) -> dict[str, Any]:
    decisions = res.decisions
    changes = [d for d in decisions if d["replicas_changed"]]
    times, never = [], 0
    for i, d in enumerate(changes):
        want = Counter(r["variant"] for r in d["plan"]["replicas"])
        until = changes[i + 1]["time_s"] if i + 1 < len(changes) else float("inf")
        hit = next((s["time_s"] for s in res.timeline if d["time_s"] <= s["time_s"] < until
                    and Counter({k: v for k, v in s["replicas"].items() if v}) == want), None)
        if hit is None:
            never += 1
        else:
            times.append(hit - d["time_s"])
    ready = [sum(s["replicas"].values()) for s in res.timeline]
    out: dict[str, Any] = {
        "requests": len(res.requests), "decisions": len(decisions),
        "decisions_changed": sum(d["changed"] for d in decisions), "decisions_replicas_changed": len(changes),
        "transitions": len(res.transitions),
        "transitions_superseded": sum(t["status"] == "superseded" for t in res.transitions),
        "targets_reached": len(times), "targets_never_reached": never,
        "time_to_target_s": {"mean": float(np.mean(times)) if times else None,
                             "p50": float(np.median(times)) if times else None,
                             "max": float(np.max(times)) if times else None},
        "aborted": summary["aborted"], "refused": summary["refused"], "slo_attainment": summary["slo_attainment"],
        "goodput_avg_rps": summary["goodput_avg_rps"], "min_ready_replicas": min(ready) if ready else None,
        "reported": {k: v for k, v in summary.items() if k.startswith(("switches", "reconfig", "transitions"))},
        "sim_wall_s": res.wall_s,
    }
    return out


def _zero_demand(res: Any, load_end_s: float, interval_s: float) -> dict[str, Any]:
    """When the ready replicas first reach their minimum after the load ends (cpu-zero)."""
    after = [s for s in res.timeline if s["time_s"] >= load_end_s]
    counts = [sum(s["replicas"].values()) for s in after]
    if not counts:
        return {}
    low = min(counts)
    first = next(s["time_s"] for s, c in zip(after, counts, strict=True) if c == low)
    return {"load_end_s": load_end_s, "ready_replicas_at_load_end": counts[0], "min_ready_replicas_after": low,
            "reached_min_after_s": first - load_end_s,
            "reached_min_after_intervals": (first - load_end_s) / interval_s}


def run(name: str, variant: str, window_s: float | None = None) -> dict[str, Any]:
    from oserve.compose.simulation import load_table, run_policy
    from oserve.sim.policies import parse_policy

    cfg, trace = _setup(name, variant, window_s)
    table = load_table(cfg)
    t0 = time.perf_counter()
    pr = run_policy(parse_policy("oserve"), trace, table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg)
    out = _measure(pr.result, pr.summary, cfg.control.interval_s)
    out["control_interval_s"] = cfg.control.interval_s
    out["wall_s"] = time.perf_counter() - t0
    if name == "cpu-zero":
        out["zero_demand"] = _zero_demand(pr.result, 120.0, cfg.control.interval_s)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="name of this measurement, e.g. before / after")
    ap.add_argument("--variant", choices=("default", "off"), default="default",
                    help="off: control.hysteresis.enabled false")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--scale-down-window", type=float, default=None,
                    help="override control.hysteresis.scale_down_window_s, s (entry key gets /window-S)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/churn.json"))
    args = ap.parse_args()
    path = Path(args.out)
    doc = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path.cwd()).stdout.strip()
    for name in args.scenarios.split(","):
        key = f"{name}/{args.label}" + ("" if args.variant == "default" else f"/hysteresis-{args.variant}")
        if args.scale_down_window is not None:
            key += f"/window-{args.scale_down_window:g}"
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        entry = run(name, args.variant, args.scale_down_window)
        entry.update({"commit": commit, "machine": f"{platform.processor() or platform.machine()}, "
                      f"{__import__('os').cpu_count()} cores", "loadavg_1_5_15_before": load_before,
                      "loadavg_1_5_15_after": Path("/proc/loadavg").read_text().split()[:3]})
        doc["runs"][key] = entry
        print(key, json.dumps({k: entry[k] for k in ("decisions_changed", "decisions_replicas_changed",
                                                     "transitions_superseded", "targets_reached",
                                                     "targets_never_reached", "time_to_target_s", "aborted")}),
              flush=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    doc["command"] = "PYTHONPATH=$PWD .venv/bin/python bench/churn.py --label LABEL [--variant off]"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
