"""The profiler against a fake batching engine whose timings follow a known iteration model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaStats, SamplingParams, TokenChunk
from oserve.clock import SimClock
from oserve.errors import EngineStartError, ProfileError
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.profiler import ProfileConfig, Profiler, SweepConfig
from oserve.profiles.table import ProfileTable

TRUE = IterationTimeModel(a=0.02, b=4e-4, c=2e-8, d=0.015, e=2e-3, f=1e-6)


class FakeBatchReplica(Replica):
    """Fake continuous-batching engine on a SimClock: prefill-first iterations, each lasting
    exactly what ``TRUE`` says, every request emitting one token per iteration."""

    def __init__(self, spec: ReplicaSpec, clock: SimClock, backend: FakeBatchBackend) -> None:
        self.spec = spec
        self.replica_id = spec.variant
        self._clock = clock
        self._backend = backend
        self._new: list[list] = []  # [prompt_len, max_tokens, queue, generated]
        self._active: list[list] = []
        self._loop: asyncio.Task | None = None

    @property
    def state(self):  # noqa: ANN201
        return "ready"

    async def generate(self, request_id: str, prompt, params: SamplingParams) -> AsyncIterator[TokenChunk]:
        self._backend.requests += 1
        if self._backend.fail_after is not None and self._backend.requests > self._backend.fail_after:
            raise EngineStartError("fake crash", cause="engine_error")
        q: asyncio.Queue = asyncio.Queue()
        self._new.append([len(prompt), params.max_tokens, q, 0])
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())
        while True:
            chunk = await q.get()
            yield chunk
            if chunk.finished:
                return

    async def _run(self) -> None:
        await asyncio.sleep(0)
        while self._new or self._active:
            if self._new:
                batch, self._new = self._new, []
                dur = TRUE.a + sum(TRUE.b * r[0] + TRUE.c * r[0] ** 2 for r in batch)
                self._clock.advance_to(self._clock.now() + dur)
                self._active += batch
                emit = batch
            else:
                kv = sum(r[0] + r[3] for r in self._active)
                self._clock.advance_to(self._clock.now() + TRUE.decode_step_s(len(self._active), kv))
                emit = self._active
            for r in emit:
                r[3] += 1
                done = r[3] >= r[1]
                r[2].put_nowait(TokenChunk(" x", (7,), done, "length" if done else None, r[0], r[3]))
            self._active = [r for r in self._active if r[3] < r[1]]
            await asyncio.sleep(0)

    async def abort(self, request_id: str) -> None:
        return None

    async def stats(self) -> ReplicaStats:
        return ReplicaStats(running=len(self._active), extra={"peak_memory_bytes": 123_456_789})

    async def health(self) -> bool:
        return True

    async def drain(self, timeout_s: float) -> int:
        return 0

    async def stop(self) -> None:
        self._backend.stopped += 1

    def count_tokens(self, prompt) -> int:
        return len(prompt)


class FakeBatchBackend(Backend):
    name = "fake-batch"

    def __init__(self, clock: SimClock, start_s: float = 12.5, fail_after: int | None = None) -> None:
        self.clock = clock
        self.start_s = start_s
        self.fail_after = fail_after
        self.requests = 0
        self.started: list[ReplicaSpec] = []
        self.stopped = 0

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        self.started.append(spec)
        self.clock.advance_to(self.clock.now() + self.start_s)
        return FakeBatchReplica(spec, self.clock, self)


def _config() -> ProfileConfig:
    return ProfileConfig(
        model="fake/smollm2", arch="smollm2-135m", backend={"kind": "fake-batch"}, device_type="cpu",
        variants=[{"precision": "fp32", "devices_per_replica": 1, "max_num_seqs": 8, "max_model_len": 2048,
                   "max_num_batched_tokens": 2048},
                  {"precision": "bf16", "devices_per_replica": 2, "max_num_seqs": 8, "max_model_len": 2048,
                   "max_num_batched_tokens": 2048}],
        sweep=SweepConfig(prompt_tokens=[16, 64, 256, 512], repeats=1, batch_sizes=[1, 2, 4, 8],
                          decode_prompt_tokens=32, decode_output_tokens=8),
    )


def test_profiler_recovers_iteration_model(tmp_path) -> None:
    clock = SimClock()
    backend = FakeBatchBackend(clock)
    out = tmp_path / "p.json"
    table = asyncio.run(Profiler(backend, _config(), clock=clock, progress=False).run(out))
    assert table.source == "measured"
    assert set(table.variants) == {"smollm2-135m-fp32-1c-s8", "smollm2-135m-bf16-2c-s8"}
    v = table.variants["smollm2-135m-fp32-1c-s8"]
    for name in "abdef":
        assert getattr(v.iteration, name) == pytest.approx(getattr(TRUE, name), rel=0.02), name
    assert v.iteration.fit_error < 0.01
    assert v.start_time_s == pytest.approx(12.5)
    assert v.memory_per_device_bytes == 123_456_789
    assert backend.stopped == 2
    assert backend.started[1].cpu_cores == (0, 1) and backend.started[1].dtype == "bfloat16"
    assert ProfileTable.load(out) == table


def test_profiler_resumes_partial_sweep(tmp_path) -> None:
    clock = SimClock()
    out = tmp_path / "p.json"
    crashing = FakeBatchBackend(clock, fail_after=3)  # dies during the first variant's prefill sweep
    with pytest.raises(EngineStartError):
        asyncio.run(Profiler(crashing, _config(), clock=clock, progress=False).run(out))
    state = json.loads((tmp_path / "p.json.sweep.json").read_text())
    first = state["variants"]["smollm2-135m-fp32-1c-s8"]
    assert not first.get("done") and len(first["prefill"]) >= 1
    kept = len(first["prefill"])
    healthy = FakeBatchBackend(clock)
    table = asyncio.run(Profiler(healthy, _config(), clock=clock, progress=False).run(out))
    assert len(table.variants) == 2
    state = json.loads((tmp_path / "p.json.sweep.json").read_text())
    assert len(state["variants"]["smollm2-135m-fp32-1c-s8"]["prefill"]) == 4  # no duplicate points
    assert kept < 4
    # a finished sweep is not measured again
    again = FakeBatchBackend(clock)
    asyncio.run(Profiler(again, _config(), clock=clock, progress=False).run(out))
    assert again.started == []


def test_state_of_other_config_is_refused(tmp_path) -> None:
    out = tmp_path / "p.json"
    (tmp_path / "p.json.sweep.json").write_text(json.dumps({"config_digest": "other", "variants": {}}))
    clock = SimClock()
    with pytest.raises(ProfileError, match="another config"):
        asyncio.run(Profiler(FakeBatchBackend(clock), _config(), clock=clock, progress=False).run(out))
