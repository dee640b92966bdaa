"""The rolling-origin backtest and the ``oserve forecast-backtest`` command."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.forecast import make
from oserve.forecast.backtest import RateSeries, backtest, smape


def _series(n: int = 120, seed: int = 0) -> RateSeries:
    rng = np.random.default_rng(seed)
    lam = np.stack([np.full(n, 5.0), np.where(np.arange(n) % 40 < 5, 20.0, 0.5)], axis=1)
    y = rng.poisson(lam * 10) / 10.0
    return RateSeries("synthetic", np.arange(n) * 10.0, y, ("steady", "bursty"), 10.0)


def test_smape_conventions():
    assert smape(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    assert smape(np.array([0.0]), np.array([2.0])) == 200.0
    assert smape(np.array([1.0]), np.array([3.0])) == pytest.approx(100.0)


def test_backtest_scores_against_the_right_targets():
    # a series that is its own index: "last" at horizon 30 s (3 bins) is off by exactly 3 everywhere
    n = 50
    s = RateSeries("ramp", np.arange(n) * 10.0, np.arange(n, dtype=float).reshape(-1, 1), ("c",), 10.0)
    rep = backtest([s], ["last"], (30.0,), eval_start=5)
    sc = rep["series"]["ramp"]["forecasters"]["last"]["horizons"]["30"]["c"]
    assert sc["mae_rps"] == pytest.approx(3.0)
    assert sc["bias_rps"] == pytest.approx(-3.0)
    assert sc["under_requests"] == pytest.approx(3.0 * 10.0 * (n - 3 - 5))
    assert sc["mae_ratio_vs_last"] == 1.0


def test_smoothing_beats_last_value_on_poisson_noise_and_is_timed():
    calls = []

    def timer() -> float:
        calls.append(1)
        return time.perf_counter()

    rep = backtest([_series(200)], {"ewma": lambda: make("ewma", alpha=0.1)}, (60.0,), timer=timer)
    fe = rep["series"]["synthetic"]["forecasters"]
    assert set(fe) == {"last", "ewma"}
    steady = fe["ewma"]["horizons"]["60"]["steady"]
    assert steady["mae_ratio_vs_last"] < 0.9  # Poisson noise: smoothing helps on the steady class
    tm = fe["ewma"]["timing"]
    assert tm["ticks"] == 200 - 30 and tm["ms_per_class_mean"] > 0 and calls


def test_backtest_rejects_unknown_names_and_bad_horizons():
    with pytest.raises(ConfigError):
        backtest([_series()], ["nope"], (60.0,))
    with pytest.raises(ConfigError):
        backtest([_series()], ["last"], (0.0,))


def test_spike_guard_reduces_burst_under_forecast():
    s = _series(200, seed=1)
    rep = backtest([s], {"ewma": lambda: make("ewma"), "spike": lambda: make("spike-guard", inner="ewma")}, (10.0,))
    fe = rep["series"]["synthetic"]["forecasters"]
    without = fe["ewma"]["horizons"]["10"]["total"]["under_requests_in_bursts"]
    with_ = fe["spike"]["horizons"]["10"]["total"]["under_requests_in_bursts"]
    assert with_ < without


def test_cli_prints_json(tmp_path, capsys):
    from oserve.cli import main

    rng = np.random.default_rng(0)
    for tag, rate in (("code", 2.0), ("conv", 4.0)):
        arrivals = np.cumsum(rng.exponential(1 / rate, int(rate * 900)))
        lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
        for a in arrivals:
            sec = 1000 + a
            lines.append(f"2023-11-16 18:{int(sec // 60) % 60:02d}:{sec % 60:010.7f},{rng.integers(100, 4000)},"
                         f"{rng.integers(5, 400)}")
        (tmp_path / f"AzureLLMInferenceTrace_{tag}.csv").write_text("\n".join(lines) + "\n")
    out_file = tmp_path / "out.json"
    rc = main(["forecast-backtest", str(tmp_path / "AzureLLMInferenceTrace_code.csv"),
               str(tmp_path / "AzureLLMInferenceTrace_conv.csv"), "--forecasters", "last,ewma",
               "--horizons", "30,60", "--output", str(out_file), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["series"]) == {"code", "conv", "merged"}
    assert set(rep["series"]["merged"]["forecasters"]) == {"last", "ewma"}
    assert json.loads(out_file.read_text()) == rep
    assert main(["forecast-backtest", str(tmp_path / "AzureLLMInferenceTrace_code.csv"), "--horizons", "x"]) == 2


def test_cli_default_prints_a_short_table_progress_and_path(tmp_path, capsys, monkeypatch):
    from oserve.cli import main

    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(0.5, 1800))
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for a in arrivals:
        sec = 1000 + a
        lines.append(f"2023-11-16 18:{int(sec // 60) % 60:02d}:{sec % 60:010.7f},{rng.integers(100, 4000)},"
                     f"{rng.integers(5, 400)}")
    trace = tmp_path / "AzureLLMInferenceTrace_code.csv"
    trace.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    assert main(["forecast-backtest", str(trace), "--horizons", "30,60"]) == 0
    out, err = capsys.readouterr()
    assert "ewma-auto" in out and "ratio to last" in out and len(out) < 4000  # a table, not the JSON
    assert "backtest" in err and "tick" in err  # the progress bar, on stderr
    report = tmp_path / "forecast-backtest.json"
    assert f"wrote the full report to {report}" in err
    assert set(json.loads(report.read_text())["series"]["code"]["forecasters"]) == {"last", "ewma", "ewma-auto"}
