"""Add the simulated per-window oracle to a finished capacity result (``bench/capacity.py``'s JSON), in place.

For every study (model / trace) of ``--results``, bisects the oracle of :mod:`oserve.compose.window_oracle`
(per 60-s window, the best of the planner's plan for the window's true demand, static-mix's plan and every
single-variant static deployment that has capacity, each served from an idle cluster at the trace's start with
the requests before the window uncounted, ``--lead-in``: perfect knowledge, no switching cost) on the same trace, table, config and seed, adds a ``window-oracle`` row, raises the oracle to
it where it is higher, and recomputes the oracle fractions and the summary. The other rows are not re-run.

    PYTHONPATH=$PWD .venv/bin/python bench/window_oracle.py --results bench/results/capacity.json [--only llama-2-70b/merged]
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
    ap.add_argument("--window", type=float, default=60.0, help="oracle window, seconds (> 0)")
    ap.add_argument("--rel-tol", type=float, default=None,
                    help="final bracket of the oracle's bisection, relative (> 0; default the study's rel_tol)")
    ap.add_argument("--lead-in", type=float, default=None,
                    help="seconds of requests each candidate serves, uncounted, before each window (>= 0; default "
                         "inf: the whole trace before it; 0 = every window from an idle cluster)")
    args = ap.parse_args()
    if not (math.isfinite(args.window) and args.window > 0):
        ap.error(f"--window must be a finite number of seconds > 0, got {args.window:g}")
    lead_in = math.inf if args.lead_in is None else args.lead_in
    if args.rel_tol is not None and not (math.isfinite(args.rel_tol) and args.rel_tol > 0):
        ap.error(f"--rel-tol must be a finite number > 0, got {args.rel_tol:g}")
    if math.isnan(lead_in) or lead_in < 0:
        ap.error(f"--lead-in must be a number of seconds >= 0 (inf: the whole trace before each window), got {lead_in:g}")
    path = Path(args.results)
    out, keys = load_results(ap, path, args.only)

    from oserve.cli.errors import format_cli_error
    from oserve.compose.capacity import finite_json
    from oserve.compose.window_oracle import add_window_oracle
    from oserve.errors import ConfigError

    planners = out["planners"]
    out.setdefault("commands", [out.get("command")]).append(" ".join(shlex.quote(a) for a in sys.argv))
    for key in keys:
        model, tname = key.split("/")
        study = out["studies"][key]
        table, cfg, trace = study_inputs(out, key)
        rows = [r for r in out["rows"] if (r["model"], r["trace"]) == (model, tname)]
        part = {**study, "rows": [{k: v for k, v in r.items() if k not in ("model", "trace")} for r in rows]}
        t0 = time.perf_counter()
        try:
            add_window_oracle(part, trace, table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg,
                              window_s=args.window, seed=int(study.get("seed", 0)), lead_in_s=lead_in,
                              rel_tol=args.rel_tol,
                              log=lambda line, key=key: print(f"{key}: {line}", flush=True))
        except ConfigError as exc:  # names the field and its allowed values
            ap.error(f"{key}: " + format_cli_error(exc).removeprefix("oserve: error: "))
        out["rows"] = [r for r in out["rows"] if (r["model"], r["trace"]) != (model, tname)]
        out["rows"] += [{"model": model, "trace": tname, **r} for r in part.pop("rows")]
        part["wall_s"] = float(study["wall_s"]) + time.perf_counter() - t0
        out["studies"][key] = part
        out["summary"] = _summary(out["rows"], planners)
        out["definitions"]["window-oracle"] = (
            f"per {args.window:g}-s window, the best of: the planner's plan for the window's true mean demand, "
            "static-mix's plan, each single-variant static deployment with capacity; each candidate serves the "
            f"{'whole trace' if math.isinf(lead_in) else f'{lead_in:g} s'} before the window (uncounted: its own "
            "backlog; from an idle cluster) "
            "(perfect knowledge, no switching cost); oserve/compose/window_oracle.py. The oracle is never below it")
        path.write_text(json.dumps(finite_json(out), indent=1))
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
