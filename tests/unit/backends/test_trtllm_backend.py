"""TRTLLMBackend: the spec mapping, the clear error without TensorRT-LLM, and the conformance suite
on a *fake* ``tensorrt_llm`` module (a stand-in written from the LLM API's documentation, so this
checks oserve's side of the mapping only). The same suite on the real library runs in
``tests/integration/test_backend_conformance.py`` where ``tensorrt_llm`` imports and a GPU is present."""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.trtllm import TRTLLMBackend, llm_kwargs, trtllm_available
from oserve.errors import EngineStartError
from oserve.testing.backend_check import acheck_backend


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    return str(tmp_path)


def spec(model: str, **kw: object) -> ReplicaSpec:
    base: dict = dict(variant="trt-tiny", model=model, served_model_name="m", dtype="bfloat16", max_model_len=256,
                      max_num_seqs=4)
    base.update(kw)
    return ReplicaSpec(**base)


def test_llm_kwargs_map_the_variant() -> None:
    kw = llm_kwargs(spec("/m", tensor_parallel_size=2, pipeline_parallel_size=2, quantization="fp8",
                         max_num_batched_tokens=4096, memory_utilization=0.8))
    assert kw == dict(model="/m", dtype="bfloat16", tensor_parallel_size=2, pipeline_parallel_size=2, max_batch_size=4,
                      max_seq_len=256, max_num_tokens=4096, kv_cache_free_gpu_memory_fraction=0.8, quant_algo="FP8")
    with pytest.raises(EngineStartError, match="allowed: .*fp8"):
        llm_kwargs(spec("/m", quantization="bitsandbytes"))


@pytest.mark.skipif(trtllm_available(), reason="tensorrt_llm is installed here")
async def test_without_tensorrt_llm_start_is_a_clear_error(model_dir: str) -> None:
    with pytest.raises(EngineStartError, match="tensorrt_llm is not installed") as info:
        await TRTLLMBackend().start_replica(spec(model_dir), "r0")
    assert info.value.cause == "engine_error"


# -- a fake tensorrt_llm -------------------------------------------------------------------------
class _FakeTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(w) for w in text.split()]


@dataclass
class _Completion:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    _last_ids: int = 0
    _last_text: int = 0

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_ids:]

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text:]


class _FakeResult:
    """Stands in for ``RequestOutput`` of ``generate_async(streaming=True)``: async-iterable, ``abort()``."""

    def __init__(self, llm: _FakeLLM, prompt_ids: list[int], max_tokens: int) -> None:
        self.llm, self.prompt_token_ids, self.max_tokens = llm, prompt_ids, max_tokens
        self.outputs = [_Completion()]
        self.finished = False
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True

    async def _run(self):
        self.llm.active += 1
        try:
            c = self.outputs[0]
            while not self.finished:
                await asyncio.sleep(0.002)
                c._last_ids, c._last_text = len(c.token_ids), len(c.text)
                if self._aborted:
                    c.finish_reason, self.finished = "cancelled", True
                else:
                    c.token_ids.append(7)
                    c.text += " x"
                    if len(c.token_ids) >= self.max_tokens:
                        c.finish_reason, self.finished = "length", True
                yield self
        finally:
            self.llm.active -= 1

    def __aiter__(self):
        return self._run()


class _FakeLLM:
    def __init__(self, model: str, max_seq_len: int, **kw: object) -> None:
        self.max_seq_len, self.kwargs, self.active = max_seq_len, kw, 0
        self.tokenizer = _FakeTokenizer()

    def generate_async(self, prompt, sampling_params, streaming: bool = False) -> _FakeResult:
        ids = prompt if isinstance(prompt, list) else self.tokenizer.encode(prompt)
        if len(ids) >= self.max_seq_len:
            raise ValueError(f"prompt length {len(ids)} exceeds max_seq_len {self.max_seq_len}")
        return _FakeResult(self, ids, sampling_params.max_tokens)

    async def get_stats_async(self, timeout: float):
        yield {"numActiveRequests": self.active, "numQueuedRequests": 0,
               "kvCacheStats": {"usedNumBlocks": self.active, "maxNumBlocks": 64}}

    def shutdown(self) -> None:
        self.active = 0


@dataclass
class _FakeSamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    ignore_eos: bool = False
    n: int = 1


@pytest.fixture
def fake_tensorrt_llm(monkeypatch: pytest.MonkeyPatch):
    mod = types.ModuleType("tensorrt_llm")
    mod.LLM, mod.SamplingParams = _FakeLLM, _FakeSamplingParams
    api = types.ModuleType("tensorrt_llm.llmapi")
    api.KvCacheConfig = lambda **kw: ("kv", kw)
    api.QuantConfig = lambda **kw: ("quant", kw)
    api.QuantAlgo = types.SimpleNamespace(FP8="FP8")
    mod.llmapi = api
    monkeypatch.setitem(sys.modules, "tensorrt_llm", mod)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", api)
    return mod


async def test_the_backend_passes_the_suite_on_a_fake_tensorrt_llm(fake_tensorrt_llm, model_dir: str) -> None:
    report = await acheck_backend(TRTLLMBackend, spec(model_dir), long_max_tokens=200, drain_timeout_s=0.05,
                                  step_timeout_s=10, check_restart=True)
    assert report.steps[-1] == "release"


async def test_quantization_and_memory_reach_the_llm(fake_tensorrt_llm, model_dir: str) -> None:
    replica = await TRTLLMBackend().start_replica(spec(model_dir, quantization="fp8", memory_utilization=0.5), "r0")
    try:
        kw = replica._llm.kwargs
        assert kw["quant_config"] == ("quant", {"quant_algo": "FP8"})
        assert kw["kv_cache_config"] == ("kv", {"free_gpu_memory_fraction": 0.5})
        assert kw["enable_iter_perf_stats"] is True
    finally:
        await replica.stop()
