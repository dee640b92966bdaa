"""Engine start failures raise a typed EngineStartError naming the cause, and nothing hangs."""

from __future__ import annotations

import asyncio
import os

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.embedded_model import ensure_default_model
from oserve.backends.vllm import VLLMBackend
from oserve.errors import EngineStartError

pytestmark = pytest.mark.engine


def _spec(**kw: object) -> ReplicaSpec:
    base = dict(variant="fp32", model=str(ensure_default_model()), served_model_name="m", dtype="float32",
                max_model_len=512, kv_cache_bytes=1 << 28, cpu_cores=(0,))
    base.update(kw)
    return ReplicaSpec(**base)


def _start(spec: ReplicaSpec, backend: VLLMBackend | None = None) -> EngineStartError:
    backend = backend or VLLMBackend(start_timeout_s=240)
    with pytest.raises(EngineStartError) as info:
        asyncio.run(asyncio.wait_for(backend.start_replica(spec, "r-test"), timeout=300))
    return info.value


def test_bad_model_path() -> None:
    err = _start(_spec(model="/nonexistent/checkpoint"))
    assert err.cause == "bad_model_path" and "/nonexistent/checkpoint" in str(err)


def test_core_that_does_not_exist() -> None:
    err = _start(_spec(cpu_cores=(os.cpu_count() or 1,)))
    assert err.cause == "resource_busy"


def test_kv_cache_larger_than_memory() -> None:
    err = _start(_spec(kv_cache_bytes=1 << 50))
    assert err.cause == "out_of_memory"


def test_engine_that_fails_inside_vllm_is_reported_not_hung() -> None:
    # A checkpoint folder without weights: the path exists, the engine itself fails.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "config.json"), "w").write("{}")
        err = _start(_spec(model=d))
    assert err.cause in {"engine_error", "bad_model_path"}
