"""The router's replica load, side by side: SLO attainment of fixed plans by routing, in one run per trace.

For each study (model / trace) of a capacity result file (``bench/capacity.py``'s JSON: its table, config and
trace) and each rate scale, simulates each single-variant deployment named three ways and writes SLO
attainment, TTFT p99 and TPOT p99 to ``--out``:

* ``round-robin`` (the ``static:V`` baselines' routing);
* ``requests``: the oserve router, least outstanding requests within the variant (``replica_load: requests``);
* ``prefill-tokens``: the oserve router, least pending prefill tokens first (``replica_load`` default).

    PYTHONPATH=$PWD .venv/bin/python bench/replica_load.py --studies llama-2-70b/conv:6.2,6.37 \\
        --variants llama-2-70b-int8-tp2,llama-2-70b-int8-tp4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

from capacity import ROOT, study_inputs

ROUTINGS = (("round-robin", "round-robin", "requests"), ("requests", "plan", "requests"),
            ("prefill-tokens", "plan", "prefill-tokens"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--studies", required=True, help="model/trace:SCALE,SCALE[;model/trace:SCALE...]")
    ap.add_argument("--variants", required=True, help="comma-separated variants (single-variant deployments)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/replica_load.json"))
    args = ap.parse_args()
    if not Path(args.results).exists():
        ap.error(f"--results {args.results} does not exist (run bench/capacity.py first)")
    out = json.loads(Path(args.results).read_text())
    todo: list[tuple[str, list[float]]] = []
    for part in args.studies.split(";"):
        key, _, scales = part.partition(":")
        if key not in out["studies"]:
            ap.error(f"--studies names {key!r}, not in --results; allowed: {', '.join(out['studies'])}")
        try:
            values = [float(s) for s in scales.split(",")]
        except ValueError:
            ap.error(f"--studies {part!r}: scales must be numbers")
        if not values or not all(math.isfinite(s) and s > 0 for s in values):
            ap.error(f"--studies {part!r}: scales must be finite numbers > 0")
        todo.append((key, values))
    from oserve.profiles.table import ProfileTable

    known = set(ProfileTable.load(str(ROOT / out["table"]) if not Path(out["table"]).is_absolute()
                                  else out["table"]).variants)
    unknown = [v for v in args.variants.split(",") if v not in known]
    if unknown:  # else skipped below as another model's, and an empty result would overwrite --out
        ap.error(f"--variants names no variant of the studies' tables: {unknown}")

    from dataclasses import replace

    from oserve.compose.capacity import default_scaler
    from oserve.compose.simulation import sim_options
    from oserve.errors import ConfigError
    from oserve.sim.engine import Simulation
    from oserve.sim.metrics import summarise
    from oserve.sim.policies import static_plan
    from oserve.workload.transforms import clip_tokens

    rows = []
    t0 = time.perf_counter()
    for key, scales in todo:
        table, cfg, trace = study_inputs(out, key)
        trace = clip_tokens(trace, max_total=max(v.max_model_len for v in table.variants.values()))
        scheme, cluster, slo = cfg.classes.to_scheme(), cfg.cluster.spec(), cfg.slo or table.slo
        for v in args.variants.split(","):
            if v not in table.variants:
                continue  # another model's variant
            try:
                plan = static_plan(cluster, table, v)
            except ConfigError as exc:
                ap.error(f"--variants {v!r}: {exc}")
            for s in scales:
                scaled = default_scaler(int(out["studies"][key].get("seed", 0)))(trace, s)
                row = {"study": key, "variant": v, "replicas": plan.replica_counts(), "scale": s,
                       "requests": len(scaled)}
                for label, routing, load in ROUTINGS:
                    res = Simulation(scaled, table, cluster, plan, routing=routing, scheme=scheme,
                                     options=replace(sim_options(cfg), replica_load=load), policy=label).run()
                    sm = summarise(res, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
                    row[label] = {k: sm[k] for k in ("slo_attainment", "ttft_p99_s", "tpot_p99_s")}
                rows.append(row)
                print(json.dumps({k: row[k] if k not in dict.fromkeys(r[0] for r in ROUTINGS) else
                                  round(row[k]["slo_attainment"], 4) for k in row}), flush=True)
    result = {"benchmark": "replica_load: SLO attainment of fixed plans by the router's replica load",
              "results": args.results, "slo": (cfg.slo or table.slo).model_dump(), "rows": rows,
              "wall_s": time.perf_counter() - t0, "load_average_1_5_15": list(os.getloadavg()),
              "machine": platform.processor() or platform.machine(),
              "definitions": {"round-robin": "static:V's routing", "requests": "oserve router, least outstanding "
                              "requests within the variant", "prefill-tokens": "oserve router, least pending prefill "
                              "tokens first (oserve.policies.routing)"}}
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
