"""Side by side: capacity-study result files of ``bench/capacity.py`` (before / after a change).

Reads several ``bench/capacity.py`` JSON outputs, each under a label, and writes one JSON with every
run (``runs``: label -> the file's content) and ``side_by_side``: per (model/trace, policy), the
capacity scale and the ratios to plain vLLM and to the best static deployment of each run. The
runs must use the same traces, windows and tolerance to be comparable (each run's ``command`` is
kept).

    .venv/bin/python bench/capacity_compare.py before=A.json after=B.json --out bench/results/capacity_after.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=JSON", help="capacity.py outputs, each with a label")
    ap.add_argument("--out", required=True)
    ap.add_argument("--note", default="", help="free text recorded with the comparison (machine load, ...)")
    args = ap.parse_args()
    runs: dict[str, dict] = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            ap.error(f"expected LABEL=JSON, got {item!r}")
        runs[label] = json.loads(Path(path).read_text())
    side: dict[str, dict[str, dict[str, dict]]] = {}
    for label, run in runs.items():
        for r in run["rows"]:
            key = f"{r['model']}/{r['trace']}"
            side.setdefault(key, {}).setdefault(r["policy"], {})[label] = {
                "capacity_scale": r["capacity_scale"], "vs_plain": r["vs_plain"],
                "vs_best_static": r["vs_best_static"]}
    out = {"benchmark": "capacity under SLO, side by side (bench/capacity_compare.py)", "note": args.note,
           "load_average": os.getloadavg(), "labels": list(runs),
           "summary": {label: run.get("summary") for label, run in runs.items()},
           "side_by_side": side, "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=1))
    for key, pols in side.items():
        print(f"== {key}")
        for pol, per in pols.items():
            cells = "  ".join(f"{lab}: {v['capacity_scale']:.3g} ({v['vs_best_static'] if v['vs_best_static'] is None else round(v['vs_best_static'], 3)})"
                              for lab, v in per.items())
            print(f"  {pol:34s} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
