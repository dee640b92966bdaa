"""Attaching measured quality to a profile table (the engine step is replaced by a fake scorer here;
the real engines run in tests/integration/test_precision_real.py)."""

from __future__ import annotations

import pytest

from oserve.backends import quality_probe
from oserve.errors import ProfileError
from oserve.profiles.quality import TextScores
from oserve.testing.tables import synthetic_table

IDS = (1, 2, 3, 4, 5)
FAKE_SCORES = {  # by engine dtype / checkpoint: what a fake engine "returns"
    "fp32": TextScores(IDS, (-1.0, -1.0, -1.0, -1.0), (2, 3, 4, 5)),
    "int8": TextScores(IDS, (-1.1, -1.0, -0.9, -1.2), (2, 3, 9, 5)),
    "bf16": TextScores(IDS, (-1.0, -1.05, -1.0, -1.0), (2, 3, 4, 5)),
}


@pytest.fixture
def fake_scorer(monkeypatch):
    calls = []

    def fake_score_checkpoint(model, dtype, core=0, timeout_s=0):
        calls.append((model, dtype))
        return FAKE_SCORES[model.rsplit("-", 1)[-1]]

    monkeypatch.setattr(quality_probe, "score_checkpoint", fake_score_checkpoint)
    import oserve.backends.embedded_model

    monkeypatch.setattr(oserve.backends.embedded_model, "ensure_precision_checkpoint", lambda p: f"/ckpt/smollm2-{p}")
    return calls


def _table(precisions):
    t = synthetic_table({f"v-{p}": {"c": 1.0} for p in precisions}, {f"v-{p}": 1 for p in precisions},
                        device_type="cpu")
    return t.model_copy(update={"variants": {n: v.model_copy(update={"precision": n[2:]})
                                             for n, v in t.variants.items()}})


def test_each_precision_scored_once_against_fp32(fake_scorer):
    out = quality_probe.measure_table_quality(_table(["int8", "bf16"]))
    # reference first, then the others by name; int8 keeps float32 for what it does not quantize
    assert fake_scorer == [("/ckpt/smollm2-fp32", "float32"), ("/ckpt/smollm2-bf16", "bfloat16"),
                           ("/ckpt/smollm2-int8", "float32")]
    q8 = out.variants["v-int8"].quality
    assert q8.top1_agreement == 0.75 and q8.reference == "fp32"
    assert q8.mean_abs_logprob_diff == pytest.approx(0.1)
    assert out.variants["v-bf16"].quality.top1_agreement == 1.0
    assert out.variants["v-int8"].quality_score == 0.75


def test_reference_variant_gets_perfect_score(fake_scorer):
    out = quality_probe.measure_table_quality(_table(["fp32", "int8"]))
    assert out.variants["v-fp32"].quality.top1_agreement == 1.0
    assert out.variants["v-fp32"].quality.perplexity_ratio == 1.0


def test_int8_needs_the_embedded_model(fake_scorer):
    with pytest.raises(ProfileError, match="int8"):
        quality_probe.measure_table_quality(_table(["int8"]), model="/some/checkpoint")
