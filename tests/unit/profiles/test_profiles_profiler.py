"""The profiler against a fake batching engine whose timings follow a known iteration model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaStats, SamplingParams, TokenChunk
from oserve.clock import SimClock
from oserve.errors import EngineStartError, ProfileError
from oserve.profiles.cpu_speed import CpuSpeed
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.profiler import ProfileConfig, Profiler, SweepConfig
from oserve.profiles.sweep import HostResources
from oserve.profiles.table import ProfileTable
from oserve.types import SLO

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


SPEED = CpuSpeed(memory_gbps=12.0, gemm_gflops=80.0, method="stub for the fake engines")


@pytest.fixture(autouse=True)
def _stub_speed_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engines' timings do not come from this core; the real probe is tested in test_profiles_cpu_speed."""
    import oserve.profiles.cpu_speed as cpu_speed

    monkeypatch.setattr(cpu_speed, "measure_cpu_speed", lambda: SPEED)


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
    table = asyncio.run(Profiler(backend, _config(), clock=clock, progress=False,
                                 host=HostResources(cpu_cores=2, memory_bytes=64 << 30)).run(out))
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
    assert table.measured_speed == SPEED and table.measured_on is not None


def test_profiler_writes_the_table_without_a_speed_when_torch_is_missing(tmp_path, monkeypatch) -> None:
    import oserve.profiles.cpu_speed as cpu_speed

    def no_torch() -> CpuSpeed:
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(cpu_speed, "measure_cpu_speed", no_torch)
    clock = SimClock()
    table = asyncio.run(Profiler(FakeBatchBackend(clock), _config(), clock=clock, progress=False,
                                 host=HostResources(cpu_cores=2, memory_bytes=64 << 30)).run(tmp_path / "p.json"))
    assert table.measured_speed is None and table.measured_on is not None


HOST = HostResources(cpu_cores=2, memory_bytes=64 << 30)


def _run(backend, config, out, **kw):
    return asyncio.run(Profiler(backend, config, clock=backend.clock, progress=False, host=HOST, **kw).sweep(out))


def test_profiler_resumes_partial_sweep(tmp_path) -> None:
    clock = SimClock()
    out = tmp_path / "p.json"
    crashing = FakeBatchBackend(clock, fail_after=3)  # dies during the first variant's prefill sweep
    with pytest.raises(ProfileError, match="no candidate could be measured"):
        _run(crashing, _config(), out)  # both candidates failed: recorded, nothing written
    assert not out.exists()
    state = json.loads((tmp_path / "p.json.sweep.json").read_text())
    first = state["candidates"]["smollm2-135m-fp32-1c-s8"]
    assert "fake crash" in first["failed"] and not first.get("done") and len(first["prefill"]) >= 1
    kept = len(first["prefill"])
    healthy = FakeBatchBackend(clock)
    table, report = _run(healthy, _config(), out)
    assert len(table.variants) == 2 and report.failed == {}
    state = json.loads((tmp_path / "p.json.sweep.json").read_text())
    assert len(state["candidates"]["smollm2-135m-fp32-1c-s8"]["prefill"]) == 4  # no duplicate points
    assert "failed" not in state["candidates"]["smollm2-135m-fp32-1c-s8"]
    assert kept < 4
    # a finished sweep is not measured again
    again = FakeBatchBackend(clock)
    _run(again, _config(), out)
    assert again.started == []


class OneBadVariantBackend(FakeBatchBackend):
    """A fake whose bf16 engine fails to start (as a candidate that cannot run would)."""

    async def start_replica(self, spec, replica_id):
        if spec.dtype == "bfloat16":
            self.started.append(spec)
            raise EngineStartError("fake engine cannot start", cause="engine_error")
        return await super().start_replica(spec, replica_id)


def test_failing_candidate_is_recorded_and_the_sweep_goes_on(tmp_path) -> None:
    clock = SimClock()
    config = _config()
    config.variants.insert(0, {**config.variants[1]})  # the bad candidate comes first
    config.variants.pop()
    config.variants.append({"precision": "fp32", "devices_per_replica": 2, "max_num_seqs": 8, "max_model_len": 2048,
                            "max_num_batched_tokens": 2048})
    backend = OneBadVariantBackend(clock)
    table, report = _run(backend, config, tmp_path / "p.json")
    assert set(report.failed) == {"smollm2-135m-bf16-2c-s8"}
    assert "fake engine cannot start" in report.failed["smollm2-135m-bf16-2c-s8"]
    assert set(table.variants) == {"smollm2-135m-fp32-1c-s8", "smollm2-135m-fp32-2c-s8"} == set(report.measured)
    assert ProfileTable.load(tmp_path / "p.json") == table


def test_candidate_that_does_not_fit_is_skipped_before_starting(tmp_path) -> None:
    clock = SimClock()
    config = _config()
    config.variants.append({"precision": "fp32", "devices_per_replica": 4, "max_num_seqs": 8, "max_model_len": 2048,
                            "max_num_batched_tokens": 2048})
    backend = FakeBatchBackend(clock)
    table, report = _run(backend, config, tmp_path / "p.json")
    assert report.skipped == {"smollm2-135m-fp32-4c-s8": "needs 4 CPU cores, this machine offers 2"}
    assert all(s.cpu_cores != (0, 1, 2, 3) for s in backend.started)  # never started
    assert "smollm2-135m-fp32-4c-s8" not in table.variants and len(table.variants) == 2
    small = HostResources(cpu_cores=8, memory_bytes=1 << 20)
    with pytest.raises(ProfileError, match=r"needs .* GiB \(weights \+ KV cache\), 0.0 GiB available"):
        asyncio.run(Profiler(FakeBatchBackend(clock), _config(), clock=clock, progress=False, host=small)
                    .sweep(tmp_path / "q.json"))


def test_measurements_survive_a_config_change(tmp_path) -> None:
    clock = SimClock()
    out = tmp_path / "p.json"
    _run(FakeBatchBackend(clock), _config(), out)
    smaller = _config()
    smaller.variants.pop()  # remove a candidate
    again = FakeBatchBackend(clock)
    table, _ = _run(again, smaller, out)
    assert again.started == [] and set(table.variants) == {"smollm2-135m-fp32-1c-s8"}
    changed = _config()
    changed.variants[1] = {**changed.variants[1], "max_model_len": 1024}  # only this candidate changed
    third = FakeBatchBackend(clock)
    table, _ = _run(third, changed, out)
    assert [s.variant for s in third.started] == ["smollm2-135m-bf16-2c-s8"]
    assert table.variants["smollm2-135m-bf16-2c-s8"].max_model_len == 1024


def test_old_format_state_of_the_same_config_is_adopted(tmp_path) -> None:
    clock = SimClock()
    out = tmp_path / "p.json"
    _run(FakeBatchBackend(clock), _config(), out)
    state_path = tmp_path / "p.json.sweep.json"
    state = json.loads(state_path.read_text())
    old = {"config_digest": _config().digest(),
           "variants": {n: {k: v for k, v in r.items() if k != "digest"} for n, r in state["candidates"].items()}}
    state_path.write_text(json.dumps(old))
    again = FakeBatchBackend(clock)
    _run(again, _config(), out)
    assert again.started == []
    state_path.write_text(json.dumps({**old, "config_digest": "another"}))
    third = FakeBatchBackend(clock)
    _run(third, _config(), out)
    assert len(third.started) == 2 and (tmp_path / "p.json.sweep.json.v1").exists()


def test_slo_nothing_meets_is_reported_with_best_values_not_written(tmp_path) -> None:
    clock = SimClock()
    out = tmp_path / "p.json"
    strict = _config().model_copy(update={"slo": SLO(ttft_s=0.001, tpot_s=0.2)})
    with pytest.raises(ProfileError) as err:
        _run(FakeBatchBackend(clock), strict, out)
    msg = str(err.value)
    assert "no candidate meets the SLO (TTFT 0.001 s" in msg and "best achievable" in msg
    assert re.search(r"best TTFT 0\.\d+ s \(smollm2-135m-", msg)
    assert not out.exists()
    relaxed = FakeBatchBackend(clock)  # a looser SLO needs no new measurement
    table, report = _run(relaxed, _config(), out)
    assert relaxed.started == [] and report.unmet == [] and out.exists()
    assert any(p.capacity_rps > 0 for v in table.variants.values() for p in v.classes.values())
