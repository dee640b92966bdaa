"""The committed calibration result and modelled tables agree with the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oserve.profiles.modelled import modelled_table
from oserve.profiles.roofline import DEFAULT_EFFICIENCY
from oserve.profiles.table import ProfileTable

ROOT = Path(__file__).resolve().parents[3]


def test_calibration_result_and_shipped_defaults() -> None:
    cal = json.loads((ROOT / "bench/results/calibration.json").read_text())
    assert cal["heldout_median_abs_error"] < 0.15
    assert any(p["heldout"] for p in cal["per_point"]) and any(not p["heldout"] for p in cal["per_point"])
    for fam in ("a100", "h100"):
        f = cal["factors"][fam]
        d = DEFAULT_EFFICIENCY[fam]
        assert d.mfu == pytest.approx(f["mfu"], rel=0.01)
        assert d.mbu == pytest.approx(f["mbu"], rel=0.01)
        assert d.step_overhead_s == pytest.approx(f["step_overhead_s"], rel=0.01)
        assert d.per_seq_overhead_s == pytest.approx(f["per_seq_overhead_s"], rel=0.01)
    repro = cal["llama2_7b_a100_in_out_1024_batch64"]["points"]
    assert [p["tp"] for p in repro] == [1, 2, 4]
    assert [round(p["measured_tokens_s"]) for p in repro] == [1485, 3253, 5365]


def test_committed_modelled_tables_are_current() -> None:
    path = ROOT / "examples/profiles/a100-80gb-mixed.json"
    committed = ProfileTable.load(path)
    fresh = modelled_table(["llama-3-8b", "llama-2-70b"], "a100-80gb", created=committed.created)
    assert fresh == committed, "regenerate with: python -m oserve.profiles examples/profiles"
    names = set(committed.variants)
    assert "llama-2-70b-fp16-tp1" not in names
    for prec in ("fp16", "int8", "int4"):
        for tp in (1, 2, 4, 8):
            assert f"llama-3-8b-{prec}-tp{tp}" in names
