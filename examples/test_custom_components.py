"""Your own planner, forecaster and backend: conformance-checked, named in YAML, served and simulated.

Uses only oserve's public API and its pytest plugin (``oserve_client``, ``oserve_sim``); see
docs/testing.md. The components live in ``examples/custom_components.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import custom_components
import openai
import pytest

from oserve.cli import main as oserve_cli
from oserve.config import load_config
from oserve.sim.config import load_config as load_sim_config
from oserve.testing import SimulatedCluster, check_forecaster, check_planner, poisson_trace

custom_components.register()


def test_the_planner_passes_the_conformance_checks() -> None:
    check_planner(custom_components.MostCapacityPlanner())


def test_the_forecaster_passes_the_conformance_checks() -> None:
    check_forecaster(lambda: custom_components.MeanOfLastForecaster(window=3))


SERVE_YAML = """
backend: {kind: echo}
cluster:
  nodes: [{name: local, device_type: cpu, devices: 1, device_memory_gib: 4}]
variants:
  small: {max_num_seqs: 8, max_model_len: 1024}
deployment: [{variant: small, node: local, device_ids: [0]}]
server: {port: 0}
"""


@pytest.fixture
def oserve_config(tmp_path: Path):
    """Overrides the plugin's fixture: the stack serves the echo backend named in YAML."""
    path = tmp_path / "serve.yaml"
    path.write_text(SERVE_YAML)
    return load_config(path)


def test_the_backend_serves_through_the_endpoint(oserve_client: openai.OpenAI) -> None:
    reply = oserve_client.completions.create(model="smollm2-135m-instruct", prompt="hello big world", max_tokens=2)
    assert reply.choices[0].text == " hello big"
    assert reply.choices[0].finish_reason == "length"


def test_planner_and_forecaster_run_from_a_simulator_yaml(tmp_path: Path, oserve_sim: SimulatedCluster) -> None:
    oserve_sim.table.save(tmp_path / "table.json")
    (tmp_path / "sim.yaml").write_text(
        "table: table.json\n"
        "cluster: {nodes: [{name: node0, device_type: a100-80gb, devices: 4, device_memory_gib: 80}]}\n"
        "control: {interval_s: 20, horizon_s: 40, monitor_window_s: 20, history_bin_s: 20, min_history: 3}\n"
        "forecaster: {kind: mean-of-last, params: {window: 3}}\n"
        "planner: {kind: most-capacity}\n")
    sim = SimulatedCluster(config=load_sim_config(tmp_path / "sim.yaml"), table=oserve_sim.table)
    run = sim.run(poisson_trace(rate_rps=2.0, duration_s=300, seed=3))
    assert run.summary["completed"] > 0
    assert run.result.policy == "oserve"


def test_the_planner_runs_from_the_plan_command(tmp_path: Path, oserve_sim: SimulatedCluster,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    oserve_sim.table.save(tmp_path / "table.json")
    (tmp_path / "cluster.yaml").write_text(
        "nodes: [{name: node, device_type: a100-80gb, devices: 4, device_memory_gib: 80}]\n"
        "planner: {kind: most-capacity}\n")
    demand = json.dumps({c: 1.0 for c in oserve_sim.table.class_names})
    rc = oserve_cli(["plan", str(tmp_path / "cluster.yaml"), "--table", str(tmp_path / "table.json"),
                     "--demand", demand, "--format", "json"])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["planner"] == "most-capacity" and plan["reason"].startswith("most capacity")
