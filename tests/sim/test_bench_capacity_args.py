"""bench/capacity.py refuses bad arguments with a one-line usage error naming the flag and the allowed
range (exit 2), before any simulation runs: never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "expected"), [
    (["--duration", "-5"], "--duration must be a finite number > 0"),
    (["--duration", "nan"], "--duration must be a finite number > 0"),
    (["--target", "2"], "--target must be in (0, 1]"),
    (["--rel-tol", "0"], "--rel-tol must be a finite number > 0"),
    (["--oracle-duration", "-3"], "--oracle-duration must be a finite number > 0"),
    (["--initial-window", "0"], "--initial-window must be a finite number > 0"),
    (["--initial-window=-1"], "--initial-window must be a finite number > 0"),
    (["--initial-window", "nan"], "--initial-window must be a finite number > 0"),
    (["--warmup", "-1"], "--warmup must be a finite number of seconds >= 0"),
    (["--traces", "bogus"], "allowed: code, conv, merged"),
    # a first window longer than the simulated trace would plan for the whole trace's mean without saying so
    (["--initial-window", "1300", "--duration", "1200"],
     "--initial-window must be in (0, 1200] seconds (at most --warmup + --duration), got 1300"),
    # with a warm-up, a first window past it plans for the measured part (default --initial-window 300)
    (["--warmup", "60", "--duration", "600"],
     "--initial-window must be in (0, 60] seconds with --warmup 60 (a longer first window plans for the measured "
     "part), got 300"),
    (["--warmup", "nan"], "--warmup must be a finite number of seconds >= 0"),
    (["--planners", "mlip"], "unknown planner 'mlip' (field planner.kind); did you mean 'milp'?"),
    (["--models", "bogus", "--duration", "1", "--initial-window", "1"], "no variant left for model 'bogus'"),
    (["--split-fractions", "0.5,1"], "--split-fractions must be 'none' or comma-separated numbers in (0, 1)"),
    (["--split-fractions", "x"], "--split-fractions must be 'none' or comma-separated numbers in (0, 1), got 'x'"),
    (["--split-fractions", "nan"], "--split-fractions must be 'none' or comma-separated numbers in (0, 1)"),
])
def test_bad_arguments_are_usage_errors_without_a_traceback(tmp_path, args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "capacity.py"), *args, "--out",
                           str(tmp_path / "cap.json")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "cap.json").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--window", "0"], "--window must be a finite number of seconds > 0, got 0"),
    (["--window", "inf"], "--window must be a finite number of seconds > 0, got inf"),
    (["--window", "nan"], "--window must be a finite number of seconds > 0, got nan"),
    (["--results", "/nonexistent/cap.json"], "--results /nonexistent/cap.json does not exist"),
    (["--lead-in", "-1"], "--lead-in must be a number of seconds >= 0 (inf: the whole trace before each window), got -1"),
    (["--rel-tol", "0"], "--rel-tol must be a finite number > 0, got 0"),
])
def test_window_oracle_bad_arguments_are_usage_errors(args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "window_oracle.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize(("args", "expected"), [
    (["--rel-tol", "0"], "--rel-tol must be a finite number > 0, got 0"),
    (["--rel-tol", "nan"], "--rel-tol must be a finite number > 0, got nan"),
    (["--results", "/nonexistent/cap.json"], "--results /nonexistent/cap.json does not exist"),
    (["--only", "llama-2-70b/nope"], "--only names unknown studies ['llama-2-70b/nope']"),
    (["--only", "llama-2-70b/conv", "--policies", "static:nope"], "does not have ['static:nope']"),
])
def test_refine_capacity_bad_arguments_are_usage_errors(args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "refine_capacity.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr.splitlines()[-1]


def test_merged_studies_keep_the_simulation_settings_they_ran_with(tmp_path):
    # bench/refine_capacity.py and bench/window_oracle.py re-simulate a study with study_inputs' config. --merge
    # wrote the merging command's own --replica-load at the top level, so a study run with another --replica-load
    # was refined, and its window oracle bisected, with another router. The part's settings are not the defaults
    # (the merging command's --replica-load is 'prefill-tokens'), else the test could not tell them apart.
    import json

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from capacity import study_inputs
    finally:
        sys.path.remove(str(ROOT / "bench"))
    part = {"table": "examples/profiles/a100-80gb-mixed.json", "planners": ["milp"], "command": "part",
            "replica_load": "requests", "initial_window_s": 30.0, "sim_scored_plans": False,
            "sim_split_fractions": [0.3, 0.7], "rows": [],
            "studies": {"llama-2-70b/conv": {"duration_limit_s": 5.0, "warmup_s": 0.0, "rel_tol": 0.05,
                                             "wall_s": 1.0}}}
    (tmp_path / "part.json").write_text(json.dumps(part))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "capacity.py"), "--merge", str(tmp_path / "part.json"),
                           "--out", str(tmp_path / "merged.json")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((tmp_path / "merged.json").read_text())
    _, cfg, _ = study_inputs(merged, "llama-2-70b/conv")
    assert cfg.routing.replica_load == "requests"
    assert cfg.initial_window_s == 30.0 and cfg.sim_scored_plans is False
    assert cfg.sim_split_fractions == [0.3, 0.7]  # the part's, not the merging command's default
    # a result file from before the setting reads as none: its studies ran without splits
    old = {**merged, "studies": {k: {kk: vv for kk, vv in v.items() if kk != "sim_split_fractions"}
                                 for k, v in merged["studies"].items()}}
    old.pop("sim_split_fractions", None)
    assert study_inputs(old, "llama-2-70b/conv")[1].sim_split_fractions == []


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("replica_load.py", ["--results", "/nonexistent/cap.json", "--studies", "a/b:1", "--variants", "v"],
     "--results /nonexistent/cap.json does not exist"),
    # a misspelt variant was skipped as "another model's", and an empty result overwrote --out
    ("replica_load.py", ["--studies", "llama-2-70b/conv:1", "--variants", "llama-2-70b-int8-tp3"],
     "--variants names no variant of the studies' tables: ['llama-2-70b-int8-tp3']"),
    ("window_idle_bias.py", ["--results", "/nonexistent/cap.json", "--study", "a/b", "--scale", "1"],
     "--results /nonexistent/cap.json does not exist"),
    ("static_router.py", ["--results", "/nonexistent/cap.json"], "--results /nonexistent/cap.json does not exist"),
    ("static_router.py", ["--top", "0"], "--top must be >= 1"),
    ("split_routing.py", ["--only", "llama-2-70b/conv", "--fractions", "0.5,1.2"], "fractions must be numbers in (0, 1)"),
    ("split_routing.py", ["--only", "llama-2-70b/conv", "--fixed", "a:2"], "--fixed wants exactly two variants"),
    ("split_routing.py", ["--only", "llama-2-70b/conv", "--paired", "--apply"],
     "--paired probes the study's capacities once; --apply needs a re-bisection"),
    ("split_routing.py", ["--only", "llama-2-70b/conv", "--policies", "oserve:nope"],
     "--policies: 'oserve:nope' is not a row of llama-2-70b/conv"),
    ("split_routing.py", ["--only", "llama-2-70b/conv", "--fixed", "llama-2-70b-int8-tp2:14,llama-2-70b-int8-tp4:1",
                          "--sink-classes", "long-in/nope"], "--sink-classes: unknown classes ['long-in/nope']"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--fractions", "none", "0.4,x"],
     "each --fractions setting is 'none' or comma-separated numbers in (0, 1)"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--scale", "0"], "--scale must be a finite number > 0"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--scale", "inf"], "--scale must be a finite number > 0"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--window-s", "inf"],
     "--window-s must be a finite number of seconds > 0"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--fractions", "0.4,,0.6"],
     "each --fractions setting is 'none' or comma-separated numbers in (0, 1)"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--policy", "static-mix"],
     "--policy must be an oserve row"),
    ("guard_decisions.py", ["--only", "llama-2-70b/conv", "--policy", "oserve:nope"],
     "--policy: 'oserve:nope' is not a row of llama-2-70b/conv"),
    ("guard_decisions.py", ["--only", "nope/conv"], "--only names unknown studies ['nope/conv']"),
    ("planner_capacity.py", ["--only", "llama-3-8b/merged", "--planners", ","], "--planners names no planner"),
    ("planner_capacity.py", ["--only", "llama-3-8b/merged", "--planners", "greedy,gredy"],
     "--planners: unknown planners ['gredy']"),
    ("planner_capacity.py", ["--only", "llama-3-8b/merged", "--planners", "milp"],
     "--planners: 'milp' is the file's headline planner"),
    ("planner_capacity.py", ["--only", "nope/conv"], "--only names unknown studies ['nope/conv']"),
    ("planner_capacity.py", ["--only", " , "], "--only names no study"),  # read as every study before
    ("planner_capacity.py", ["--only", "llama-3-8b/merged", "--results", "/"],
     "--results / is not a readable capacity result file (IsADirectoryError"),
    ("planner_capacity.py", ["--only", "llama-3-8b/merged", "--results", "/nonexistent/cap.json"],
     "--results /nonexistent/cap.json does not exist"),
    # the live bench refuses before any engine starts
    ("replica_load_live.py", ["--rate-factors", "0.05,x"], "--rate-factors must be comma-separated numbers"),
    ("replica_load_live.py", ["--rate-factors", "1.5"], "--rate-factors must be in (0, 1]"),
    ("replica_load_live.py", ["--repeats", "0"], "--repeats must be >= 1"),
    ("replica_load_live.py", ["--max-input", "2000"], "--max-input must be <= 1952"),
    ("replica_load_live.py", ["--config", "/nonexistent/c.yaml"], "--config /nonexistent/c.yaml: cannot read config"),
])
def test_side_by_side_benches_refuse_bad_arguments_without_a_traceback(tmp_path, script, args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(tmp_path / "o.json")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "o.json").exists()


def test_replica_load_live_refuses_an_empty_trace_before_any_engine_starts(tmp_path, monkeypatch, capsys):
    # the traces were built after the engines had started (minutes), so an empty one failed only then
    import importlib

    import oserve.compose
    import oserve.testing.stack_thread as stack_thread

    def no_engines(*args, **kwargs):
        raise AssertionError("the engines would start")

    monkeypatch.setattr(stack_thread, "StackThread", no_engines)
    monkeypatch.setattr(oserve.compose, "resolve_model_path", lambda cfg: "unused")
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    live = importlib.import_module("replica_load_live")
    with pytest.raises(SystemExit) as e:
        live.main(["--rate-factors", "0.0001", "--start-s", "0", "--end-s", "1", "--out", str(tmp_path / "o.json")])
    assert e.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "--rate-factors 0.0001: cannot build the trace" in last and "no request" in last
    assert not (tmp_path / "o.json").exists()


def test_guard_decisions_window_attainment_counts_each_windows_own_arrivals():
    # a request arriving in a window counts there, however late it finishes; unfinished requests miss the SLO
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from guard_decisions import window_attainment
    finally:
        sys.path.remove(str(ROOT / "bench"))
    nan = float("nan")

    def rec(arrival: float, ttft: float, finish: float, out: int = 11) -> dict:
        return {"arrival_s": arrival, "first_token_s": arrival + ttft, "finish_s": arrival + finish,
                "input_tokens": 10, "output_tokens": out, "cls": 0}

    records = [rec(1.0, 0.2, 1.0), rec(5.0, 2.0, 3.0),  # window 0: one within the SLO (TTFT 1 s), one late
               rec(29.0, 0.1, 40.0),  # window 0 too, though it finishes in window 1: TPOT 4 s, a miss
               rec(31.0, 0.1, 0.5), {**rec(40.0, 0.1, 0.5), "first_token_s": nan, "finish_s": nan},
               rec(95.0, 0.1, 0.5)]  # no arrivals in [60, 90): left out
    got = window_attainment(records, slo_ttft_s=1.0, slo_tpot_s=0.1, window_s=30.0)
    assert [(w["start_s"], w["requests"]) for w in got] == [(0.0, 3), (30.0, 2), (90.0, 1)]
    assert [w["slo_attainment"] for w in got] == pytest.approx([1 / 3, 1 / 2, 1.0])
    later = window_attainment(records, slo_ttft_s=1.0, slo_tpot_s=0.1, window_s=30.0, from_s=30.0)
    assert [(w["start_s"], w["requests"]) for w in later] == [(30.0, 2), (90.0, 1)]
