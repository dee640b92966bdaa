"""``oserve plan CONFIG [--table T] --demand '{"class": rate}'``: print a plan as JSON and as a table.

``CONFIG`` is a plan file (``nodes`` and an optional ``planner``, see docs/planning.md) or a serve
config (``cluster``, ``variants``, ``classes``, ``orchestrator``, see docs/configuration.md). For a
serve config the plan is made as its orchestrator would make it: over ``cluster``, from the table of
:func:`oserve.compose.serve_table.orchestrator_table` (``orchestrator.table`` unless ``--table`` is
given, restricted to the config's variants, capacities recomputed at the config's class lengths and
SLO when ``orchestrator.recompute_capacities`` is set), with ``orchestrator.planner`` and the
classes' ``min_quality``. A plan with no replica for a demand > 0 req/s is an error (exit status 2):
nothing would serve that traffic.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oserve.config import ComponentConfig
    from oserve.errors import PlanningError
    from oserve.profiles.table import ProfileTable
    from oserve.types import ClusterSpec, Demand, Plan

__all__ = ["register", "empty_plan_error"]

#: Largest per-class rate ``--demand`` takes, req/s: far above any cluster, far below where float arithmetic
#: overflows (1e308 req/s filled the planners' output with numpy overflow warnings). CLI only: ``Demand``
#: itself takes any finite rate, as forecasts and simulations produce.
MAX_DEMAND_RPS = 1e9

#: Top-level keys that make ``CONFIG`` a serve config rather than a plan file.
_SERVE_KEYS = ("cluster", "variants", "deployment", "orchestrator")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="plan replicas and routing for a cluster, table and demand",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="plan file (nodes, planner; docs/planning.md) or serve config (docs/configuration.md)")
    p.add_argument("--table", default=None, help="profile table JSON (required with a plan file; with a serve "
                                                 "config: instead of orchestrator.table)")
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


def empty_plan_error(plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand) -> PlanningError | None:
    """The error for a plan that would serve nothing: no replica although some class has demand > 0 req/s.

    The message names the classes with demand and why nothing serves them: classes no variant of
    ``table`` serves within its SLO (capacity 0 req/s in every row, :func:`oserve.profiles.rescore.unservable_classes`),
    classes whose serving variants all lie below their ``min_quality``, and classes served only by
    variants that fit no node of ``cluster`` (device type, memory per device, devices per node; the
    reason per variant from :func:`oserve.policies.problem.build_problem`); failing those, the
    planner's own ``plan.reason``.

    Returns:
        None when ``plan`` has a replica or the demand is 0 req/s in every class.
    """
    from oserve.errors import PlanningError
    from oserve.policies.problem import ObjectiveWeights, build_problem
    from oserve.profiles.rescore import unservable_classes

    wanted = [c for c in table.class_names if demand.rates_rps.get(c, 0.0) > 0]
    if plan.replicas or not wanted:
        return None
    total = sum(demand.rates_rps[c] for c in wanted)
    causes: list[str] = []
    unservable = [c for c in unservable_classes(table) if c in wanted]
    if unservable:
        causes.append(f"no variant of the table serves class(es) {', '.join(unservable)} within its SLO "
                      f"(TTFT {table.slo.ttft_s:g} s, TPOT {table.slo.tpot_s:g} s; capacity 0 req/s in every row)")
    problem = build_problem(cluster, table, demand, None, ObjectiveWeights())
    usable = problem.usable()
    low_quality: list[str] = []
    unplaced: list[str] = []
    unfit: dict[str, str] = {}
    for ci, c in enumerate(problem.classes):
        if c not in wanted or c in unservable or usable[:, ci].any():
            continue
        serving = [v for vi, v in enumerate(problem.variants) if problem.cap[vi, ci] > 0]
        if not serving:  # capacity in the table, but only in variants below the class's min_quality
            low_quality.append(c)
        else:
            unplaced.append(c)
            unfit.update({v: problem.unfit.get(v, "does not fit") for v in serving})
    if low_quality:
        causes.append(f"no variant that serves class(es) {', '.join(low_quality)} meets their min_quality")
    if unplaced:
        why = "; ".join(f"{v}: {r}" for v, r in sorted(unfit.items()))
        causes.append(f"class(es) {', '.join(unplaced)} are served only by variants that fit no node of the "
                      f"cluster ({why})")
    if not causes:
        causes.append(f"the planner placed no replica ({plan.planner}: {plan.reason})")
    return PlanningError(f"the plan has no replica although the demand is {total:g} req/s ({', '.join(wanted)}), "
                         f"so nothing would serve it: {'; '.join(causes)}")


def _inputs(args: argparse.Namespace) -> tuple[ClusterSpec, ProfileTable, ComponentConfig, dict[str, float]]:
    """Cluster, planning table, configured planner and per-class minimum quality from CONFIG and --table."""
    from oserve.config import ComponentConfig, load_config, load_plan_config, read_yaml
    from oserve.errors import ConfigError
    from oserve.profiles.table import ProfileTable

    try:
        raw = read_yaml(args.config)
    except ConfigError:  # unreadable: the plan-file loader reports it with the file and line
        raw = {}
    if "table" in raw and "orchestrator" not in raw:  # a top-level table: an `oserve simulate` file
        raise ConfigError(f"{args.config} is a simulator config (top-level 'table'); oserve plan takes a plan file "
                          "or a serve config", field="config", allowed="a plan file (nodes, planner) or a serve "
                          "config (cluster, variants, deployment, orchestrator)")
    is_serve = any(k in raw for k in _SERVE_KEYS)
    if is_serve:
        from oserve.compose.serve_table import orchestrator_table

        serve = load_config(args.config)
        planner = serve.orchestrator.planner if serve.orchestrator is not None else ComponentConfig(kind="milp")
        given = ProfileTable.load(args.table) if args.table else None
        return (serve.cluster_spec, orchestrator_table(serve, given), planner,
                serve.classes.to_scheme().min_quality_by_class)
    cfg = load_plan_config(args.config)
    if not args.table:
        raise ConfigError("--table is required with a plan file (it names no profile table)", field="table",
                          allowed="a profile table JSON path")
    return cfg.spec(), ProfileTable.load(args.table), cfg.planner, {}


def run(args: argparse.Namespace) -> int:
    from oserve.compose import build_planner
    from oserve.config import ComponentConfig
    from oserve.errors import ConfigError, OserveError
    from oserve.policies import Demand

    try:
        cluster, table, configured, min_quality = _inputs(args)
        try:
            rates = json.loads(args.demand)
        except ValueError as exc:  # JSONDecodeError, or an integer longer than Python converts (4,300 digits)
            raise ConfigError(f"--demand is not JSON (or holds a number too long to read): {exc}", field="demand",
                              allowed=f"numbers from 0 to {MAX_DEMAND_RPS:g} req/s") from exc
        # bool is an int subclass: JSON true would plan for 1 req/s
        if not isinstance(rates, dict) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                  for v in rates.values()):
            raise ConfigError('--demand must be a JSON object {"class": rate_rps, ...} with numeric rates',
                              field="demand", allowed=f"numbers from 0 to {MAX_DEMAND_RPS:g} req/s")
        for c, r in rates.items():
            # compared as given: a Python int compares exactly with a float, whatever its size
            ok = (math.isfinite(r) if isinstance(r, float) else True) and 0 <= r <= MAX_DEMAND_RPS
            if not ok:  # 1e308 req/s overflowed the planners' arithmetic into warnings and a 300-digit reason
                shown = repr(r) if len(repr(r)) <= 24 else \
                    f"{'a negative' if r < 0 else 'an'} integer of {len(str(abs(r)))} digits"
                raise ConfigError(f"--demand rate of {c!r} must be a finite number from 0 to {MAX_DEMAND_RPS:g} req/s, "
                                  f"got {shown}",
                                  field=f"demand.{c}", allowed=f"numbers from 0 to {MAX_DEMAND_RPS:g} req/s")
        for option, given in (("--planner", args.planner), ("--variant", args.variant)):
            if given is not None and not given.strip():
                raise ConfigError(f"{option} is empty", field=option.lstrip("-"),
                                  allowed="a name (leave the option out for the config's)")
        kind = args.planner or configured.kind
        if args.variant and kind != "static":
            raise ConfigError(f"--variant applies to the static planner only, not {kind!r}", field="variant",
                              allowed="--planner static (or a config whose planner is static)")
        params = dict(configured.params) if kind == configured.kind else {}
        if kind == "static" and args.variant:
            params["variant"] = args.variant
        planner = build_planner(ComponentConfig(kind=kind, params=params))
        demand = Demand(rates_rps=rates, min_quality=min_quality)
        plan = planner.plan(cluster, table, demand)
        if (empty := empty_plan_error(plan, cluster, table, demand)) is not None:
            raise empty
    except OserveError as exc:
        from oserve.cli.errors import report

        return report(exc)
    if args.format in ("json", "both"):
        print(plan.model_dump_json(indent=2))
    if args.format in ("table", "both"):
        print(_table(plan, table))
    return 0
