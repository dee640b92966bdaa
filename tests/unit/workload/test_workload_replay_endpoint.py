"""Replay a short real Azure slice against oserve's own endpoint (FakeBackend replicas, real uvicorn
HTTP on 127.0.0.1) with a WorkloadMonitor attached: the replay's records and the monitor agree."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("oserve.server")
pytest.importorskip("oserve.server.router")

import uvicorn  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from oserve.backends.base import ReplicaSpec  # noqa: E402
from oserve.clock import WallClock  # noqa: E402
from oserve.server import create_app  # noqa: E402
from oserve.server.router import Router  # noqa: E402
from oserve.testing.fake_backend import FakeBackend, FakeReplicaOptions  # noqa: E402
from oserve.types import DEFAULT_SCHEME  # noqa: E402
from oserve.workload.loaders import load_trace  # noqa: E402
from oserve.workload.monitor import WorkloadMonitor  # noqa: E402
from oserve.workload.replay import replay  # noqa: E402
from oserve.workload.trace import Trace  # noqa: E402
from oserve.workload.transforms import merge, scale_tokens, window  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "data" / "traces" / "azure_llm_2023"


def test_replay_real_slice_against_oserve_endpoint():
    code = load_trace(DATA / "AzureLLMInferenceTrace_code.csv")
    conv = load_trace(DATA / "AzureLLMInferenceTrace_conv.csv")
    both = merge([code, conv])
    # 3 s of the merged real trace starting at minute 2, token lengths scaled down to fit 1024 tokens
    tr = scale_tokens(window(both, 120.0, 123.0), 0.1, max_total=1000)
    tr = Trace(tr.arrival_s, tr.input_tokens, np.minimum(tr.output_tokens, 12), tr.source, name="azure-slice")

    async def go():
        backend = FakeBackend(FakeReplicaOptions(token_delay_s=0.002))
        router = Router(retry_after_s=1.0)
        for i in range(2):
            spec = ReplicaSpec(variant="v0", model="fake", served_model_name="m", max_model_len=1024, max_num_seqs=64)
            router.add(await backend.start_replica(spec, f"r{i}"))
        monitor = WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=60.0)
        app = create_app(router, served_model_names=["m"], monitor=monitor)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            res = await replay(tr, f"http://127.0.0.1:{port}", slo="ttft=2,tpot=0.2")
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
        return res, monitor

    res, monitor = asyncio.run(go())
    s = res.summary
    assert s["requests"] == len(tr) > 5
    assert s["completed"] == len(tr), s["errors"]
    assert s["model"] == "m"
    # the fake replicas count a token per whitespace word: the fallback prompt has n - 1 words
    assert all(r.prompt_tokens == r.input_tokens - 1 for r in res.records)
    assert [r.output_tokens for r in res.records] == tr.output_tokens.tolist()  # ignore_eos honoured
    # the monitor saw every admission, in the classes the replay assigned
    assert monitor.in_flight.sum() == 0
    ts, rates = monitor.rate_history()
    assert rates.sum() <= len(tr)  # complete seconds only; the current one is still open
    expected = np.bincount(DEFAULT_SCHEME.classify_many(tr.input_tokens - 1, tr.output_tokens), minlength=4)
    text = generate_latest(monitor.registry).decode()
    for name, count in zip(DEFAULT_SCHEME.names, expected, strict=True):
        assert f'oserve_requests_admitted_total{{request_class="{name}"}} {float(count)}' in text
