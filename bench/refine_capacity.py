"""Refine a finished capacity result (``bench/capacity.py``'s JSON) to a tighter bisection bracket, in place.

For every study (model / trace) of ``--results`` and every policy row named (default: every policy but the
oracle rows), continues the policy's bisection from the bracket its probes left (the largest scale that met the
target, the smallest above it that missed) until ``hi / lo <= 1 + --rel-tol``, with the same trace, table,
config, seed and warm-up as the study (:func:`oserve.compose.capacity_refine.refine_capacity`: the same probes a
search run at that ``--rel-tol`` from the start would make). Then recomputes a ``table-calibrated`` LP bound from
the refined ``static:V`` scales (:func:`oserve.compose.capacity_refine.recalibrate_lp_bound`) and restates the
oracle, every row's ratios and the summary (:func:`oserve.compose.capacity_refine.restate_study`). The window
oracle is not refined: it keeps its own bisection's ``rel_tol`` (``oracle.window_oracle.rel_tol``; rerun
``bench/window_oracle.py --rel-tol``). Rows' ``at_common_load`` stay those of the common
scale the study ran at.

    PYTHONPATH=$PWD .venv/bin/python bench/refine_capacity.py --results bench/results/capacity.json \\
        --only llama-2-70b/conv --rel-tol 0.01
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from capacity import ROOT, _summary, load_results, study_inputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--only", default=None, help="comma-separated studies (model/trace) to do; default every one")
    ap.add_argument("--policies", default=None,
                    help="comma-separated policy rows to refine; default every row but oracle and window-oracle")
    ap.add_argument("--rel-tol", type=float, default=0.01, help="final bracket hi / lo - 1 (> 0)")
    args = ap.parse_args()
    if not (math.isfinite(args.rel_tol) and args.rel_tol > 0):
        ap.error(f"--rel-tol must be a finite number > 0, got {args.rel_tol:g}")
    path = Path(args.results)
    out, keys = load_results(ap, path, args.only)

    from oserve.cli.errors import format_cli_error
    from oserve.compose.capacity import finite_json
    from oserve.compose.capacity_refine import recalibrate_lp_bound, refine_capacity, restate_study
    from oserve.errors import ConfigError
    from oserve.workload.transforms import clip_tokens

    out.setdefault("commands", [out.get("command")]).append(" ".join(shlex.quote(a) for a in sys.argv))
    for key in keys:
        model, tname = key.split("/")
        study = out["studies"][key]
        table, cfg, trace = study_inputs(out, key)
        trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
        rows = [r for r in out["rows"] if (r["model"], r["trace"]) == (model, tname)]
        names = args.policies.split(",") if args.policies else [
            r["policy"] for r in rows if r["policy"] not in ("oracle", "window-oracle")]
        missing = [n for n in names if n not in {r["policy"] for r in rows}]
        if missing:
            ap.error(f"{key}: --policies names rows it does not have {missing}")
        t0 = time.perf_counter()
        for r in rows:
            if r["policy"] not in names:
                continue
            try:
                res = refine_capacity(r["policy"], r["probes"], trace, table, cfg.cluster.spec(),
                                      cfg.classes.to_scheme(), cfg, target=float(study["target"]),
                                      rel_tol=args.rel_tol, seed=int(study.get("seed", 0)),
                                      measure_from_s=float(study.get("warmup_s", 0.0)))
            except ConfigError as exc:  # names the field and its allowed values
                ap.error(f"{key} {r['policy']}: " + format_cli_error(exc).removeprefix("oserve: error: "))
            if res is None:
                print(f"{key}: {r['policy']}: bracket already within {args.rel_tol:g} (or none): kept", flush=True)
                continue
            print(f"{key}: {r['policy']}: {r['capacity_scale']:.4g} -> {res.capacity_scale:.4g} "
                  f"({len(res.probes) - len(r['probes'])} more runs, {res.wall_s:.0f} s)", flush=True)
            last = next((p for p in res.probes if p.scale == res.capacity_scale and p.summary), None)
            r.update(capacity_scale=res.capacity_scale, probes=[[p.scale, p.attainment] for p in res.probes],
                     wall_s=float(r.get("wall_s", 0.0)) + res.wall_s, refined_rel_tol=args.rel_tol,
                     **({"replicas": last.summary.get("replicas")} if last else {}))
        part = {**study, "rows": [{k: v for k, v in r.items() if k not in ("model", "trace")} for r in rows]}
        lp_before = part["oracle"].get("window_bound_scale")
        if recalibrate_lp_bound(part, trace, table, cfg.cluster.spec(), cfg.classes.to_scheme()):
            print(f"{key}: LP bound recalibrated to the refined static scales: {lp_before} -> "
                  f"{part['oracle']['window_bound_scale']:.4g}", flush=True)
        restate_study(part)
        if part["summary"]["window_oracle_lead_in_s"] not in (None, "inf"):
            print(f"{key}: warning: the window oracle was bisected with a {part['summary']['window_oracle_lead_in_s']} s "
                  "lead-in (0: each window from an idle cluster, biased high); rerun bench/window_oracle.py", flush=True)
        out["rows"] = [r for r in out["rows"] if (r["model"], r["trace"]) != (model, tname)]
        out["rows"] += [{"model": model, "trace": tname, **r} for r in part.pop("rows")]
        part["wall_s"] = float(study["wall_s"]) + time.perf_counter() - t0
        part["refined_rel_tol"] = args.rel_tol
        out["studies"][key] = part
        out["summary"] = _summary(out["rows"], out["planners"])
        path.write_text(json.dumps(finite_json(out), indent=1))
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
