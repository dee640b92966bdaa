"""The simulated replica against the iteration-time model and vLLM v1's scheduling rules."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.profiles.iteration import IterationTimeModel
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.request import SimRequest

MODEL = IterationTimeModel(a=0.004, b=2e-5, c=1e-9, d=0.01, e=1e-4, f=5e-8)


def params(**kw) -> ReplicaParams:
    base = dict(variant="v", iteration=MODEL, max_num_seqs=8, max_num_batched_tokens=512, max_model_len=4096,
                kv_capacity_tokens=16 * 1024, block_size=16)
    base.update(kw)
    return ReplicaParams(**base)


def drive(rep: SimReplica, reqs: list[SimRequest], check=None) -> float:
    """Run a replica alone until idle (all requests added at time 0); returns the end time."""
    for q in reqs:
        rep.add(q)
    t = 0.0
    end = rep.start_iteration(t)
    while end is not None:
        t = end
        rep.finish_iteration(t)
        if check:
            check(rep)
        end = rep.start_iteration(t)
    return t


@pytest.mark.parametrize("fast_forward", [True, False])
def test_single_request_latency_equals_prefill_plus_decode_steps(fast_forward: bool) -> None:
    prompt, out = 300, 20
    q = SimRequest(0, 0.0, prompt, out)
    drive(SimReplica("r", params(), fast_forward=fast_forward), [q])
    ttft = MODEL.mixed_step_s(0, 0, prompt)
    assert q.first_token_s == pytest.approx(ttft, rel=1e-12)
    # decode step k (k = 1..out-1) reads the context of prompt + k tokens
    decode = sum(MODEL.decode_step_s(1, prompt + k) for k in range(1, out))
    assert q.finish_s == pytest.approx(ttft + decode, rel=1e-12)
    assert q.generated == out and q.preemptions == 0


def test_chunked_prefill_splits_the_prompt_by_the_token_budget() -> None:
    q = SimRequest(0, 0.0, 1200, 1)
    drive(SimReplica("r", params(max_num_batched_tokens=512)), [q])
    # each chunk pays the fixed cost, b per token, and its share of the prompt's quadratic cost
    expected = sum(MODEL.a + MODEL.d + MODEL.b * t + MODEL.c * ((p + t) ** 2 - p * p)
                   for p, t in ((0, 512), (512, 512), (1024, 176)))
    assert q.first_token_s == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(3 * (MODEL.a + MODEL.d) + MODEL.b * 1200 + MODEL.c * 1200**2, rel=1e-12)
    assert q.finish_s == q.first_token_s


def test_decodes_are_scheduled_before_a_new_prefill_and_share_the_budget() -> None:
    rep = SimReplica("r", params(max_num_batched_tokens=100), fast_forward=False)
    a = SimRequest(0, 0.0, 50, 10)
    rep.add(a)
    t = rep.start_iteration(0.0)
    rep.finish_iteration(t)  # a prefilled, now decoding
    b = SimRequest(1, t, 500, 2)
    rep.add(b)
    end = rep.start_iteration(t)
    # one decode (context 51 tokens) + a 99-token chunk of b's prompt
    assert end - t == pytest.approx(MODEL.decode_step_s(1, 51) + MODEL.b * 99 + MODEL.c * 99 * 99, rel=1e-12)


def test_prefills_batched_together_pay_the_quadratic_cost_per_sequence() -> None:
    rep = SimReplica("r", params(max_num_batched_tokens=2048))
    for i in range(3):
        rep.add(SimRequest(i, 0.0, 400, 5))
    end = rep.start_iteration(0.0)
    assert end == pytest.approx(MODEL.a + MODEL.d + MODEL.b * 1200 + MODEL.c * 3 * 400**2, rel=1e-12)


def test_max_num_seqs_caps_the_running_batch() -> None:
    rep = SimReplica("r", params(max_num_seqs=3))
    reqs = [SimRequest(i, 0.0, 20, 5) for i in range(5)]

    def check(r: SimReplica) -> None:
        assert len(r.running) <= 3

    drive(rep, reqs, check)
    assert all(q.finish_s is not None for q in reqs)
    # the last two only start once the first three finished
    assert min(q.first_token_s for q in reqs[3:]) > max(q.finish_s for q in reqs[:3]) - 1e-12


@pytest.mark.parametrize("fast_forward", [True, False])
def test_kv_exhaustion_preempts_the_newest_request_by_recompute(fast_forward: bool) -> None:
    # 4 blocks of 16 tokens; each request grows to 16 + 30 = 46 tokens (3 blocks): both cannot fit.
    p = params(kv_capacity_tokens=64)
    rep = SimReplica("r", p, fast_forward=fast_forward)
    old, new = SimRequest(0, 0.0, 16, 30), SimRequest(1, 0.0, 16, 30)

    def check(r: SimReplica) -> None:
        assert 0 <= r.free_blocks <= p.total_blocks
        assert sum(q.blocks for q in r.running) + r.free_blocks == p.total_blocks

    drive(rep, [old, new], check)
    assert (old.preemptions, new.preemptions, rep.preemptions) == (0, 1, 1)
    assert old.generated == new.generated == 30
    assert new.finish_s > old.finish_s
    # with room for both, nothing is preempted
    big = SimReplica("r", params(kv_capacity_tokens=96), fast_forward=fast_forward)
    a, b = SimRequest(0, 0.0, 16, 30), SimRequest(1, 0.0, 16, 30)
    drive(big, [a, b])
    assert a.preemptions == b.preemptions == 0


def test_recompute_after_preemption_prefills_prompt_and_generated_tokens() -> None:
    p = params(kv_capacity_tokens=64)
    rep = SimReplica("r", p, fast_forward=False)
    old, new = SimRequest(0, 0.0, 16, 30), SimRequest(1, 0.0, 16, 30)
    for q in (old, new):
        rep.add(q)
    t = 0.0
    seen = None
    while True:
        end = rep.start_iteration(t)
        if end is None:
            break
        if seen is None and new in rep.running and new.computed == 0 and new.preemptions == 1:
            seen = dict(rep._sched)[new]  # the recompute's first chunk
        t = end
        rep.finish_iteration(t)
    # the older request's 33rd token needs a third block while both hold 2 of the 4: the newer one,
    # then at 16 prompt + 17 generated tokens, is preempted and recomputes all 33 in one chunk
    assert seen == 33


def test_fast_forward_gives_the_same_records_as_step_by_step() -> None:
    rng = np.random.default_rng(3)
    results = []
    for ff in (True, False):
        rep = SimReplica("r", params(kv_capacity_tokens=2048, max_num_seqs=6), fast_forward=ff)
        reqs = [SimRequest(i, 0.0, int(rng.integers(10, 400)), int(rng.integers(1, 120))) for i in range(12)]
        rng = np.random.default_rng(3)
        drive(rep, reqs)
        results.append([(q.first_token_s, q.finish_s, q.preemptions) for q in reqs])
    for (f1, e1, p1), (f2, e2, p2) in zip(*results, strict=True):
        assert f1 == pytest.approx(f2, rel=1e-12) and e1 == pytest.approx(e2, rel=1e-12) and p1 == p2


def test_cut_ends_a_fast_forwarded_run_at_the_next_step_boundary() -> None:
    rep = SimReplica("r", params())
    q = SimRequest(0, 0.0, 10, 50)
    rep.add(q)
    rep.finish_iteration(rep.start_iteration(0.0) or 0.0)
    t0 = q.first_token_s
    end = rep.start_iteration(t0)
    assert rep._ff_steps == 49
    step1 = t0 + MODEL.decode_step_s(1, 11)
    new_end = rep.cut(step1 + 1e-6)  # during step 2
    step2 = step1 + MODEL.decode_step_s(1, 12)
    assert new_end == pytest.approx(step2, rel=1e-12) and new_end < end
    rep.finish_iteration(new_end)
    assert q.generated == 3 and q.computed == 12


def test_params_reject_a_kv_cache_without_a_block() -> None:
    with pytest.raises(ConfigError) as ei:
        params(kv_capacity_tokens=8)
    assert ei.value.field == "kv_cache_bytes"
