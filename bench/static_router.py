"""The best fixed deployments behind oserve's router: how much of oserve's lead over them is the router.

A capacity study (``bench/capacity.py``) measures each ``static:V`` deployment as plain vLLM replicas behind
a round-robin balancer (``routing.static: round-robin``), while oserve and static-mix route with oserve's
router (``routing.replica_load``, pending prefill tokens first by default). This bench re-bisects the
capacity of the best single-variant deployments of each study with ``routing.static: plan`` (the same
replicas behind oserve's router, with the study's replica load), from the same trace, seed, clipping and
``rel_tol``, and writes them next to the round-robin capacity and oserve's.

    .venv/bin/python bench/static_router.py --only llama-2-70b/conv --top 2
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
    ap.add_argument("--only", default=None, help="comma-separated studies (model/trace); default every one")
    ap.add_argument("--top", type=int, default=2, help="the best N single-variant deployments of each study (>= 1)")
    ap.add_argument("--rel-tol", type=float, default=None, help="final bracket hi / lo - 1 (default: the study's)")
    ap.add_argument("--paired", action="store_true",
                    help="simulate oserve once at the re-bisected capacity where it reports less (a paired probe)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/static_router.json"))
    args = ap.parse_args(argv)
    if args.top < 1:
        ap.error("--top must be >= 1")
    if args.rel_tol is not None and not 0 < args.rel_tol < 1:
        ap.error("--rel-tol must be in (0, 1)")
    sys.path.insert(0, str(ROOT / "bench"))
    from capacity import load_results, study_inputs

    from oserve.compose.capacity import default_scaler, find_capacity, parse_capacity_policy, simulate_policy
    from oserve.workload.transforms import clip_tokens

    out, keys = load_results(ap, Path(args.results), args.only)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for key in keys:
        model, tname = key.split("/")
        study = out["studies"][key]
        table, cfg, trace = study_inputs(out, key)
        cfg = cfg.model_copy(update={"routing": cfg.routing.model_copy(update={"static": "plan"})})
        trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
        mine = {r["policy"]: r for r in out["rows"] if r["model"] == model and r["trace"] == tname}
        singles = sorted((r for p, r in mine.items() if p.startswith("static:")), key=lambda r: -r["capacity_scale"])
        oserve = {p: r["capacity_scale"] for p, r in mine.items() if p.startswith("oserve")}
        rel_tol = args.rel_tol if args.rel_tol is not None else float(study["rel_tol"])
        for r in singles[:args.top]:
            t0 = time.perf_counter()
            res = find_capacity(r["policy"], trace, table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg,
                                target=float(study["target"]), seed=int(study["seed"]),
                                start_scale=r["capacity_scale"], rel_tol=rel_tol,
                                measure_from_s=float(study.get("warmup_s", 0.0)))
            rr = r["capacity_scale"]
            paired = {}
            for label, scale in oserve.items():
                if scale < res.capacity_scale and args.paired:
                    # the capacity study's paired probe (oserve.compose.paired_probe): the lower one at the higher
                    # one's scale, so two bisections that stopped at different crossings are compared at one scale
                    summary, _ = simulate_policy(parse_capacity_policy(label), default_scaler(int(study["seed"]))(
                        trace, res.capacity_scale), table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg,
                        seed=int(study["seed"]), measure_from_s=float(study.get("warmup_s", 0.0)))
                    a = float(summary["slo_attainment"])
                    paired[label] = {"scale": res.capacity_scale, "attainment": a, "met": a >= float(study["target"])}
            row = {"study": key, "policy": r["policy"], "round_robin_scale": rr, "oserve_router_scale": res.capacity_scale,
                   "router_gain": res.capacity_scale / rr if rr > 0 else None, "replica_load": cfg.routing.replica_load,
                   "oserve": oserve, "oserve_vs_this": {p: (s / res.capacity_scale if res.capacity_scale > 0 else None)
                                                        for p, s in oserve.items()},
                   "oserve_paired_probe": paired,
                   "probes": [[p.scale, p.attainment] for p in res.probes], "rel_tol": rel_tol,
                   "wall_s": time.perf_counter() - t0}
            rows.append(row)
            print(f"{key} {r['policy']}: round-robin {rr:.4g}, oserve's router {res.capacity_scale:.4g} "
                  f"({len(res.probes)} runs, {row['wall_s']:.0f} s)", flush=True)
            _write(args, rows, time.perf_counter() - t_all)  # after every row: a long study may be cut short
    _write(args, rows, time.perf_counter() - t_all)
    return 0


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], wall_s: float) -> None:
    result = {"benchmark": "static_router", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "results": args.results, "rows": rows, "wall_s": wall_s}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
