"""Capacity under SLO of every policy on the shipped A100 tables and Azure 2023 traces.

For each model (Llama-2-70B, Llama-3-8B of ``examples/profiles/a100-80gb-mixed.json``, 4 x 8
A100-80GB) and each trace (code, conv, code + conv merged on one clock), bisects the largest
arrival-rate scale at which SLO attainment >= the target (default 0.9) for plain vLLM, every
single-variant static deployment, the hindsight static mix, oserve with each planner, and computes
the oracle bound (:mod:`oserve.compose.capacity`, :mod:`oserve.compose.oracle`). Writes
``bench/results/capacity.json``: ``rows`` (``model``, ``trace``, ``policy``, ``capacity_scale``, ...)
and ``summary`` (``oserve_vs_plain_mean``, ``oserve_vs_best_static_min``, ``oracle_fraction_min`` for
the headline planner, and the same per planner). The file is rewritten after every (model, trace).

    PYTHONPATH=$PWD .venv/bin/python bench/capacity.py [--duration 1200] [--models llama-2-70b,llama-3-8b]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data/traces/azure_llm_2023"
TRACE_FILES = {"code": ["AzureLLMInferenceTrace_code.csv"], "conv": ["AzureLLMInferenceTrace_conv.csv"],
               "merged": ["AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_conv.csv"]}
CONTROL = {"interval_s": 30, "horizon_s": 90, "monitor_window_s": 30, "history_bin_s": 30, "history_s": 3600}


#: The simulation settings a study ran with, and their defaults for results that predate them: each study records
#: its own (``--merge`` combines runs made with different ones; the top-level copy is the last run's).
SIM_SETTINGS: dict[str, Any] = {"sim_scored_plans": True, "initial_window_s": 300.0, "replica_load": "requests",
                                 "sim_split_fractions": []}


def load_results(ap: argparse.ArgumentParser, path: Path, only: str | None) -> tuple[dict, list[str]]:
    """A finished result file and the studies ``only`` names (comma-separated ``model/trace``; None: all of them);
    a missing file or an unknown study is ``ap.error`` (exit 2)."""
    if not path.exists():
        ap.error(f"--results {path} does not exist (run bench/capacity.py first)")
    try:
        out = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        ap.error(f"--results {path} is not a readable capacity result file ({type(exc).__name__}: {exc})")
    if not isinstance(out, dict) or not all(k in out for k in ("studies", "rows", "planners", "table")):
        ap.error(f"--results {path} is not a capacity result file (needs studies, rows, planners, table: "
                 "written by bench/capacity.py)")
    keys = list(out["studies"]) if not only else only.split(",")
    unknown = [k for k in keys if k not in out["studies"]]
    if unknown:
        ap.error(f"--only names unknown studies {unknown}; allowed: {', '.join(out['studies'])}")
    for key in keys:  # refine and the window oracle re-simulate with the table's capacities only
        if out["studies"][key].get("planner_capacities", "table") != "table":
            ap.error(f"{key}: only studies with table planner capacities are supported")
    return out, keys


def study_inputs(out: dict, key: str) -> tuple[Any, Any, Any]:
    """``(table, cfg, trace)`` a finished study ``key`` (``model/trace``) of result file ``out`` ran on: its model's
    table, its config (planner, control, and the study's own :data:`SIM_SETTINGS`, else the file's, as recorded)
    and its trace (warm-up + duration, unclipped)."""
    from oserve.compose.simulation import load_traces
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.policies import restrict_table

    model, tname = key.split("/")
    study = out["studies"][key]
    table_path = str(ROOT / out["table"]) if not Path(out["table"]).is_absolute() else out["table"]
    table = restrict_table(ProfileTable.load(table_path), model=model)
    rec = {k: study.get(k, out.get(k, default)) for k, default in SIM_SETTINGS.items()}
    cfg = SimConfig(table=table_path, control=CONTROL, planner={"kind": out["planners"][0]}, forecaster={"kind": "ewma"},
                    sim_scored_plans=rec["sim_scored_plans"], initial_window_s=rec["initial_window_s"],
                    routing={"replica_load": rec["replica_load"]}, sim_split_fractions=rec["sim_split_fractions"])
    trace = load_traces([str(TRACES / f) for f in TRACE_FILES[tname]],
                        duration_s=float(study.get("warmup_s", 0.0)) + float(study["duration_limit_s"]))
    return table, cfg, trace


def write_result(path: str, result: dict[str, Any], t_all: float) -> None:
    """Write a side-by-side bench's ``result`` to ``path`` (JSON) with its wall time since ``t_all``
    (``time.perf_counter()``, seconds); benches call it after each row so a stopped run keeps its rows."""
    result["wall_s"] = time.perf_counter() - t_all
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1))


def _summary(rows: list[dict], planners: list[str]) -> dict:
    by: dict = {}
    for p in planners:
        label = f"oserve:{p}"
        mine = [r for r in rows if r["policy"] == label]
        vs_plain = [r["vs_plain"] for r in mine if r["vs_plain"] is not None]
        vs_best = [r["vs_best_static"] for r in mine if r["vs_best_static"] is not None]
        oracle = [r["oracle_fraction"] for r in mine if r["oracle_fraction"] is not None]
        simulated = [r["simulated_oracle_fraction"] for r in mine if r.get("simulated_oracle_fraction") is not None]
        by[label] = {
            "oserve_vs_plain_mean": sum(vs_plain) / len(vs_plain) if vs_plain else None,
            "oserve_vs_best_static_min": min(vs_best) if vs_best else None,
            "oracle_fraction_min": min(oracle) if oracle else None,
            "simulated_oracle_fraction_min": min(simulated) if simulated else None,
            "cases": len(mine),
        }
    head = f"oserve:{planners[0]}"
    return {**{k: v for k, v in by[head].items() if k != "cases"}, "headline_policy": head, "by_planner": by,
            "goals": {"oserve_vs_plain_mean": ">= 2.0", "oserve_vs_best_static_min": ">= 1.0",
                      "oracle_fraction_min": ">= 0.97"}}


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad arguments before any simulation runs: ``ap.error`` (exit 2) naming the flag and
    the allowed range, never a traceback."""
    for flag, value in (("--duration", args.duration), ("--oracle-duration", args.oracle_duration),
                        ("--rel-tol", args.rel_tol), ("--initial-window", args.initial_window)):
        if not (math.isfinite(value) and value > 0):
            ap.error(f"{flag} must be a finite number > 0, got {value}")
    if not (math.isfinite(args.warmup) and args.warmup >= 0):
        ap.error(f"--warmup must be a finite number of seconds >= 0, got {args.warmup}")
    if 0 < args.warmup < args.initial_window:  # else oserve's first plan sees the measured part (hindsight)
        ap.error(f"--initial-window must be in (0, {args.warmup:g}] seconds with --warmup {args.warmup:g} (a longer "
                 f"first window plans for the measured part), got {args.initial_window:g}")
    span = args.warmup + args.duration
    if args.initial_window > span:  # else oserve's first plan is the whole trace's mean, silently
        ap.error(f"--initial-window must be in (0, {span:g}] seconds (at most --warmup + --duration), "
                 f"got {args.initial_window:g}")
    if not (math.isfinite(args.target) and 0 < args.target <= 1):
        ap.error(f"--target must be in (0, 1], got {args.target}")
    bad = [t for t in args.traces.split(",") if t not in TRACE_FILES]
    if bad:
        ap.error(f"--traces names unknown trace(s) {bad}; allowed: {', '.join(TRACE_FILES)}")
    if not args.planners or not all(args.planners.split(",")):
        ap.error(f"--planners must be a comma-separated list of planner names, got {args.planners!r}")
    text = args.split_fractions.strip()
    try:
        fractions = [] if text.lower() == "none" else [float(x) for x in text.split(",")]
    except ValueError:
        fractions = [math.nan]
    if not all(math.isfinite(f) and 0 < f < 1 for f in fractions):
        ap.error(f"--split-fractions must be 'none' or comma-separated numbers in (0, 1), got {args.split_fractions!r}")
    args.split_fractions = sorted(set(fractions))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "examples/profiles/a100-80gb-mixed.json"))
    ap.add_argument("--models", default="llama-2-70b,llama-3-8b")
    ap.add_argument("--traces", default="code,conv,merged")
    ap.add_argument("--duration", type=float, default=1200.0, help="simulate the first S seconds of each trace")
    ap.add_argument("--planners", default="milp,greedy,flow", help="oserve planners; the first is the headline")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--rel-tol", type=float, default=0.02)
    ap.add_argument("--initial-window", type=float, default=300.0,
                    help="oserve's initial plan is the planner's for the mean rate of the trace's first S seconds")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="serve the trace's first S seconds before the measured --duration, uncounted: oserve starts "
                         "the measured part with that history (its initial plan from --initial-window of it: at "
                         "most S), "
                         "static-mix keeps its hindsight of the measured part")
    ap.add_argument("--window-oracle", default="off", choices=("on", "off"),
                    help="also bisect the simulated per-window oracle (oserve/compose/window_oracle.py); the oracle "
                         "is never below it (or add it later: bench/window_oracle.py)")
    ap.add_argument("--oracle-capacities", default="simulated", choices=("simulated", "table"))
    ap.add_argument("--oracle-duration", type=float, default=300.0,
                    help="length of each per-class calibration run of the oracle, seconds")
    ap.add_argument("--planner-capacities", default="table", choices=("table", "calibrated"),
                    help="capacities the planners see: the table's, or calibrated with the simulator on the trace's "
                         "lengths (oserve/compose/calibrate.py)")
    ap.add_argument("--sim-scored", default="on", choices=("on", "off"),
                    help="oserve's and static-mix's planner keeps its plan unless a single-variant plan carries more of "
                         "the demand mix in a short simulation (SimConfig.sim_scored_plans, oserve/sim/scored_planner.py)")
    ap.add_argument("--split-fractions", default="none",
                    help="comma-separated routing splits the guard also scores (SimConfig.sim_split_fractions, each in "
                         "(0, 1), e.g. 0.4,0.6,0.8); 'none' (default) for none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replica-load", default="prefill-tokens", choices=("requests", "prefill-tokens"),
                    help="the oserve router's replica load within a variant (SimConfig.routing.replica_load): "
                         "outstanding requests, or pending prefill tokens first; static:V stays round-robin")
    ap.add_argument("--out", default=str(ROOT / "bench/results/capacity.json"))
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="only combine the studies of these result files (e.g. runs in parallel) into --out")
    ap.add_argument("--append", action="store_true",
                    help="keep the studies already in --out (other models/traces, e.g. run with another --duration)")
    args = ap.parse_args()
    _check_args(ap, args)
    from oserve.cli.errors import format_cli_error
    from oserve.errors import ConfigError

    try:
        return _run(args)
    except ConfigError as exc:  # an unknown planner or model: the message names the field and allowed values
        ap.error(format_cli_error(exc).removeprefix("oserve: error: "))
    return 2


def _oserve_source() -> str:
    """Where the imported ``oserve`` package lives (a worktree's or the venv's editable install), relative to
    this checkout when inside it: a run with the wrong ``PYTHONPATH`` measures other code."""
    import oserve

    src = Path(oserve.__file__).resolve().parent
    return str(src.relative_to(ROOT)) if ROOT in src.parents else str(src)


def _run(args: argparse.Namespace) -> int:
    from oserve.compose.capacity import capacity_study, finite_json, format_capacity_table
    from oserve.compose.simulation import load_traces
    from oserve.policies import make_planner
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import SimConfig
    from oserve.sim.policies import restrict_table

    full = ProfileTable.load(args.table)
    planners = args.planners.split(",")
    for name in planners:  # an unknown planner is refused before any simulation (it was after the static rows)
        make_planner(name)
    tp = Path(args.table).resolve()
    out: dict = {
        "benchmark": "capacity under SLO: largest arrival-rate scale with SLO attainment >= target",
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "table": str(tp.relative_to(ROOT)) if ROOT in tp.parents else args.table,
        "table_source": full.source, "cluster": "4 nodes x 8 A100-80GB", "slo": full.slo.model_dump(),
        "target": args.target, "duration_s": args.duration, "seed": args.seed, "rel_tol": args.rel_tol,
        "planners": planners, "forecaster": "ewma", "control": CONTROL, "sim_scored_plans": args.sim_scored == "on",
        "initial_window_s": args.initial_window, "warmup_s": args.warmup, "replica_load": args.replica_load,
        "sim_split_fractions": args.split_fractions,
        "definitions": {
            "capacity_scale": "largest scale of the trace's arrival rate (oserve.workload.transforms.scale_rate, "
                              "seeded) with SLO attainment >= target, bisected to rel_tol",
            "static-mix": "the headline planner's plan for the whole trace's mean per-class demand (hindsight), "
                          "never switched, plan routing",
            "best static": "the best of every single-variant static deployment and static-mix",
            "oracle": "per 60-s window, the LP relaxation of the best plan for the true demand, no switching cost, "
                      "per-class capacities measured with the simulator on the trace's requests of each class "
                      "(studies.*.oracle.source 'simulated') or the table's ('table'); the request-weighted "
                      "quantile at the target (oserve/compose/oracle.py); made sound by oracle.sound_oracle: table "
                      "capacities scaled per variant so each static deployment's bound equals its simulated capacity "
                      "(source 'table-calibrated'), and never below a simulated fixed plan (floored_by)",
            "common load": "plain vLLM's capacity scale; p99 TTFT, TPOT, E2E there",
        },
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "oserve_source": _oserve_source(),
        "studies": {}, "rows": [], "summary": {},
    }
    if args.append and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        out["studies"] = old.get("studies", {})
        out["rows"] = old.get("rows", [])
        out["commands"] = [*old.get("commands", [old.get("command")]), out["command"]]
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        for part in parts:
            for key, study in part["studies"].items():
                study.setdefault("command", part.get("command"))
                study.setdefault("duration_limit_s", part.get("duration_s"))
                for k, default in SIM_SETTINGS.items():  # the part's, not this merging command's
                    study.setdefault(k, part.get(k, default))
                out["studies"][key] = study
            out["rows"] += part["rows"]
        out["command"] = None
        out["commands"] = [p.get("command") for p in parts] + [" ".join(shlex.quote(a) for a in sys.argv)]
        out["duration_s"] = sorted({s["duration_limit_s"] for s in out["studies"].values()})
        out["rel_tol"] = sorted({s["rel_tol"] for s in out["studies"].values()})
        for k in SIM_SETTINGS:  # one value, or every value the studies ran with
            vals = sorted({json.dumps(s[k]): s[k] for s in out["studies"].values() if k in s}.values(), key=str)
            out[k] = vals[0] if len(vals) == 1 else vals
        out["summary"] = _summary(out["rows"], planners)
        out["wall_s"] = sum(s["wall_s"] for s in out["studies"].values())
        Path(args.out).write_text(json.dumps(finite_json(out), indent=1))
        print(json.dumps(out["summary"], indent=1))
        return 0
    t_all = time.perf_counter()
    for model in args.models.split(","):
        table = restrict_table(full, model=model)
        cfg = SimConfig(table=args.table, control=CONTROL, planner={"kind": planners[0]}, forecaster={"kind": "ewma"},
                        sim_scored_plans=args.sim_scored == "on", initial_window_s=args.initial_window,
                        routing={"replica_load": args.replica_load}, sim_split_fractions=args.split_fractions)
        for tname in args.traces.split(","):
            trace = load_traces([str(TRACES / f) for f in TRACE_FILES[tname]], duration_s=args.warmup + args.duration)
            print(f"== {model} / {tname}: {len(trace)} requests over {trace.duration_s:.0f} s", flush=True)
            study = capacity_study(trace, table, cfg.cluster.spec(), cfg.classes.to_scheme(), cfg, planners=tuple(planners),
                                   target=args.target, seed=args.seed, rel_tol=args.rel_tol,
                                   oracle_capacities=args.oracle_capacities, oracle_duration_s=args.oracle_duration,
                                   planner_capacities=args.planner_capacities, warmup_s=args.warmup,
                                   window_oracle=args.window_oracle == "on",
                                   log=lambda line: print("  " + line, flush=True))
            print(format_capacity_table(study), flush=True)
            key = f"{model}/{tname}"
            out["studies"][key] = {"duration_limit_s": args.duration, "command": out["command"],
                                   **{k: out[k] for k in SIM_SETTINGS},
                                   "load_average_1_5_15": list(os.getloadavg()),
                                   **{k: v for k, v in study.items() if k != "rows"}}
            out["rows"] = [r for r in out["rows"] if (r["model"], r["trace"]) != (model, tname)]
            out["rows"] += [{"model": model, "trace": tname, **r} for r in study["rows"]]
            out["summary"] = _summary(out["rows"], planners)
            out["wall_s"] = time.perf_counter() - t_all
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(finite_json(out), indent=1))
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {args.out} ({out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
