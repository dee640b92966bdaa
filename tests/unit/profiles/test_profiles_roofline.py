"""Roofline model against hand-computed numbers and its qualitative behaviour."""

from __future__ import annotations

import pytest

from oserve.profiles.roofline import Efficiency, roofline_model
from oserve.profiles.variants import Variant

EFF = Efficiency(mfu=0.5, mbu=0.8, step_overhead_s=0.002, per_seq_overhead_s=0.0)


def test_llama2_7b_a100_80gb_tp1_hand_computed() -> None:
    v = Variant(model="llama-2-7b", precision="fp16", tp=1, device_type="a100-80gb")
    m = roofline_model(v, EFF)
    # weights: 6,476,005,376 linear + 262,410,240 other params, all 2 bytes = 13,476,831,232 B
    weights = 13_476_831_232
    assert v.weights_bytes == weights
    bw = 2039e9 * 0.8  # A100-80GB HBM2e at 80% MBU
    flops = 312e12 * 0.5  # FP16 dense at 50% MFU
    assert m.d == pytest.approx(weights / bw + 0.002, rel=1e-6)  # 10.26 ms
    assert m.d == pytest.approx(0.0102619, rel=1e-4)
    assert m.b == pytest.approx(2 * 6_476_005_376 / flops, rel=1e-6)  # 83.0 us per prompt token
    assert m.f == pytest.approx(524_288 / bw, rel=1e-6)  # 0.321 us per KV token
    assert m.c == pytest.approx(2 * 32 * 4096 / flops, rel=1e-6)
    # decode step of 32 sequences holding 32 x 1024 tokens: 10.26 ms + 32 e + 10.5 ms
    step = m.decode_step_s(32, 32 * 1024)
    assert step == pytest.approx(m.d + 32 * m.e + 32 * 1024 * 524_288 / bw, rel=1e-9)


def test_tp_adds_allreduce_and_splits_weights() -> None:
    v1 = roofline_model(Variant(model="llama-2-7b", tp=1, device_type="a100-80gb"), EFF)
    v2 = roofline_model(Variant(model="llama-2-7b", tp=2, device_type="a100-80gb"), EFF)
    # half the weight read per device, plus 2 all-reduces x 32 layers x 33.6 us latency
    assert v2.d == pytest.approx((v1.d - 0.002) / 2 + 0.002 + 64 * 3.36e-5, rel=1e-6)
    assert v2.b < v1.b


def test_int4_reads_fewer_bytes_but_computes_slower() -> None:
    fp16 = roofline_model(Variant(model="llama-3-8b", precision="fp16"), EFF)
    int4 = roofline_model(Variant(model="llama-3-8b", precision="int4"), EFF)
    assert int4.d < 0.5 * fp16.d  # small batch: memory-bound, 4-bit weights win
    assert int4.b > fp16.b  # prefill: dequantisation makes the GEMMs slower
    assert int4.e > fp16.e


def test_pp_does_not_cut_weight_read_but_splits_batch_cost() -> None:
    tp = roofline_model(Variant(model="llama-2-70b", precision="int8", tp=2), EFF)
    pp = roofline_model(Variant(model="llama-2-70b", precision="int8", tp=1, pp=2), EFF)
    assert pp.d > tp.d  # every micro-batch re-reads its stage's weights: the bubble cost
    assert pp.f == pytest.approx(tp.f, rel=1e-9)
