"""Quality of a variant against the reference precision (pure parts; the engine part is in integration)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from oserve.profiles.quality import TextScores, VariantQuality, compare, parse_prompt_logprobs, reference_text


@dataclass
class _Lp:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int


def test_reference_text_is_shipped():
    text = reference_text()
    assert len(text.split()) > 300


def test_compare_with_itself_is_perfect():
    s = TextScores((1, 2, 3, 4), (-1.0, -2.0, -0.5), (2, 9, 4))
    q = compare(s, s)
    assert (q.mean_abs_logprob_diff, q.perplexity_ratio, q.top1_agreement, q.tokens) == (0.0, 1.0, 1.0, 3)
    assert q.score == 1.0


def test_compare_by_hand():
    ref = TextScores((1, 2, 3, 4, 5), (-1.0, -2.0, -0.5, -1.5), (2, 3, 7, 5))
    var = TextScores((1, 2, 3, 4, 5), (-1.2, -1.8, -1.5, -1.5), (2, 8, 7, 6))
    q = compare(ref, var, "fp32")
    assert q.mean_abs_logprob_diff == pytest.approx((0.2 + 0.2 + 1.0 + 0.0) / 4)
    assert q.perplexity_ratio == pytest.approx(math.exp((-5.0 - -6.0) / 4))
    assert q.top1_agreement == 0.5
    assert q.reference == "fp32"


def test_compare_rejects_other_tokens():
    with pytest.raises(ValueError, match="different token sequences"):
        compare(TextScores((1, 2), (-1.0,), (2,)), TextScores((1, 3), (-1.0,), (3,)))


def test_parse_prompt_logprobs():
    ids = [5, 6, 7]
    lps = [None, {6: _Lp(-0.5, 1)}, {7: _Lp(-2.0, 3), 9: _Lp(-0.1, 1)}]
    s = parse_prompt_logprobs(ids, lps)
    assert s.logprobs == (-0.5, -2.0)
    assert s.top1_ids == (6, 9)


@pytest.mark.parametrize(("ids", "lps", "match"), [
    ([5, 6], [None], "entries"),
    ([5, 6], [None, {9: _Lp(-0.1, 1)}], "lacks the prompt token"),
    ([5, 6], [None, {6: _Lp(-0.1, 2)}], "no rank-1"),
])
def test_parse_rejects_malformed(ids, lps, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt_logprobs(ids, lps)


def test_text_scores_shape_checked():
    with pytest.raises(ValueError, match="N-1"):
        TextScores((1, 2, 3), (-1.0,), (2, 3))


def test_variant_quality_ranges():
    with pytest.raises(ValueError):
        VariantQuality(reference="fp32", tokens=10, mean_abs_logprob_diff=0.1, perplexity_ratio=1.0,
                       top1_agreement=1.2)
