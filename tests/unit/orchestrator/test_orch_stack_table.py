"""The live stack plans only the variants its config can start, even when the table holds more."""

from __future__ import annotations

from pathlib import Path

from oserve.profiles.table import ProfileTable
from oserve.testing import StackThread, serve_config

TABLE = Path(__file__).resolve().parents[3] / "examples" / "profiles" / "cpu-smollm2.json"
VARIANT = "smollm2-135m-fp32-1c-s32"


def test_the_orchestrator_plans_only_the_configs_variants():
    assert len(ProfileTable.load(TABLE).variants) > 1  # the table offers variants the config lacks
    config = serve_config(
        "fake", replicas=1,
        variants={VARIANT: {"dtype": "float32", "max_num_seqs": 32, "max_model_len": 2048}},
        deployment=[{"variant": VARIANT, "node": "local", "device_ids": [0]}],
        classes={"input_edges": [128], "output_edges": [24]},
        orchestrator={"table": str(TABLE), "planner": {"kind": "greedy"}})
    with StackThread(config) as st:
        table = st.stack.orchestrator.controller.table
    assert list(table.variants) == [VARIANT]


def test_the_orchestrator_plans_with_capacities_at_the_configs_lengths_when_asked():
    classes = {"input_edges": [128], "output_edges": [24], "expected_input_tokens": [48, 208],
               "expected_output_tokens": [14, 70]}
    tables = {}
    for recompute in (False, True):
        config = serve_config(
            "fake", replicas=1,
            variants={VARIANT: {"dtype": "float32", "max_num_seqs": 32, "max_model_len": 2048}},
            deployment=[{"variant": VARIANT, "node": "local", "device_ids": [0]}], classes=classes,
            orchestrator={"table": str(TABLE), "planner": {"kind": "greedy"}, "recompute_capacities": recompute,
                          "slo": {"ttft_s": 1.5, "tpot_s": 0.15}})
        with StackThread(config) as st:
            tables[recompute] = st.stack.orchestrator.controller.table
    stored, rescored = tables[False], tables[True]
    assert stored.slo != rescored.slo and rescored.slo.ttft_s == 1.5
    from oserve.profiles.rescore import rescore_table
    from oserve.types import ClassScheme

    scheme = ClassScheme(input_edges=(128,), output_edges=(24,), expected_input_tokens=(48, 208),
                         expected_output_tokens=(14, 70))
    assert rescored == rescore_table(stored, scheme, rescored.slo)
    assert rescored.capacity(VARIANT, "long-in/short-out") != stored.capacity(VARIANT, "long-in/short-out")


def test_recomputed_capacities_serve_a_class_scheme_the_table_was_not_profiled_with():
    # three output buckets where the table has two: the iteration-time model gives capacities for any
    # classes, so with recompute_capacities the stack plans for the config's classes (as the simulator
    # does); without it the table's stored classes must match and the error names the missing ones
    import pytest

    from oserve.errors import ProfileError

    classes = {"input_edges": [128], "output_edges": [24, 48], "expected_input_tokens": [48, 208],
               "expected_output_tokens": [14, 36, 70]}

    def config(recompute: bool):
        return serve_config(
            "fake", replicas=1,
            variants={VARIANT: {"dtype": "float32", "max_num_seqs": 32, "max_model_len": 2048}},
            deployment=[{"variant": VARIANT, "node": "local", "device_ids": [0]}], classes=classes,
            orchestrator={"table": str(TABLE), "planner": {"kind": "greedy"}, "recompute_capacities": recompute})

    with StackThread(config(True)) as st:
        table = st.stack.orchestrator.controller.table
    assert table.class_names == ["short-in/out0", "short-in/out1", "short-in/out2",
                                 "long-in/out0", "long-in/out1", "long-in/out2"]
    assert table.capacity(VARIANT, "short-in/out0") > table.capacity(VARIANT, "short-in/out2") > 0
    with pytest.raises(ProfileError, match="no class"):
        StackThread(config(False)).start()


def test_an_slo_no_variant_meets_warns_at_start_and_never_removes_capacity_under_load(caplog):
    # recomputed at TTFT 1 ms / TPOT 0.1 ms every capacity is 0: the planner plans no replica at all
    import logging

    config = serve_config(
        "fake", replicas=2,
        variants={VARIANT: {"dtype": "float32", "max_num_seqs": 32, "max_model_len": 2048}},
        deployment=[{"variant": VARIANT, "node": "local", "device_ids": [i]} for i in range(2)],
        classes={"input_edges": [128], "output_edges": [24]},
        orchestrator={"table": str(TABLE), "planner": {"kind": "milp"}, "recompute_capacities": True,
                      "slo": {"ttft_s": 0.001, "tpot_s": 0.0001}, "control_interval_s": 1000})
    with caplog.at_level(logging.WARNING), StackThread(config) as st:
        orch = st.stack.orchestrator
        assert all(r.capacity_rps == 0 for row in orch.controller.table.variants.values() for r in row.classes.values())
        decision = st.call(lambda: orch.step(floor_rps={"short-in/short-out": 3.0, "long-in/long-out": 1.0}))
        replicas = [r.variant for r in orch.current_plan.replicas]
    assert any("no variant serves class(es) short-in/short-out, short-in/long-out" in r.getMessage()
               for r in caplog.records)
    assert "missing-class: short-in/short-out (capacity 0 in every row)" in decision.alarms
    assert replicas == [VARIANT, VARIANT]
