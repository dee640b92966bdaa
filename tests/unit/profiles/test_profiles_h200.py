"""The H200 efficiency defaults agree with the committed H200 microbenchmark and its check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from oserve.profiles.roofline import DEFAULT_EFFICIENCY, efficiency_for, roofline_model
from oserve.profiles.variants import Variant

ROOT = Path(__file__).resolve().parents[3]


def _load_check():
    spec = importlib.util.spec_from_file_location("h200_check", ROOT / "bench" / "h200_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_h200_defaults_match_committed_fit() -> None:
    check = json.loads((ROOT / "bench/results/h200_check.json").read_text())
    d = DEFAULT_EFFICIENCY["h200"]
    assert efficiency_for("h200") is d
    assert d.mfu == pytest.approx(check["factors_fitted"]["mfu"], rel=0.01)
    assert d.mbu == pytest.approx(check["factors_fitted"]["mbu"], rel=0.01)
    # engine overheads cannot come from a PyTorch loop: they stay H100's
    h100 = DEFAULT_EFFICIENCY["h100"]
    assert (d.step_overhead_s, d.per_seq_overhead_s) == (h100.step_overhead_s, h100.per_seq_overhead_s)


def test_h200_check_reproduces_committed_result(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    assert _load_check().main(["--out", str(out)]) == 0
    fresh = json.loads(out.read_text())
    committed = json.loads((ROOT / "bench/results/h200_check.json").read_text())
    for key in ("median_abs_error_before", "median_abs_error_after", "rms_error_after"):
        assert fresh[key] == pytest.approx(committed[key], rel=1e-6)
    assert fresh["factors_fitted"]["mbu"] == pytest.approx(committed["factors_fitted"]["mbu"], rel=1e-6)
    assert len(fresh["per_point"]) == 9
    # the fit cuts the worst point's error (small-batch decode) against the H100-borrowed factors
    assert fresh["max_abs_error_after"] < fresh["max_abs_error_before"]


def test_h200_small_batch_decode_slower_than_with_h100_factors() -> None:
    v = Variant(model="llama-3-8b", precision="bf16", device_type="h200")
    new = roofline_model(v).decode_step_s(1, 1024)
    old = roofline_model(v, DEFAULT_EFFICIENCY["h100"]).decode_step_s(1, 1024)
    assert new > old * 1.05
