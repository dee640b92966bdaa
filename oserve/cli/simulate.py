"""``oserve simulate CONFIG --trace T... --policy P --out DIR [--compare p1,p2] [--seed N] [--scale X]
[--duration S]``: replay traces on a modelled cluster under one or several policies."""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate", help="replay traces on a simulated cluster and compare deployment policies",
        description="Discrete-event simulation of a trace on a modelled cluster, driving oserve's controller, "
                    "planner, forecaster, router and switcher rules on simulated time.")
    p.add_argument("config", help="simulator YAML config (see docs/simulator.md)")
    p.add_argument("--trace", nargs="+", default=None, help="trace file(s), merged on one clock (default: config)")
    p.add_argument("--policy", default="oserve",
                   help="oserve | static:VARIANT | best-static | plain-vllm (default: oserve)")
    p.add_argument("--compare", default=None, help="comma-separated policies to run side by side (overrides --policy)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=None, help="seed of the rate scaling (default: config; the simulation itself is deterministic)")
    p.add_argument("--scale", type=float, default=None, help="arrival-rate scale factor (default: config)")
    p.add_argument("--duration", type=float, default=None, help="simulate only the first S seconds of the trace")
    p.add_argument("--best-static-top", type=int, default=0,
                   help="best-static: simulate only the k variants with the highest predicted capacity (0: all)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from oserve.compose import simulate
    from oserve.errors import OserveError
    from oserve.sim.report import comparison_table, write_outputs

    try:
        sim = simulate(args.config, args.compare.split(",") if args.compare else [args.policy],
                       trace_paths=args.trace, seed=args.seed, scale=args.scale, duration_s=args.duration,
                       progress=not args.no_progress, best_static_top=args.best_static_top)
    except OserveError as exc:
        from oserve.cli.errors import report

        return report(exc)
    info = {"name": sim.trace.name, "paths": sim.paths, "requests": len(sim.trace),
            "duration_s": sim.trace.duration_s, "scale": sim.scale, "seed": sim.seed}
    command = "oserve " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["simulate"] else ""
    path = write_outputs(sim.runs, args.out, config=sim.config.model_dump(mode="json"), trace_info=info,
                         command=command, plots=not args.no_plots)
    print(comparison_table(sim.runs))
    print(f"\nwrote {path.parent}/ (results.json, requests_*.csv, report.md"
          f"{', timeline_*.png' if not args.no_plots else ''})")
    return 0
