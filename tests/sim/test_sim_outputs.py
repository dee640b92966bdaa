"""Metrics, the fidelity comparison, policies and the ``oserve simulate`` command end to end."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from oserve.cli import main as cli_main
from oserve.errors import ConfigError
from oserve.sim.engine import Simulation
from oserve.sim.fidelity import replay_to_records, trace_from_replay
from oserve.sim.metrics import compare_fidelity, summarise
from oserve.sim.policies import parse_policy, plain_vllm_variant, static_plan
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace

NAMES = DEFAULT_SCHEME.names
ROOT = Path(__file__).resolve().parents[2]


def small_table():
    caps = {"small": {c: 4.0 for c in NAMES}, "big": {c: 6.0 for c in NAMES}}
    return synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB,
                           start_time_s=20.0, class_names=NAMES)


def rec(arrival: float, first: float, finish: float, out: int) -> dict:
    return {"arrival_s": arrival, "first_token_s": first, "finish_s": finish, "generated_tokens": out}


def test_summarise_on_hand_made_records() -> None:
    recs = [rec(0, 1, 3, 5), rec(10, 10.5, 11.5, 3), rec(20, 25, 26, 2), {**rec(30, 0, 0, 0), "first_token_s": None,
                                                                           "finish_s": None, "aborted": True}]
    m = summarise(recs, slo_ttft_s=2.0, slo_tpot_s=0.6, bin_s=10.0, span_s=30.0)
    assert m["completed"] == 3 and m["aborted"] == 1
    assert m["throughput_avg_rps"] == pytest.approx(3 / 30)
    # TTFT 1, 0.5, 5; TPOT 0.5, 0.5, 1.0: only the first two meet the SLO
    assert m["slo_attainment"] == pytest.approx(2 / 4)
    assert m["goodput_avg_rps"] == pytest.approx(2 / 30)
    assert m["throughput_peak_rps"] == pytest.approx(1 / 10)
    assert m["ttft_p50_s"] == pytest.approx(1.0)


def test_compare_fidelity_reports_relative_errors() -> None:
    real = [rec(i, i + 0.2, i + 1.2, 11) for i in range(100)]
    same = compare_fidelity(real, real)
    assert all(v["relative_error"] == 0 for v in same.values())
    slower = [rec(i, i + 0.3, i + 1.3, 11) for i in range(100)]
    cmp = compare_fidelity(real, slower)
    assert cmp["ttft_p50_s"]["relative_error"] == pytest.approx(0.5)
    assert cmp["tpot_mean_s"]["relative_error"] == pytest.approx(0.0, abs=1e-12)
    summary = compare_fidelity({"throughput_rps": 2.0, "ttft_p50_s": 0.1, "ttft_p99_s": 1.0, "tpot_mean_s": 0.05},
                               {"throughput_avg_rps": 2.2, "ttft_p50_s": 0.1, "ttft_p99_s": 0.9, "tpot_mean_s": 0.05})
    assert summary["throughput_rps"]["relative_error"] == pytest.approx(0.1)
    assert summary["ttft_p99_s"]["relative_error"] == pytest.approx(0.1)


def test_a_replay_rebuilt_and_simulated_matches_itself() -> None:
    table = small_table()
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 80 * GIB)
    rng = np.random.default_rng(0)
    n = 300
    tr = Trace(np.sort(rng.uniform(0, 120, n)) - 0.0, rng.integers(50, 500, n), rng.integers(2, 60, n))
    tr = Trace(tr.arrival_s - tr.arrival_s[0], tr.input_tokens, tr.output_tokens)
    sim = Simulation(tr, table, cluster, static_plan(cluster, table, "small")).run()
    # what a replay client would have written for these requests
    replay = [{"scheduled_s": r["arrival_s"], "send_s": r["arrival_s"], "input_tokens": r["input_tokens"],
               "output_tokens": r["generated_tokens"], "ttft_s": r["first_token_s"] - r["arrival_s"],
               "e2e_s": r["finish_s"] - r["arrival_s"], "ok": True} for r in sim.requests]
    rebuilt = trace_from_replay(replay)
    assert np.array_equal(rebuilt.input_tokens, tr.input_tokens)
    again = Simulation(rebuilt, table, cluster, static_plan(cluster, table, "small")).run()
    cmp = compare_fidelity(replay_to_records(replay), again.requests)
    assert all(v["relative_error"] < 1e-9 for v in cmp.values())


def test_policy_parsing_and_plain_vllm_rule() -> None:
    assert parse_policy("static:big").variant == "big"
    assert parse_policy("best-static").kind == "best-static"
    with pytest.raises(ConfigError) as ei:
        parse_policy("dynamic")
    assert ei.value.field == "policy"
    table = small_table()
    # both are fp16 with KV = half the memory: the smallest TP wins
    assert plain_vllm_variant(table) == "small"
    with pytest.raises(ConfigError):
        plain_vllm_variant(table, min_kv_fraction=0.9)


def test_plain_vllm_is_fp32_on_a_table_without_16_bit_variants() -> None:
    from oserve.profiles.table import ProfileTable

    root = Path(__file__).resolve().parents[2]
    cpu = ProfileTable.load(root / "examples" / "profiles" / "cpu-smollm2-precision.json")  # fp32 and int8 only
    assert not any(v.precision.lower() in ("fp16", "bf16") for v in cpu.variants.values())
    plain = plain_vllm_variant(cpu)
    assert cpu.variants[plain].precision.lower() == "fp32"
    with pytest.raises(ConfigError, match="fp32 variant"):
        plain_vllm_variant(cpu, min_kv_fraction=0.99)


def write_azure_csv(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t0 = datetime(2023, 11, 16, 18, 0, 0)
    times = np.sort(rng.uniform(0, 240, n))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for t in times:
            ts = (t0 + timedelta(seconds=float(t))).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            w.writerow([ts, int(rng.integers(50, 3000)), int(rng.integers(2, 300))])


def test_simulate_command_writes_every_output(tmp_path: Path) -> None:
    small_table().save(tmp_path / "table.json")
    write_azure_csv(tmp_path / "AzureLLMInferenceTrace_conv.csv", 300, seed=1)
    (tmp_path / "sim.yaml").write_text(
        "cluster: {nodes: [{name: node0, device_type: a100-80gb, devices: 4, device_memory_gib: 80}]}\n"
        "table: table.json\n"
        "control: {interval_s: 20, horizon_s: 40, monitor_window_s: 20, history_bin_s: 20, min_history: 3}\n"
        "forecaster: {kind: ewma}\nplanner: {kind: greedy}\ninitial_window_s: 60\n")
    out = tmp_path / "out"
    rc = cli_main(["simulate", str(tmp_path / "sim.yaml"), "--trace", str(tmp_path / "AzureLLMInferenceTrace_conv.csv"),
                   "--compare", "oserve,best-static", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["policies"]) == {"oserve", "best-static"}
    for label, p in res["policies"].items():
        assert p["summary"]["requests"] == 300
        assert (out / f"requests_{label.replace(':', '_')}.csv").exists()
        assert (out / f"timeline_{label.replace(':', '_')}.png").stat().st_size > 10_000
    assert res["policies"]["oserve"]["decisions"]
    assert set(res["policies"]["best-static"]["candidates"]) == {"small", "big"}
    report = (out / "report.md").read_text()
    assert "| throughput avg (req/s) |" in report and "best-static" in report


def test_simulate_command_names_a_bad_config_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("table: t.json\ncontrol: {interval_s: -1}\n")
    rc = cli_main(["simulate", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "control.interval_s" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "option"), [
    (["--duration", "-10"], "--duration must be a finite number > 0, got -10.0"),
    (["--duration", "0"], "--duration must be a finite number > 0"),
    (["--scale", "-2"], "--scale must be a finite number > 0, got -2.0"),
    (["--scale", "inf"], "--scale must be a finite number > 0"),
    (["--best-static-top", "-3"], "--best-static-top must be >= 0"),
    (["--capacity-target", "1.5"], "--capacity-target must be in (0, 1], got 1.5"),
    (["--compare", " "], "--compare names no policy"),  # ran the default --policy silently
])
def test_simulate_command_names_a_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                             option: str) -> None:
    # refused before the config or any trace is read (the config path does not exist), naming the option; the
    # simulator's own checks named its internals ("window needs start_s < end_s", "factor must be ...")
    rc = cli_main(["simulate", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o"), *args])
    assert rc == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--capacity-policies", "static:nope"], "unknown variant 'nope' in capacity policy 'static:nope'"),
    (["--capacity-planners", "nope"], "unknown planner 'nope'"),
])
def test_capacity_mode_refuses_unknown_names_before_any_simulation(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                                    message: str) -> None:
    # a fresh-user run found plain vLLM's bisection running first (over 60 s) before the bad name was refused
    import oserve.compose.capacity as capacity
    import oserve.compose.oracle as oracle

    def no_search(*a, **k):
        raise AssertionError("a simulation started before the names were checked")

    monkeypatch.setattr(capacity, "find_capacity", no_search)
    monkeypatch.setattr(oracle, "oracle_bound", no_search)
    rc = cli_main(["simulate", str(ROOT / "examples" / "sim-4x8-a100.yaml"), "--out", str(tmp_path / "o"),
                   "--capacity", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_capacity_check_and_derating() -> None:
    from oserve.sim.capacity_check import check_capacity, derate_table

    table = small_table()  # every class 4 req/s on "small": far above what its iteration model sustains
    high = check_capacity(table, "small", NAMES[2], fraction=1.0, duration_s=120)
    low = check_capacity(table, "small", NAMES[0], fraction=0.05, duration_s=120)
    assert high["rate_rps"] == pytest.approx(4.0) and low["rate_rps"] == pytest.approx(0.2)
    assert low["slo_attainment"] == 1.0
    assert high["slo_attainment"] < low["slo_attainment"]
    half = derate_table(table, 0.5)
    assert half.variants["big"].classes[NAMES[1]].capacity_rps == pytest.approx(3.0)
    assert table.variants["big"].classes[NAMES[1]].capacity_rps == pytest.approx(6.0)
    with pytest.raises(ConfigError):
        derate_table(table, 1.5)
