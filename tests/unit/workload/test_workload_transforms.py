"""Property tests for request classification and trace transforms, plus rate binning."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oserve.errors import ConfigError, TraceError
from oserve.types import DEFAULT_SCHEME, ClassScheme
from oserve.workload.binning import rates_per_class
from oserve.workload.trace import Trace
from oserve.workload.transforms import clip_tokens, compress, merge, scale_rate, scale_tokens, window

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def traces(draw, min_size: int = 1, max_size: int = 60, tag: str | None = None):
    n = draw(st.integers(min_size, max_size))
    gaps = draw(st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=n - 1, max_size=n - 1))
    t = np.concatenate([[0.0], np.cumsum(gaps)])
    inp = np.asarray(draw(st.lists(st.integers(0, 20000), min_size=n, max_size=n)), dtype=np.int64)
    out = np.asarray(draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n)), dtype=np.int64)
    src = np.full(n, tag, dtype=object) if tag else None
    return Trace(t, inp, out, source=src, name=tag or "t", meta={"t0_s": draw(st.floats(0, 100)), "clock": "posix"})


@SETTINGS
@given(st.integers(0, 100_000), st.integers(0, 100_000))
def test_classify_respects_ranges_and_matches_vectorised(i, o):
    c = DEFAULT_SCHEME.classify(i, o)
    assert c.input_range[0] <= i < c.input_range[1]
    assert c.output_range[0] <= o < c.output_range[1]
    assert DEFAULT_SCHEME.classify_many(np.array([i]), np.array([o]))[0] == c.index


@SETTINGS
@given(st.lists(st.integers(2, 50_000), min_size=1, max_size=4, unique=True).map(sorted), st.integers(0, 60_000))
def test_classify_any_scheme(edges, i):
    # each expected length at its bucket's lower edge (1 token in [0, edges[0])): inside its own bucket
    scheme = ClassScheme(input_edges=tuple(edges), output_edges=(256,),
                         input_names=tuple(f"in{j}" for j in range(len(edges) + 1)),
                         expected_input_tokens=(1, *edges))
    c = scheme.classify(i, None)  # no max_tokens: the short-output bucket's expected length
    assert c.input_range[0] <= i < c.input_range[1]
    assert c.output_range == (0, 256)


@SETTINGS
@given(traces(tag="a"), traces(tag="b"), traces(tag="c"))
def test_merge_preserves_every_request(a, b, c):
    m = merge([a, b, c])
    assert len(m) == len(a) + len(b) + len(c)
    assert np.all(np.diff(m.arrival_s) >= 0) and m.arrival_s[0] == 0.0

    def rows(tr):
        return Counter(zip(tr.input_tokens.tolist(), tr.output_tokens.tolist(), tr.source.tolist(), strict=True))

    assert rows(m) == rows(a) + rows(b) + rows(c)
    # each source's own gaps survive the merge (one clock)
    for tr in (a, b, c):
        sub = m.arrival_s[m.source == tr.name]
        assert np.allclose(np.diff(sub), np.diff(tr.arrival_s), atol=1e-6)


def test_merge_aligns_on_common_clock_and_tags():
    a = Trace(np.array([0.0, 1.0]), np.array([1, 2]), np.array([1, 1]), meta={"t0_s": 100.0, "clock": "posix"})
    b = Trace(np.array([0.0, 1.0]), np.array([3, 4]), np.array([1, 1]), meta={"t0_s": 100.5, "clock": "posix"})
    m = merge([a, b], tags=["code", "conv"])
    assert m.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert m.source.tolist() == ["code", "conv", "code", "conv"]
    assert m.meta["t0_s"] == 100.0
    s = merge([a, b], tags=["x", "y"], align="start")
    assert s.arrival_s.tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ConfigError):
        merge([a, b], tags=["only-one"])


@SETTINGS
@given(traces(min_size=2), st.floats(0.01, 100.0))
def test_compress_scales_every_gap(tr, factor):
    c = compress(tr, factor)
    # float64 differences of absolute times: error bound relative to the largest time
    atol = 1e-12 * (1.0 + float(c.arrival_s[-1]))
    assert np.allclose(np.diff(c.arrival_s), np.diff(tr.arrival_s) / factor, rtol=1e-9, atol=atol)
    assert np.array_equal(c.input_tokens, tr.input_tokens)
    assert c.duration_s == pytest.approx(tr.duration_s / factor)


@SETTINGS
@given(traces(min_size=1), st.floats(0.05, 4.0), st.integers(0, 2**31))
def test_scale_rate_is_seeded(tr, factor, seed):
    try:
        a = scale_rate(tr, factor, seed)
    except TraceError:  # thinning may keep nothing of a tiny trace
        return
    b = scale_rate(tr, factor, seed)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.input_tokens, b.input_tokens)
    assert np.all(np.diff(a.arrival_s) >= 0)
    assert a.arrival_s[-1] <= tr.arrival_s[-1] + 1e-9  # time axis kept


@pytest.mark.parametrize("factor", [0.3, 0.5, 1.0, 1.7, 3.0])
def test_scale_rate_is_proportional(factor):
    n = 20_000
    tr = Trace(np.arange(n) * 0.1, np.full(n, 100), np.full(n, 10))
    counts = [len(scale_rate(tr, factor, seed)) for seed in range(3)]
    frac = factor - np.floor(factor) if factor >= 1 else factor
    sigma = np.sqrt(n * frac * (1 - frac))  # binomial spread of the random part
    for c in counts:
        assert abs(c - factor * n) <= 5 * sigma + 1e-9
    if frac > 0:
        assert len(set(counts)) > 1  # different seeds, different draws


@SETTINGS
@given(traces(min_size=2), st.floats(0.05, 3.5), st.floats(0.0, 1.5), st.integers(0, 2**31))
def test_scale_rate_is_nested_in_the_factor(tr, a, extra, seed):
    # common random numbers: a larger factor only adds requests, at the same times
    b = a + extra
    try:
        small = scale_rate(tr, a, seed)
    except TraceError:
        return
    big = scale_rate(tr, b, seed)
    # thinning keeps the time axis; duplicating rebases it on the first request
    t0_small = 0.0 if a < 1 else tr.arrival_s[0]
    t0_big = 0.0 if b < 1 else tr.arrival_s[0]
    pairs_big = sorted(zip(np.round(big.arrival_s + t0_big, 9), big.input_tokens, strict=True))
    pairs_small = sorted(zip(np.round(small.arrival_s + t0_small, 9), small.input_tokens, strict=True))
    assert len(pairs_small) <= len(pairs_big)
    remaining = list(pairs_big)
    for p in pairs_small:
        remaining.remove(p)  # ValueError if the smaller trace has a request the larger one lacks


def test_scale_rate_duplicates_lie_in_gap():
    tr = Trace(np.array([0.0, 10.0, 20.0]), np.array([1, 2, 3]), np.array([1, 1, 1]))
    d = scale_rate(tr, 2.0, seed=1)
    assert len(d) == 6
    for tok, lo, hi in ((1, 0.0, 10.0), (2, 10.0, 20.0)):
        times = d.arrival_s[d.input_tokens == tok]
        assert len(times) == 2 and np.all((times >= lo) & (times <= hi))


@SETTINGS
@given(traces(), st.floats(0, 100), st.floats(0.1, 100))
def test_window_keeps_exactly_the_window(tr, start, length):
    mask = (tr.arrival_s >= start) & (tr.arrival_s < start + length)
    if not mask.any():
        with pytest.raises(TraceError):
            window(tr, start, start + length)
        return
    w = window(tr, start, start + length)
    assert len(w) == int(mask.sum()) and w.arrival_s[0] == 0.0
    assert np.allclose(w.arrival_s, tr.arrival_s[mask] - tr.arrival_s[mask][0])


@SETTINGS
@given(traces(), st.integers(1, 5000), st.integers(1, 500), st.integers(2, 4096))
def test_clip_tokens_bounds(tr, max_in, max_out, max_total):
    c = clip_tokens(tr, max_in, max_out, max_total)
    assert np.all(c.input_tokens <= max_in) and np.all(c.output_tokens <= max_out)
    assert np.all(c.input_tokens + c.output_tokens <= max_total)
    assert np.all(c.input_tokens >= np.minimum(tr.input_tokens, 1))


def test_scale_tokens_and_errors():
    tr = Trace(np.array([0.0, 1.0]), np.array([1000, 3]), np.array([100, 1]))
    s = scale_tokens(tr, 0.25, max_total=200)
    assert s.input_tokens.tolist() == [175, 1] and s.output_tokens.tolist() == [25, 1]  # input cut first
    s2 = scale_tokens(tr, 0.1)
    assert s2.input_tokens.tolist() == [100, 1] and s2.output_tokens.tolist() == [10, 1]
    with pytest.raises(ConfigError):
        scale_tokens(tr, 0.0)
    with pytest.raises(ConfigError):
        compress(tr, -1)
    with pytest.raises(ConfigError):
        clip_tokens(tr, max_input=0)


def test_rates_per_class_exact():
    # class 0 (short/short) at 2 req/s for 10 s, class 3 (long/long) at 1 req/s during 5..10 s
    t0 = np.arange(20) * 0.5
    t3 = 5.0 + np.arange(5) * 1.0
    t = np.concatenate([t0, t3])
    inp = np.concatenate([np.full(20, 100), np.full(5, 3000)])
    out = np.concatenate([np.full(20, 10), np.full(5, 300)])
    order = np.argsort(t, kind="stable")
    tr = Trace(t[order], inp[order], out[order])
    ts, rates, mean_in, mean_out = rates_per_class(tr, DEFAULT_SCHEME, window_s=5.0, include_partial=False)
    assert ts.tolist() == [0.0]  # [5, 9.5] is a partial second bin, dropped by default
    one = Trace(np.array([0.0]), np.array([10]), np.array([10]))
    ts1, r1, _, _ = rates_per_class(one, DEFAULT_SCHEME, window_s=60.0)
    assert ts1.tolist() == [0.0] and r1[0, 0] == pytest.approx(1 / 60)
    ts, rates, mean_in, mean_out = rates_per_class(tr, DEFAULT_SCHEME, window_s=5.0, include_partial=True)
    assert ts.tolist() == [0.0, 5.0]
    assert rates[0].tolist() == [2.0, 0.0, 0.0, 0.0]
    assert rates[1, 0] == pytest.approx(10 / 4.5) and rates[1, 3] == pytest.approx(5 / 4.5)
    assert mean_in[1, 3] == 3000 and mean_out[1, 0] == 10
    assert np.isnan(mean_in[0, 3])
    _, _, filled, _ = rates_per_class(tr, DEFAULT_SCHEME, window_s=5.0, fill_empty="expected", include_partial=True)
    assert filled[0, 3] == DEFAULT_SCHEME.classes[3].expected_input_tokens
    with pytest.raises(ConfigError):
        rates_per_class(tr, DEFAULT_SCHEME, window_s=0)


def test_rates_per_class_counts_every_request():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 1000, 5000))
    t -= t[0]
    tr = Trace(t, rng.integers(1, 8000, 5000), rng.integers(1, 1000, 5000))
    ts, rates, _, _ = rates_per_class(tr, DEFAULT_SCHEME, window_s=60.0, include_partial=True)
    lengths = np.minimum(60.0, tr.duration_s - ts)
    assert float((rates * lengths[:, None]).sum()) == pytest.approx(5000)
