"""trace_stats and the ``oserve trace-stats`` command on the real Azure slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oserve.cli import main
from oserve.errors import ConfigError
from oserve.workload.stats import SUMMARY_KEYS, trace_stats
from oserve.workload.trace import Trace

DATA = Path(__file__).resolve().parents[3] / "data" / "traces" / "azure_llm_2023"
CODE = str(DATA / "AzureLLMInferenceTrace_code.csv")
CONV = str(DATA / "AzureLLMInferenceTrace_conv.csv")


def test_trace_stats_cli_on_conv(capsys):
    assert main(["trace-stats", CONV]) == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == SUMMARY_KEYS
    assert out["requests"] == 19_366
    assert out["input_tokens"]["p50"] == 1020
    assert out["output_tokens"]["p50"] == 129
    assert out["input_tokens"]["max"] == 14_050
    assert out["rate_rps"] == pytest.approx(19_366 / 3501.72, rel=1e-4)
    assert set(out["rate_per_minute"]) == {"min", "median", "max"}
    assert out["rate_per_minute"]["min"] <= out["rate_per_minute"]["median"] <= out["rate_per_minute"]["max"]
    cls = out["classes"]
    assert sum(cls["counts"].values()) == 19_366
    assert sum(w["requests"] for w in cls["windows"]) == 19_366
    assert sum(cls["shares"].values()) == pytest.approx(1.0, abs=1e-3)


def test_trace_stats_cli_merged_code_share_shifts(capsys):
    assert main(["trace-stats", CODE, CONV, "--by", "source", "--indent", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["requests"] == 8_819 + 19_366
    rng = out["classes"]["share_range"]["code"]
    # issue 3: the code share moves between 20% and 41% per 10 minutes
    assert rng["min"] == pytest.approx(0.20, abs=0.01) and rng["max"] == pytest.approx(0.41, abs=0.01)


def test_trace_stats_cli_reports_bad_file(tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,x,1\n")
    assert main(["trace-stats", str(p)]) == 2
    assert "row 1" in capsys.readouterr().err


def test_trace_stats_exact_on_synthetic():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    tr = Trace(t, np.array([10, 20, 30, 40, 5000]), np.array([1, 2, 3, 4, 300]))
    s = trace_stats(tr, window_s=2.0)
    assert s["requests"] == 5 and s["duration_s"] == 4.0 and s["rate_rps"] == 1.25
    assert s["interarrival_cv"] == 0.0
    assert s["input_tokens"]["p50"] == 30 and s["input_tokens"]["max"] == 5000
    assert s["rate_per_minute"] == {"min": 5, "median": 5, "max": 5}
    assert s["classes"]["counts"]["long-in/long-out"] == 1
    assert [w["requests"] for w in s["classes"]["windows"]] == [2, 3]
    with pytest.raises(ConfigError):
        trace_stats(tr, by="source")
