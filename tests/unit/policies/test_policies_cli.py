"""``oserve plan`` and the cluster YAML loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oserve.cli import main
from oserve.config import load_plan_config
from oserve.errors import ConfigError
from oserve.testing.tables import synthetic_a100_table

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_configs_load():
    cfg = load_plan_config(EXAMPLES / "cluster-4x8-a100.yaml")
    cluster = cfg.spec()
    assert [n.name for n in cluster.nodes] == ["node0", "node1", "node2", "node3"]
    assert cluster.total_devices == 32 and cluster.nodes[0].device_memory_bytes == 80 * 2**30
    assert cfg.planner.kind == "milp" and cfg.planner.params == {"time_limit_s": 1.0}
    cpu = load_plan_config(EXAMPLES / "cluster-cpu.yaml").spec()
    assert cpu.nodes[0].device_type == "cpu" and cpu.total_devices == 2


def test_bad_config_names_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("nodes:\n  - {name: n, device_type: cpu, devices: 0, device_memory_gib: 4}\n")
    with pytest.raises(ConfigError) as e:
        load_plan_config(p)
    assert e.value.field == "nodes.0.devices"


@pytest.mark.parametrize("planner", ["milp", "greedy", "flow", "static"])
def test_plan_cli_prints_json_and_table(planner, tmp_path, capsys):
    table = tmp_path / "t.json"
    synthetic_a100_table().save(table)
    demand = json.dumps({"short-in/short-out": 10.0, "long-in/long-out": 0.5})
    rc = main(["plan", str(EXAMPLES / "cluster-4x8-a100.yaml"), "--table", str(table), "--demand", demand,
               "--planner", planner, "--format", "json"])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["planner"] == planner and plan["replicas"]
    assert abs(sum(plan["routing"]["long-in/long-out"].values()) - 1.0) < 1e-6
    rc = main(["plan", str(EXAMPLES / "cluster-4x8-a100.yaml"), "--table", str(table), "--demand", demand,
               "--planner", planner, "--format", "table"])
    out = capsys.readouterr().out
    assert rc == 0 and "SLO attainment" in out and "long-in/long-out" in out


def test_plan_cli_rejects_unknown_class(tmp_path, capsys):
    table = tmp_path / "t.json"
    synthetic_a100_table().save(table)
    rc = main(["plan", str(EXAMPLES / "cluster-cpu.yaml"), "--table", str(table), "--demand", '{"nope": 1}'])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "expect"), [
    (["--demand", '{"short-in/short-out": true}'], "numeric rates"),  # JSON true is not 1 req/s
    (["--demand", '{"short-in/short-out": "3"}'], "numeric rates"),
    (["--demand", '{"short-in/short-out": 3}', "--variant", "x"], "--variant applies to the static planner only"),
    (["--demand", '{"short-in/short-out": 1' + "0" * 400 + '}'], "got an integer of 401 digits"),  # no float holds it
    (["--demand", '{"short-in/short-out": -1' + "0" * 400 + '}'], "got a negative integer of 401 digits"),
    (["--demand", '{"short-in/short-out": 1' + "0" * 5000 + '}'], "too long to read"),  # Python's 4,300-digit limit
    (["--demand", '{"short-in/short-out": 1e308}'], "from 0 to 1e+09 req/s, got 1e+308"),  # overflowed the planners
    (["--demand", '{"short-in/short-out": 1000000001}'], "got 1000000001"),
    (["--demand", '{"short-in/short-out": Infinity}'], "must be a finite number"),
    (["--demand", '{"short-in/short-out": NaN}'], "must be a finite number"),
    (["--demand", '{"short-in/short-out": -2}'], "got -2"),
    (["--demand", '{"short-in/short-out": 3}', "--planner", " "], "--planner is empty"),
    (["--demand", '{"short-in/short-out": 3}', "--planner", "static", "--variant", ""], "--variant is empty"),
])
def test_plan_cli_refuses_a_bad_demand_or_a_variant_without_the_static_planner(extra, expect, tmp_path, capsys):
    table = tmp_path / "t.json"
    synthetic_a100_table().save(table)
    rc = main(["plan", str(EXAMPLES / "cluster-4x8-a100.yaml"), "--table", str(table), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err, err


@pytest.mark.parametrize("content", [b"\x7fELF\x02\x01\x01\x00\xd0\xff binary", b"[1, 2]"])
def test_plan_cli_names_an_unreadable_table(content, tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_bytes(content)
    rc = main(["plan", str(EXAMPLES / "cluster-4x8-a100.yaml"), "--table", str(table), "--demand", '{"a": 1}'])
    err = capsys.readouterr().err
    assert rc == 2 and str(table) in err, err


def test_plan_cli_names_a_binary_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff binary")
    rc = main(["plan", str(config), "--table", str(tmp_path / "t.json"), "--demand", '{"a": 1}'])
    err = capsys.readouterr().err
    assert rc == 2 and str(config) in err, err


def test_plan_cli_static_planner_runs_the_variant_named(tmp_path, capsys):
    table = tmp_path / "t.json"
    t = synthetic_a100_table()
    t.save(table)
    variant = sorted(t.variants)[-1]
    rc = main(["plan", str(EXAMPLES / "cluster-4x8-a100.yaml"), "--table", str(table), "--demand",
               '{"short-in/short-out": 3}', "--planner", "static", "--variant", variant, "--format", "json"])
    plan = json.loads(capsys.readouterr().out)
    assert rc == 0 and {r["variant"] for r in plan["replicas"]} == {variant}


def test_demand_refuses_boolean_and_string_values():
    import numpy as np
    from pydantic import ValidationError

    from oserve.types import Demand

    for bad in (True, np.True_, "3", b"3"):
        with pytest.raises(ValidationError, match="not booleans or strings"):
            Demand(rates_rps={"short-in/short-out": bad})
    with pytest.raises(ValidationError, match="not booleans or strings"):
        Demand(rates_rps={"short-in/short-out": 1.0}, min_quality={"short-in/short-out": True})
    assert Demand(rates_rps={"short-in/short-out": np.float64(2.5)}).rates_rps == {"short-in/short-out": 2.5}
    assert Demand(rates_rps={"short-in/short-out": 2}).rates_rps == {"short-in/short-out": 2.0}
