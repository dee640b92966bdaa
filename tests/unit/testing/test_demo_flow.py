"""The demo's whole flow (``oserve.cli.demo.main``) on the fake backend, time-compressed: four
deployments on pooled engines, results.json keys, timeline PNG, oserve switching precision live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oserve.cli import demo, demo_table
from oserve.profiles.cpu_speed import CpuSpeed
from oserve.profiles.table import ProfileTable

ROOT = Path(__file__).resolve().parents[3]


def test_demo_runs_four_deployments_on_pooled_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # run as on the CPU, at the core speed, the table was measured on (no re-measuring with real engines here)
    speed = CpuSpeed(memory_gbps=15.0, gemm_gflops=95.0, method="test")
    shipped = ProfileTable.load(ROOT / "examples" / "profiles" / "cpu-smollm2-precision.json")
    table = tmp_path / "cpu-smollm2-precision.json"
    shipped.model_copy(update={"measured_speed": speed}).save(table)
    monkeypatch.setattr(demo_table, "current_cpu", lambda: shipped.measured_on)
    monkeypatch.setattr(demo_table, "measure_cpu_speed", lambda: speed.model_copy(update={"memory_gbps": 16.0}))
    cfg = yaml.safe_load((ROOT / "examples" / "demo-cpu-precision.yaml").read_text())
    cfg["backend"] = {"kind": "fake", "params": {"options": {"token_delay_s": 0.004}}}
    cfg["orchestrator"]["table"] = str(table)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert demo.main(["--config", str(path), "--out", str(out), "--time-compression", "40"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"oserve", "plain", "int8", "best_static", "meta"} <= set(res)
    for name in ("oserve", "plain", "int8", "best_static"):
        row = res[name]
        for key in ("goodput_rps", "slo_attainment", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s",
                    "full_precision_share", "core_seconds", "switches", "switch_s", "retried", "resumed", "aborted",
                    "lost"):
            assert key in row, (name, key)
        assert row["lost"] == 0 and row["completed"] == row["requests"] == res["meta"]["requests"]
    assert res["plain"]["full_precision_share"] == 1.0 and res["int8"]["full_precision_share"] == 0.0
    assert res["plain"]["switches"] == 0 and res["plain"]["core_seconds"] > 0
    # the burst exceeds 2 x fp32 by the profile: oserve moves some core to int8, without a cold start
    assert res["oserve"]["switches"] >= 1 and 0.0 < res["oserve"]["full_precision_share"] < 1.0
    assert all(s < 5.0 for s in res["oserve"]["switch_s"])
    # parking: the int8 engines start parked beside the fp32 ones (4 warm hand-outs from the pool,
    # no cold start), and every precision switch is a wake of a parked engine, serving within 1 s
    details = json.loads((out / "details.json").read_text())["oserve"]
    assert details["warm_starts"] == 4 and details["cold_starts"] == 0
    assert details["wakes"] >= 1 and all(s < 1.0 for s in res["oserve"]["serving_s"])
    assert 0.0 < res["oserve"]["touched_by_switch_share"] <= 1.0
    row = res["oserve"]
    assert row["interrupted_share"] == round((row["retried"] + row["resumed"] + row["aborted"]) / row["requests"], 3)
    assert res["meta"]["rate"]["peak_rps"] > res["meta"]["rate"]["plain_capacity_at_peak_mix_rps"]
    assert "measured on this CPU at this speed" in res["meta"]["profile_table"]
    assert (out / "timeline.png").stat().st_size > 10_000


@pytest.mark.parametrize("args", [["--peak-over-plain", "inf"], ["--peak-over-plain", "nan"], ["--peak-over-plain", "0"],
                                  ["--deployments", "plain,fp16"], ["--deployments", ","], ["--end-s", "nan"],
                                  ["--end-s", "539"], ["--time-compression", "inf"]])
def test_demo_argument_errors_stop_before_any_table_or_engine(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    def no_table(*a, **k):  # choosing the table may re-measure on real engines: an argument error must come first
        raise AssertionError("demo_table called")
    monkeypatch.setattr(demo_table, "demo_table", no_table)
    with pytest.raises(SystemExit) as info:
        demo.main(args)
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_only_the_oserve_run_keeps_the_router_side_in_flight_limit() -> None:
    from oserve.cli.demo import ROOT, deployment_config
    from oserve.config import load_config

    config = load_config(ROOT / "examples" / "demo-cpu-precision.yaml")
    fp32 = "smollm2-135m-fp32-1c-s32"
    assert config.variants[fp32].max_ongoing_requests is not None  # the demo config sets one for oserve
    mine = deployment_config(config, "oserve", list(config.deployment))
    assert mine.orchestrator is not None and mine.variants[fp32].max_ongoing_requests == \
        config.variants[fp32].max_ongoing_requests
    for name in ("plain", "int8", "best_static"):  # the statics run as vLLM does: engines take up to max_num_seqs
        static = deployment_config(config, name, list(config.deployment))
        assert static.orchestrator is None
        assert all(v.max_ongoing_requests is None for v in static.variants.values())
