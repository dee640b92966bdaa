"""``oserve plan CONFIG --table T --demand '{"class": rate}'``: print a plan as JSON and as a table."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="plan replicas and routing for a cluster, table and demand",
                              description=__doc__)
    p.add_argument("config", help="cluster YAML (see docs/planning.md)")
    p.add_argument("--table", required=True, help="profile table JSON")
    p.add_argument("--demand", required=True, help='per-class demand, req/s, as JSON: {"class": rate, ...}')
    p.add_argument("--planner", default=None, help="milp | greedy | flow | static | hysteresis (default: config)")
    p.add_argument("--variant", default=None, help="static planner: the variant to run (default: best)")
    p.add_argument("--format", choices=["json", "table", "both"], default="both")
    p.set_defaults(func=run)


def _table(plan, table) -> str:
    lines = [f"planner: {plan.planner}   goodput {plan.predicted_goodput_rps:.3f} req/s   "
             f"SLO attainment {plan.slo_attainment:.1%}   devices {plan.devices_used}   "
             f"objective {plan.objective:.4f}"]
    per: dict[tuple[str, str], list[str]] = {}
    for r in plan.replicas:
        ids = r.device_ids
        per.setdefault((r.variant, r.node), []).append(f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0]))
    lines.append(f"{'variant':24s} {'node':12s} {'replicas':>8s}  devices")
    for (v, n), ids in sorted(per.items()):
        lines.append(f"{v:24s} {n:12s} {len(ids):8d}  {', '.join(ids)}")
    lines.append("")
    lines.append(f"{'class':24s} routing (share per variant){'':4s} admit req/s")
    for c in table.class_names:
        shares = ", ".join(f"{v} {w:.0%}" for v, w in plan.routing.get(c, {}).items()) or "(no capacity)"
        admit = f"{plan.admit_rps[c]:.3f}" if c in plan.admit_rps else "all"
        lines.append(f"{c:24s} {shares:40s} {admit}")
    lines.append("")
    lines.append(f"reason: {plan.reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from oserve.compose import build_planner
    from oserve.config import ComponentConfig, load_plan_config
    from oserve.errors import ConfigError, OserveError
    from oserve.policies import Demand
    from oserve.profiles.table import ProfileTable

    try:
        cfg = load_plan_config(args.config)
        table = ProfileTable.load(args.table)
        try:
            rates = json.loads(args.demand)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--demand is not JSON: {exc}", field="demand") from exc
        if not isinstance(rates, dict) or not all(isinstance(v, int | float) for v in rates.values()):
            raise ConfigError('--demand must be a JSON object {"class": rate_rps, ...}', field="demand")
        kind = args.planner or cfg.planner.kind
        params = dict(cfg.planner.params) if kind == cfg.planner.kind else {}
        if kind == "static" and args.variant:
            params["variant"] = args.variant
        planner = build_planner(ComponentConfig(kind=kind, params=params))
        plan = planner.plan(cfg.spec(), table, Demand(rates_rps=rates))
    except OserveError as exc:
        from oserve.cli.errors import report

        return report(exc)
    if args.format in ("json", "both"):
        print(plan.model_dump_json(indent=2))
    if args.format in ("table", "both"):
        print(_table(plan, table))
    return 0
