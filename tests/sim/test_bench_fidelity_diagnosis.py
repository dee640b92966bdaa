"""The fidelity benches' own logic: where per-token stream gaps put a stall, and a bad --fit-metrics."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _diagnosis():
    spec = importlib.util.spec_from_file_location("sim_fidelity_diagnosis", ROOT / "bench/sim_fidelity_diagnosis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def stream(send: float, itl: list[float]) -> dict:
    return {"send_s": send, "ttft_s": 0.1, "e2e_s": 0.1 + sum(itl), "itl_s": itl, "output_tokens": len(itl) + 1,
            "ok": True}


def test_a_stall_of_one_stream_while_another_keeps_streaming_is_one_engine() -> None:
    mod = _diagnosis()
    stalled = stream(0.0, [0.1] * 5 + [2.0] + [0.1] * 3)       # waits 2 s for a token from 0.6 s
    steady = stream(0.05, [0.1] * 40)                          # keeps receiving tokens meanwhile
    got = mod._token_gaps([stalled, steady], gap_s=1.0)
    assert got["events"] == [{"from_s": 0.6, "to_s": 2.6, "stalled_requests": 1, "in_flight": 2,
                              "others_receiving_tokens": 1}]
    both = mod._token_gaps([stalled, stream(0.05, [0.1] * 5 + [2.0] + [0.1] * 3)], gap_s=1.0)
    assert [e["others_receiving_tokens"] for e in both["events"]] == [0]
    assert mod._token_gaps([{"send_s": 0.0, "ttft_s": 0.1, "e2e_s": 1.0}], gap_s=1.0) is None  # no itl_s


def test_an_unknown_fit_metric_is_refused_with_the_allowed_names() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "bench/sim_fidelity_loads.py"), "--runs",
                        str(ROOT / "bench/results/fidelity_quiet_runs/runs.json"), "--config",
                        str(ROOT / "examples/sim-cpu-demo.yaml"), "--fit-metrics", "ttft_p50_s,latency",
                        "--out", os.devnull], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "--fit-metrics: unknown ['latency']" in r.stderr and "tpot_mean_s" in r.stderr


def _real_runs():
    spec = importlib.util.spec_from_file_location("fidelity_real_runs", ROOT / "bench/fidelity_real_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_the_sim_config_written_after_the_replays_points_at_the_profile_measured_there(tmp_path: Path) -> None:
    import pytest

    from oserve.sim.config import load_config

    mod = _real_runs()
    table = ROOT / "bench/results/fidelity_runs_1202/profile.json"
    profile = tmp_path / "profile.json"
    profile.write_bytes(table.read_bytes())
    written = mod.write_sim_config(ROOT / "examples/sim-cpu-demo.yaml", profile, tmp_path / "sim-config.yaml")
    cfg = load_config(written)
    assert cfg.resolve(cfg.table) == profile.resolve()  # relative to the written config's folder
    assert cfg.variants == load_config(ROOT / "examples/sim-cpu-demo.yaml").variants
    bad = tmp_path / "serve.yaml"
    bad.write_text("cluster: {}\n")  # no top-level table: not a simulator config
    with pytest.raises(SystemExit, match="not a simulator config"):
        mod.read_sim_template(bad)
