"""``oserve simulate CONFIG --trace T... --policy P --out DIR [--compare p1,p2] [--seed N] [--scale X]
[--duration S]``: replay traces on a modelled cluster under one or several policies."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

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
    p.add_argument("--capacity", action="store_true",
                   help="instead of one run per policy: bisect each policy's capacity (largest rate scale with SLO "
                        "attainment >= --capacity-target), print the table and write capacity.json")
    p.add_argument("--capacity-target", type=float, default=0.9, help="SLO attainment target of --capacity (0..1]")
    p.add_argument("--capacity-policies", default=None,
                   help="--capacity: comma-separated plain-vllm, static:VARIANT, static-mix, oserve:PLANNER "
                        "(default: plain vLLM, every static variant, the static mix, oserve per planner)")
    p.add_argument("--capacity-planners", default="milp,greedy,flow",
                   help="--capacity: planners of the default oserve:PLANNER policies")
    p.add_argument("--capacity-oracle", choices=("simulated", "table"), default="simulated",
                   help="--capacity: per-class capacities of the oracle bound: measured with the simulator (slower) "
                        "or the profile table's")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse option values outside their range, naming the option (before any trace is read).

    Raises:
        ConfigError: ``--scale`` or ``--duration`` not a finite number > 0, ``--best-static-top`` < 0,
            ``--capacity-target`` outside (0, 1], or an empty ``--compare``.
    """
    import math

    from oserve.errors import ConfigError

    for name, value in (("--scale", args.scale), ("--duration", args.duration)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}", field=name, allowed="> 0")
    if args.best_static_top < 0:
        raise ConfigError(f"--best-static-top must be >= 0 (0: every variant), got {args.best_static_top}",
                          field="--best-static-top", allowed=">= 0")
    if not (math.isfinite(args.capacity_target) and 0 < args.capacity_target <= 1):
        raise ConfigError(f"--capacity-target must be in (0, 1], got {args.capacity_target}",
                          field="--capacity-target", allowed="(0, 1]")
    if args.compare is not None and not args.compare.strip():  # else it ran the default --policy silently
        raise ConfigError("--compare names no policy", field="--compare", allowed="comma-separated policies")


def run(args: argparse.Namespace) -> int:
    from oserve.compose import simulate
    from oserve.errors import OserveError
    from oserve.sim.report import comparison_table, write_outputs

    try:
        _check_args(args)
        if args.capacity:
            from oserve.compose.simulation import load_table, load_traces
            from oserve.sim.config import load_config

            cfg = load_config(args.config)
            seed = cfg.trace.seed if args.seed is None else args.seed
            scale = cfg.trace.scale if args.scale is None else args.scale
            duration = cfg.trace.duration_s if args.duration is None else args.duration
            paths = args.trace or [str(cfg.resolve(p)) for p in cfg.trace.paths]
            trace = load_traces(paths, scale=scale, seed=seed, duration_s=duration)
            return _capacity(args, trace, load_table(cfg), cfg.cluster.spec(), cfg.classes.to_scheme(), cfg, seed)
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


def _capacity(args: argparse.Namespace, trace: Any, table: Any, cluster: Any, scheme: Any, cfg: Any, seed: int) -> int:
    """``--capacity``: the capacity study of :mod:`oserve.compose.capacity`, printed and written to capacity.json."""
    import json
    from pathlib import Path

    from oserve.compose.capacity import capacity_study, finite_json, format_capacity_table

    policies = args.capacity_policies.split(",") if args.capacity_policies else None
    study = capacity_study(trace, table, cluster, scheme, cfg, policies=policies,
                           planners=tuple(args.capacity_planners.split(",")), target=args.capacity_target, seed=seed,
                           oracle_capacities=args.capacity_oracle,
                           log=None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(finite_json(study), indent=1))
    print(format_capacity_table(study))
    print(f"\nwrote {out / 'capacity.json'}")
    return 0
