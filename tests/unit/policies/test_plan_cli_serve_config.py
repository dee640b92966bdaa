"""``oserve plan`` on a serve config (the orchestrator's table, recomputed capacities) and on plans that
would serve nothing (no replica although demand > 0 req/s: exit status 2, the cause named)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from oserve.cli import main
from oserve.cli.errors import EXIT_CODE, PREFIX
from oserve.config import load_config
from oserve.profiles.table import ProfileTable
from oserve.testing.tables import synthetic_a100_table

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO = EXAMPLES / "demo-cpu-precision.yaml"
FP32, INT8 = "smollm2-135m-fp32-1c-s32", "smollm2-135m-int8-1c-s32"
LONG = "long-in/short-out"
# 1.3 req/s of long prompts: two fp32 cores carry it at the demo's 208-token prompts (1.12 req/s each,
# recomputed) but not at the profile's 256 (0.72 req/s each, stored), where a core must switch to int8
DEMAND = json.dumps({LONG: 1.3})


def _demo_copy(tmp_path: Path, **orchestrator: object) -> Path:
    raw = yaml.safe_load(DEMO.read_text())
    raw["orchestrator"].update(orchestrator, table=str((EXAMPLES / raw["orchestrator"]["table"]).resolve()))
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _plan(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = main(["plan", *argv, "--format", "json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def test_plan_of_the_demo_config_uses_capacities_recomputed_at_its_class_lengths(tmp_path, capsys) -> None:
    cfg = load_config(DEMO)
    assert cfg.orchestrator is not None and cfg.orchestrator.recompute_capacities
    stored = ProfileTable.load(cfg.resolve(cfg.orchestrator.table))
    from oserve.compose.serve_table import orchestrator_table

    rescored = orchestrator_table(cfg)
    assert rescored.capacity(FP32, LONG) > 1.5 * stored.capacity(FP32, LONG)  # 1.12 vs 0.72 req/s

    rc, plan, err = _plan(capsys, str(DEMO), "--demand", DEMAND)
    assert rc == 0, err
    assert sorted(r["variant"] for r in plan["replicas"]) == [FP32, FP32]  # fp32 carries it, recomputed
    assert plan["slo_attainment"] > 0.999

    rc, stored_plan, err = _plan(capsys, str(_demo_copy(tmp_path, recompute_capacities=False)), "--demand", DEMAND)
    assert rc == 0, err
    assert INT8 in [r["variant"] for r in stored_plan["replicas"]]  # the stored capacities need int8


def test_plan_of_a_serve_config_takes_table_override_and_reports_its_planner(tmp_path, capsys) -> None:
    table = EXAMPLES / "profiles" / "cpu-smollm2-precision.json"
    rc, plan, err = _plan(capsys, str(DEMO), "--table", str(table), "--planner", "greedy", "--demand", DEMAND)
    assert rc == 0, err
    assert plan["planner"] == "greedy" and plan["replicas"]


def test_plan_with_no_replica_for_demand_is_an_error_naming_nodes_that_fit_nothing(tmp_path, capsys) -> None:
    # before: exit 0 and an empty plan; the a100 table's variants fit no node of the 2-core CPU cluster
    table = tmp_path / "a100.json"
    synthetic_a100_table().save(table)
    rc, _, err = _plan(capsys, str(EXAMPLES / "cluster-cpu.yaml"), "--table", str(table),
                       "--demand", json.dumps({"short-in/short-out": 10.0}))
    assert rc == EXIT_CODE
    assert err.startswith(PREFIX + "the plan has no replica although the demand is 10 req/s (short-in/short-out)")
    assert "fit no node of the cluster" in err and "70b-int4-tp1: no a100-80gb node" in err
    assert err.count("\n") == 1  # one line
    # the same empty plan at zero demand serves no traffic it should: exit 0
    rc, plan, err = _plan(capsys, str(EXAMPLES / "cluster-cpu.yaml"), "--table", str(table),
                          "--demand", json.dumps({"short-in/short-out": 0.0}))
    assert rc == 0 and plan["replicas"] == [], err


def test_plan_with_no_replica_names_the_classes_no_variant_serves_within_the_slo(tmp_path, capsys) -> None:
    # recomputed at TTFT 1 ms / TPOT 0.1 ms no variant serves any class: every capacity is 0 req/s
    config = _demo_copy(tmp_path, slo={"ttft_s": 0.001, "tpot_s": 0.0001})
    rc, _, err = _plan(capsys, str(config), "--demand", json.dumps({"short-in/short-out": 1.0, LONG: 0.5}))
    assert rc == EXIT_CODE
    assert ("nothing would serve it: no variant of the table serves class(es) short-in/short-out, "
            "long-in/short-out within its SLO (TTFT 0.001 s, TPOT 0.0001 s") in err


def test_plan_with_no_replica_names_classes_only_low_quality_variants_serve(tmp_path, capsys) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    raw["orchestrator"]["table"] = str((EXAMPLES / raw["orchestrator"]["table"]).resolve())
    raw["variants"].pop(FP32)  # int8 only: below a class minimum quality of 1.0
    raw["deployment"] = [{"variant": INT8, "node": "local", "device_ids": [i]} for i in range(2)]
    raw["orchestrator"].pop("parking")
    raw["classes"]["min_quality"] = {"short-in/short-out": 1.0}
    path = tmp_path / "int8.yaml"
    path.write_text(yaml.safe_dump(raw))
    rc, _, err = _plan(capsys, str(path), "--demand", json.dumps({"short-in/short-out": 1.0}))
    assert rc == EXIT_CODE
    assert "no variant that serves class(es) short-in/short-out meets their min_quality" in err


def test_plan_file_without_table_names_the_option(capsys) -> None:
    rc, _, err = _plan(capsys, str(EXAMPLES / "cluster-cpu.yaml"), "--demand", "{}")
    assert rc == EXIT_CODE and "--table is required with a plan file" in err


def test_plan_of_a_simulator_config_says_which_files_it_takes(capsys) -> None:
    rc, _, err = _plan(capsys, str(EXAMPLES / "sim-cpu-demo.yaml"), "--demand", "{}")
    assert rc == EXIT_CODE and "is a simulator config (top-level 'table')" in err and "serve config" in err
