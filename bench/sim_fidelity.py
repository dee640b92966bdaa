"""Simulator fidelity: simulate the set-up of a real replay and compare throughput, TTFT p50/p99, mean TPOT.

Takes a real replay result (``oserve replay ... --out FILE``: per-request records, ``.jsonl`` or
``.json``) and a simulator config describing the same set-up (cluster, measured profile table,
classes, controller), rebuilds the requests the replay sent (same times, prompt lengths, and the
output lengths the real engines produced), simulates them under ``--policy`` and writes
``bench/results/sim_fidelity_run.json`` (``sim_fidelity.json`` holds the three-load check of
``bench/sim_fidelity_loads.py``): per metric ``real``, ``simulated``, ``relative_error``.
Target: every relative error under 15%.

    .venv/bin/python bench/sim_fidelity.py --real out/demo/replay_oserve.jsonl \\
        --config examples/sim-cpu-smollm2.yaml --policy oserve
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="real replay result with per-request records")
    ap.add_argument("--config", default=str(ROOT / "examples/sim-cpu-smollm2.yaml"))
    ap.add_argument("--policy", default="oserve", help="oserve | static:VARIANT | plain-vllm")
    ap.add_argument("--target", type=float, default=0.15, help="relative error target")
    ap.add_argument("--out", default=str(ROOT / "bench/results/sim_fidelity_run.json"))
    args = ap.parse_args()

    from oserve.compose.simulation import load_table, run_policy
    from oserve.sim.config import load_config
    from oserve.sim.fidelity import load_replay, replay_to_records, trace_from_replay
    from oserve.sim.metrics import compare_fidelity
    from oserve.sim.policies import parse_policy

    cfg = load_config(args.config)
    records, summary = load_replay(args.real)
    trace = trace_from_replay(records, name=Path(args.real).name)
    table = load_table(cfg)
    run = run_policy(parse_policy(args.policy), trace, table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg)
    cmp = compare_fidelity(replay_to_records(records), run.result.requests)
    meta_path = Path(args.real).with_name("results.json")
    real_meta = {}
    if meta_path.exists() and meta_path != Path(args.real):
        try:
            real_meta = json.loads(meta_path.read_text()).get("meta", {})
        except (OSError, json.JSONDecodeError):
            real_meta = {}
    errors = [v["relative_error"] for v in cmp.values() if v["relative_error"] is not None]
    out = {
        "command": "python bench/sim_fidelity.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "real": str(args.real), "real_file_mtime": Path(args.real).stat().st_mtime, "real_run_meta": real_meta,
        "config": str(args.config), "policy": args.policy, "table": cfg.table,
        "table_source": table.source, "requests": len(trace), "metrics": cmp,
        "target_relative_error": args.target,
        "max_relative_error": max(errors) if errors else None,
        "within_target": bool(errors) and max(errors) <= args.target,
        "real_summary": summary if isinstance(summary, dict) else {},
        "sim_summary": run.summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    for k, v in cmp.items():
        print(f"{k:16s} real {v['real']}  simulated {v['simulated']}  error {v['relative_error']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
