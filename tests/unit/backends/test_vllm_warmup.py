"""VLLMBackend's warm-up before a replica reports ready: the one-token greedy check, then the
representative warm-up (random-sampled prompts of ``warmup_prompt_tokens``, alone and two at once).
The engine is a stand-in recording what it was sent (no vLLM engine starts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("vllm")

from oserve.backends.base import ReplicaSpec  # noqa: E402
from oserve.backends.vllm import VLLMBackend  # noqa: E402
from oserve.errors import ConfigError  # noqa: E402


class FakeEngine:
    """What ``VLLMReplica`` uses of vLLM's ``AsyncLLM``; ``calls`` records every request."""

    def __init__(self, max_model_len: int = 2048, vocab: int = 49152) -> None:
        self.model_config = SimpleNamespace(max_model_len=max_model_len, get_vocab_size=lambda: vocab)
        self.errored = False
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def get_tokenizer(self) -> None:
        return None

    async def generate(self, prompt: Any, params: Any, request_id: str):  # noqa: ANN201 - async generator
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        ids = prompt.get("prompt_token_ids") if isinstance(prompt, dict) else None
        self.calls.append({"id": request_id, "text": prompt if isinstance(prompt, str) else None, "ids": ids,
                           "temperature": params.temperature, "max_tokens": params.max_tokens,
                           "in_flight": self.in_flight})
        try:
            for k in range(params.max_tokens):
                await asyncio.sleep(0.01)  # one engine step
                done = k == params.max_tokens - 1
                yield SimpleNamespace(
                    outputs=[SimpleNamespace(text="x" * (k + 1), token_ids=list(range(k + 1)),
                                             finish_reason="length" if done else None)],
                    finished=done, prompt_token_ids=ids or [1])
        finally:
            self.in_flight -= 1

    async def abort(self, request_id: Any) -> None:
        return None

    def shutdown(self) -> None:
        return None


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine, **kw: Any) -> Any:
    backend = VLLMBackend(**kw)
    monkeypatch.setattr(backend, "_construct", lambda spec, recorder, registry: engine)
    spec = ReplicaSpec(variant="v", model=str(tmp_path), served_model_name="m", max_model_len=2048)
    return asyncio.run(backend.start_replica(spec, "r0"))


def test_replica_reports_ready_only_after_random_sampled_prompts_alone_and_batched(tmp_path, monkeypatch):
    engine = FakeEngine()
    replica = _start(tmp_path, monkeypatch, engine, warmup_prompt_tokens=128)
    first, *rest = engine.calls
    assert first["text"] == "Hello" and first["temperature"] == 0.0 and first["max_tokens"] == 1
    assert [len(c["ids"]) for c in rest] == [128, 64, 128]
    assert all(c["temperature"] == 1.0 and c["max_tokens"] == 2 for c in rest)
    assert rest[0]["in_flight"] == 1  # the first random-sampled batch is a lone request
    assert engine.max_in_flight == 2  # then two in one batch
    assert len({tuple(c["ids"]) for c in rest}) == 3  # distinct prompts: none served from the prefix cache
    assert all(0 <= t < 49152 for c in rest for t in c["ids"])
    assert replica.warmup_s is not None and replica.warmup_s > 0
    assert replica.state == "ready"


def test_warmup_prompt_is_clipped_to_the_context_and_zero_keeps_only_the_check(tmp_path, monkeypatch):
    engine = FakeEngine(max_model_len=50)
    _start(tmp_path, monkeypatch, engine, warmup_prompt_tokens=4096)
    assert [len(c["ids"]) for c in engine.calls[1:]] == [48, 24, 48]

    engine = FakeEngine()
    replica = _start(tmp_path, monkeypatch, engine, warmup_prompt_tokens=0)
    assert [c["text"] for c in engine.calls] == ["Hello"]
    assert replica.warmup_s is not None and replica.warmup_s < 0.05


@pytest.mark.parametrize("bad", [-1, 1.5, True, "128"])
def test_bad_warmup_prompt_tokens_is_a_config_error_naming_the_field(bad):
    with pytest.raises(ConfigError) as err:
        VLLMBackend(warmup_prompt_tokens=bad)
    assert err.value.field == "backend.params.warmup_prompt_tokens" and ">= 0" in str(err.value)
