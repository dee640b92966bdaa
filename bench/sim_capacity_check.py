"""Check the profile table's per-class capacities against the simulator (``oserve.sim.capacity_check``).

For each listed variant and each class it serves, one replica is simulated for 600 s under Poisson
arrivals of the class's expected request at 100% and at 70% of the table's ``capacity_rps``;
writes SLO attainment and p99 TTFT/TPOT to ``bench/results/sim_capacity_check.json``.

    .venv/bin/python bench/sim_capacity_check.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = "llama-3-8b-int8-tp1,llama-3-8b-fp16-tp1,llama-2-70b-fp16-tp4,llama-2-70b-int8-tp4"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "examples/profiles/a100-80gb-mixed.json"))
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--fractions", default="1.0,0.7")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/sim_capacity_check.json"))
    args = ap.parse_args()

    from oserve.profiles.table import ProfileTable
    from oserve.sim.capacity_check import check_capacity

    table = ProfileTable.load(args.table)
    rows = []
    for v in args.variants.split(","):
        for c, p in table.variants[v].classes.items():
            if p.capacity_rps <= 0:
                continue
            for f in (float(x) for x in args.fractions.split(",")):
                row = {"fraction": f, **check_capacity(table, v, c, fraction=f, duration_s=args.duration)}
                rows.append(row)
                print(json.dumps(row))
    tp = Path(args.table).resolve()
    out = {"table": str(tp.relative_to(ROOT)) if ROOT in tp.parents else args.table, "slo": table.slo.model_dump(), "duration_s": args.duration, "checks": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
