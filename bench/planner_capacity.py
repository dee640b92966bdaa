"""Capacity under SLO of oserve with other planners, on finished capacity studies.

``bench/capacity.py --planners milp,greedy,flow`` re-runs every policy of a study (plain vLLM, every static
deployment, static-mix, the oracle) for each new planner row. This bench bisects only ``oserve:P`` for each
``--planners`` P on the studies ``--only`` names, with the study's own trace, seed, clipping, settings and
``rel_tol``, starting from the study's headline oserve capacity, and writes the rows to ``--out``; with
``--apply`` the rows are added to ``--results`` (replacing a row of the same policy), the study restated
(:func:`oserve.compose.capacity_refine.restate_study`: ratios to plain vLLM, best static and the oracle) and the
file's ``planners`` and ``summary.by_planner`` extended. The headline planner stays the file's first (and is
refused in ``--planners``). Unlike the rows ``bench/capacity.py`` writes, these get no paired probe
(:mod:`oserve.compose.paired_probe`: the lower of oserve and the best fixed deployment simulated once at the
other's capacity, a tie when it meets the target there), so such a row can read up to ``rel_tol`` below the
best fixed deployment where the headline row, probed, ties it.

    .venv/bin/python bench/planner_capacity.py --only llama-3-8b/merged --planners greedy,flow --apply
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--only", required=True, help="comma-separated studies, model/trace")
    ap.add_argument("--planners", default="greedy,flow", help="comma-separated planner names (oserve:P rows)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/planner_capacity.json"))
    ap.add_argument("--apply", action="store_true", help="also add the rows to --results and restate its summary")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from capacity import _summary, load_results, study_inputs, write_result

    from oserve.compose.capacity import find_capacity, finite_json, parse_capacity_policy, simulate_policy
    from oserve.compose.capacity_refine import restate_study
    from oserve.errors import ConfigError
    from oserve.policies import available_planners
    from oserve.workload.transforms import clip_tokens

    only = list(dict.fromkeys(k.strip() for k in args.only.split(",") if k.strip()))
    if not only:  # load_results reads an empty --only as every study (hours of bisections)
        ap.error("--only names no study")
    if Path(args.out).resolve() == Path(args.results).resolve():
        ap.error("--out must differ from --results (--out gets this bench's rows, --results the whole study file)")
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"--out {args.out}: cannot create its folder ({exc})")
    out, keys = load_results(ap, Path(args.results), ",".join(only))
    planners = list(dict.fromkeys(p.strip() for p in args.planners.split(",") if p.strip()))
    allowed = available_planners()
    bad = [p for p in planners if p not in allowed]
    if not planners:
        ap.error("--planners names no planner")
    if bad:
        ap.error(f"--planners: unknown planners {bad}; allowed: {', '.join(allowed)}")
    if out["planners"][0] in planners:
        ap.error(f"--planners: {out['planners'][0]!r} is the file's headline planner, bisected by bench/capacity.py "
                 "with its paired probe; name the others")
    headline = f"oserve:{out['planners'][0]}"
    for key in keys:
        mine = {r["policy"]: r for r in out["rows"] if f"{r['model']}/{r['trace']}" == key}
        if headline not in mine:
            ap.error(f"{key} has no {headline} row to start the bisection from")
        missing = [k for k in ("seed", "target", "rel_tol", "common_scale") if k not in out["studies"][key]]
        if missing:
            ap.error(f"{key}: the study lacks {missing} (not written by bench/capacity.py?)")
    result: dict[str, Any] = {"benchmark": "planner_capacity", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                              "results": args.results, "planners": planners, "rows": []}
    t_all = time.perf_counter()
    for key in keys:
        model, tname = key.split("/")
        study = out["studies"][key]
        table, cfg, trace = study_inputs(out, key)
        trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
        cluster, scheme = cfg.cluster.spec(), cfg.classes.to_scheme()
        seed, target, rel_tol = int(study["seed"]), float(study["target"]), float(study["rel_tol"])
        warmup = float(study.get("warmup_s", 0.0))
        mine = {r["policy"]: r for r in out["rows"] if (r["model"], r["trace"]) == (model, tname)}
        for planner in planners:
            label = f"oserve:{planner}"
            t0 = time.perf_counter()
            try:
                res = find_capacity(label, trace, table, cluster, scheme, cfg, target=target, seed=seed,
                                    # a headline that held at no scale has capacity 0: start at the search's floor
                                    start_scale=min(max(float(mine[headline]["capacity_scale"]), 1 / 64), 256.0),
                                    rel_tol=rel_tol,
                                    measure_from_s=warmup)
            except ConfigError as exc:
                ap.error(f"{key} {label}: {exc}")
            held = res.probe_at(res.capacity_scale)
            common = float(study["common_scale"])
            p = res.probe_at(common)
            summary = p.summary if p is not None and p.summary else simulate_policy(
                parse_capacity_policy(label), _scaled(seed, trace, common), table, cluster, scheme, cfg, seed=seed,
                measure_from_s=warmup)[0]
            row = {"model": model, "trace": tname, "policy": label, "variant": None,
                   "capacity_scale": res.capacity_scale, "probes": [[q.scale, q.attainment] for q in res.probes],
                   "capped": res.capped, "floored": res.floored, "wall_s": time.perf_counter() - t0,
                   "replicas": held.summary.get("replicas") if held and held.summary else None,
                   "at_common_load": {"scale": common, **{k: summary.get(k) for k in (
                       "slo_attainment", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "goodput_avg_rps",
                       "goodput_peak_rps", "throughput_avg_rps")}}}
            result["rows"].append(row)
            print(f"{key} {label}: {res.capacity_scale:.4g} ({headline} {mine[headline]['capacity_scale']:.4g}; "
                  f"{len(res.probes)} runs, {row['wall_s']:.0f} s)", flush=True)
            write_result(args.out, result, t_all)
            if args.apply:
                out["rows"] = [r for r in out["rows"]
                               if not ((r["model"], r["trace"], r["policy"]) == (model, tname, label))]
                out["rows"].append({**row, "paired_probe": None, "vs_plain": None, "vs_best_static": None,
                                    "oracle_fraction": None, "simulated_oracle_fraction": None})
        if args.apply:
            part = {**study, "rows": [r for r in out["rows"] if (r["model"], r["trace"]) == (model, tname)]}
            restate_study(part)  # the rows are out["rows"]' own dicts: restated in place
            part.pop("rows")
            out["studies"][key] = part
            # written after each study, so a later study's failure loses none of the bisections before it
            out["planners"] = [*out["planners"], *(p for p in planners if p not in out["planners"])]
            out["summary"] = _summary(out["rows"], out["planners"])
            Path(args.results).write_text(json.dumps(finite_json(out), indent=1))
    if args.apply:
        out.setdefault("commands", [out.get("command")]).append(result["command"])
        Path(args.results).write_text(json.dumps(finite_json(out), indent=1))
        print(json.dumps(out["summary"]["by_planner"], indent=1), flush=True)
    write_result(args.out, result, t_all)
    return 0


def _scaled(seed: int, trace: Any, scale: float) -> Any:
    from oserve.compose.capacity import default_scaler

    return default_scaler(seed)(trace, scale)


if __name__ == "__main__":
    raise SystemExit(main())
