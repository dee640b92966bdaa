"""Routing splits in the sim-scored guard: capacity under SLO with ``sim_split_fractions`` on, beside fixed split plans.

Without split fractions the guard (:class:`oserve.sim.scored_planner.SimScoredPlanner`) scores two-variant mixes
with the planner's routing, which sends a class wholly where the table serves it best. On Llama-2-70B conv a mix
whose minority replicas take only *part* of the long prompts carried more than any plan it scored. This bench

1. bisects fixed *sink* plans on the study's trace (``--fixed``: ``A:n,B:m`` replicas placed node by node,
   B first; the ``--sink-classes`` sent to B with each fraction of ``--fractions``, the rest, and every other
   class, to A; oserve's router within a variant), and
2. re-bisects the study's ``oserve:P`` and ``static-mix`` rows with ``sim_split_fractions`` set to
   ``--fractions`` (from the study's capacity, same trace, seed, clipping and ``rel_tol``),

and writes them beside the study's rows (``bench/results/capacity.json``); with ``--apply`` the re-bisected
rows replace the study's in ``--results`` (the study then records ``sim_split_fractions``, and its oracle,
ratios and summary are restated); with ``--paired`` each row is simulated once at the study's capacity for it
instead (does the guard with splits still meet the target there?).

    .venv/bin/python bench/split_routing.py --only llama-2-70b/conv --fixed llama-2-70b-int8-tp2:14,llama-2-70b-int8-tp4:1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _fractions(text: str) -> list[float]:
    out = [float(x) for x in text.split(",") if x.strip()]
    if not out or not all(0 < f < 1 for f in out):
        raise argparse.ArgumentTypeError(f"fractions must be numbers in (0, 1), got {text!r}")
    return out


def _fixed(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        v, _, n = part.rpartition(":")
        if not v or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"--fixed wants VARIANT:N,VARIANT:M, got {text!r}")
        out.append((v, int(n)))
    if len(out) != 2:
        raise argparse.ArgumentTypeError("--fixed wants exactly two variants (majority first)")
    return out


def sink_plan(cluster: Any, majority: tuple[str, int], minority: tuple[str, int], devices: dict[str, int],
              classes: list[str], sink: set[str], fraction: float) -> Any:
    """Replicas of ``minority`` placed first, node by node, then ``majority``; ``sink`` classes send ``fraction``
    to the minority variant, everything else goes to the majority.

    Raises:
        ValueError: the replicas do not fit the cluster.
    """
    from oserve.types import Plan, ReplicaPlacement

    want = [minority, majority]
    reps = []
    for node in cluster.nodes:
        pos = 0
        for i, (v, n) in enumerate(want):
            d = devices[v]
            while n > 0 and pos + d <= node.devices:
                reps.append(ReplicaPlacement(variant=v, node=node.name, device_ids=tuple(range(pos, pos + d))))
                pos, n = pos + d, n - 1
            want[i] = (v, n)
    if any(n for _, n in want):
        raise ValueError("the fixed plan does not fit the cluster")
    a, b = majority[0], minority[0]
    routing = {c: ({b: fraction, a: 1.0 - fraction} if c in sink else {a: 1.0}) for c in classes}
    return Plan(replicas=reps, routing=routing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--only", required=True, help="one study, model/trace")
    ap.add_argument("--fractions", type=_fractions, default=[0.4, 0.6, 0.8])
    ap.add_argument("--fixed", type=_fixed, default=None, help="MAJORITY:N,MINORITY:M fixed sink plans to bisect")
    ap.add_argument("--sink-classes", default="long-in/short-out", help="classes the minority takes part of")
    ap.add_argument("--policies", default="oserve:milp,static-mix", help="study rows to re-bisect ('' for none)")
    ap.add_argument("--rel-tol", type=float, default=None, help="default: the study's")
    ap.add_argument("--out", default=str(ROOT / "bench/results/split_routing.json"))
    ap.add_argument("--paired", action="store_true",
                    help="instead of re-bisecting, simulate each --policies row once at the study's capacity for it with "
                         "the splits (a paired probe: does it still meet the target there?)")
    ap.add_argument("--apply", action="store_true",
                    help="also write the re-bisected rows into --results: their capacities, probes and latencies at the "
                         "study's common load, the study's sim_split_fractions, then its oracle, ratios and summary "
                         "restated (its window oracle, if any, is then stale: rerun bench/window_oracle.py)")
    args = ap.parse_args(argv)
    if args.rel_tol is not None and not 0 < args.rel_tol < 1:
        ap.error("--rel-tol must be in (0, 1)")
    if args.paired and args.apply:
        ap.error("--paired probes the study's capacities once; --apply needs a re-bisection")
    sys.path.insert(0, str(ROOT / "bench"))
    from capacity import load_results, study_inputs, write_result

    from oserve.compose.capacity import (
        bisect_scale,
        default_scaler,
        find_capacity,
        parse_capacity_policy,
        simulate_policy,
    )
    from oserve.compose.simulation import sim_options
    from oserve.sim.engine import Simulation
    from oserve.sim.metrics import summarise
    from oserve.workload.transforms import clip_tokens

    out, keys = load_results(ap, Path(args.results), args.only)
    key = keys[0]
    model, tname = key.split("/")
    study = out["studies"][key]
    table, cfg, trace = study_inputs(out, key)
    trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
    cluster, scheme = cfg.cluster.spec(), cfg.classes.to_scheme()
    seed, target = int(study["seed"]), float(study["target"])
    rel_tol = args.rel_tol if args.rel_tol is not None else float(study["rel_tol"])
    mine = {r["policy"]: r for r in out["rows"] if r["model"] == model and r["trace"] == tname}
    slo = cfg.slo or table.slo
    # every refusal before the first simulation
    if len(keys) != 1:
        ap.error(f"--only names one study, got {keys}")
    labels = [p.strip() for p in args.policies.split(",") if p.strip()]
    for label in labels:
        if label not in mine:
            ap.error(f"--policies: {label!r} is not a row of {key}")
    sink = {c.strip() for c in args.sink_classes.split(",") if c.strip()}
    if args.fixed:
        unknown = sink - set(scheme.names)
        if unknown:
            ap.error(f"--sink-classes: unknown classes {sorted(unknown)}; allowed {list(scheme.names)}")
        bad = [v for v, _ in args.fixed if v not in table.variants]
        if bad:
            ap.error(f"--fixed: unknown variants {bad}; allowed {sorted(table.variants)}")
        devices = {v: table.variants[v].devices_per_replica for v, _ in args.fixed}
        try:
            sink_plan(cluster, args.fixed[0], args.fixed[1], devices, list(scheme.names), sink, 0.5)
        except ValueError as exc:
            ap.error(f"--fixed: {exc}")
    result: dict[str, Any] = {"benchmark": "split_routing", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                              "results": args.results, "study": key, "fractions": args.fractions, "rel_tol": rel_tol,
                              "study_rows": {p: r["capacity_scale"] for p, r in mine.items()},
                              "fixed": [], "policies": []}
    t_all = time.perf_counter()
    if args.fixed:
        start = max((r["capacity_scale"] for p, r in mine.items() if p.startswith("static:")), default=1.0)
        for f in args.fractions:
            plan = sink_plan(cluster, args.fixed[0], args.fixed[1], devices, list(scheme.names), sink, f)

            def att(s: float, plan: Any = plan) -> float:
                res = Simulation(default_scaler(seed)(trace, s), table, cluster, plan, routing="plan", scheme=scheme,
                                 options=sim_options(cfg), policy="fixed").run()
                return float(summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)["slo_attainment"])

            t0 = time.perf_counter()
            r = bisect_scale(att, target=target, start=start, rel_tol=rel_tol)
            row = {"plan": {v: n for v, n in args.fixed}, "sink_classes": sorted(sink), "fraction": f,
                   "capacity_scale": r.scale, "probes": [list(p) for p in r.probes],
                   "wall_s": time.perf_counter() - t0}
            result["fixed"].append(row)
            print(f"fixed {row['plan']} {f:g} of {sorted(sink)} to the minority: {r.scale:.4g}", flush=True)
            write_result(args.out, result, t_all)
    split_cfg = cfg.model_copy(update={"sim_split_fractions": list(args.fractions)})
    for label in labels:
        t0 = time.perf_counter()
        if args.paired:
            scale = float(mine[label]["capacity_scale"])
            summary, _ = simulate_policy(parse_capacity_policy(label), default_scaler(seed)(trace, scale), table,
                                         cluster, scheme, split_cfg, seed=seed,
                                         measure_from_s=float(study.get("warmup_s", 0.0)))
            a = float(summary["slo_attainment"])
            result["policies"].append({"policy": label, "paired_at": scale, "attainment": a, "met": a >= target,
                                       "replicas": summary.get("replicas"), "wall_s": time.perf_counter() - t0})
            print(f"{label} with splits at the study's {scale:.4g}: attainment {a:.4f} "
                  f"({'met' if a >= target else 'missed'}; {summary.get('replicas')})", flush=True)
            write_result(args.out, result, t_all)
            continue
        res = find_capacity(label, trace, table, cluster, scheme, split_cfg, target=target, seed=seed,
                            start_scale=mine[label]["capacity_scale"], rel_tol=rel_tol,
                            measure_from_s=float(study.get("warmup_s", 0.0)))
        held = (res.probe_at(res.capacity_scale) or None)
        row = {"policy": label, "split_fractions": list(args.fractions), "capacity_scale": res.capacity_scale,
               "without_splits": mine[label]["capacity_scale"],
               "gain": res.capacity_scale / mine[label]["capacity_scale"] if mine[label]["capacity_scale"] > 0 else None,
               "replicas": held.summary.get("replicas") if held else None,
               "probes": [[p.scale, p.attainment] for p in res.probes], "wall_s": time.perf_counter() - t0}
        if args.apply:
            common = float(study["common_scale"])
            p = res.probe_at(common)
            summary = p.summary if p is not None and p.summary else simulate_policy(
                parse_capacity_policy(label), default_scaler(seed)(trace, common), table, cluster, scheme, split_cfg,
                seed=seed, measure_from_s=float(study.get("warmup_s", 0.0)))[0]
            mine[label].update(
                capacity_scale=res.capacity_scale, probes=row["probes"], wall_s=row["wall_s"], replicas=row["replicas"],
                at_common_load={"scale": common, **{k: summary.get(k) for k in (
                    "slo_attainment", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "goodput_avg_rps", "goodput_peak_rps",
                    "throughput_avg_rps")}}, sim_split_fractions=list(args.fractions))
        result["policies"].append(row)
        print(f"{label} with splits: {res.capacity_scale:.4g} (without: {row['without_splits']:.4g}; "
              f"{len(res.probes)} runs, {row['wall_s']:.0f} s)", flush=True)
        write_result(args.out, result, t_all)
    write_result(args.out, result, t_all)
    if args.apply and labels:
        from capacity import _summary

        from oserve.compose.capacity import finite_json
        from oserve.compose.capacity_refine import restate_study

        study["sim_split_fractions"] = list(args.fractions)
        study.setdefault("split_commands", []).append(result["command"])
        part = {**study, "rows": [r for r in out["rows"] if (r["model"], r["trace"]) == (model, tname)]}
        restate_study(part)  # the rows are out["rows"]' own dicts: restated in place
        part.pop("rows")
        out["studies"][key] = part
        out["summary"] = _summary(out["rows"], out["planners"])
        out.setdefault("commands", [out.get("command")]).append(result["command"])
        Path(args.results).write_text(json.dumps(finite_json(out), indent=1))
        print(f"{key}: rows written to {args.results}; oracle {part['oracle']['scale']:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
