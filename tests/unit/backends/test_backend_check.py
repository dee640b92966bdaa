"""The conformance suite on the fake backend: it passes, and each deliberately broken fake fails it."""

from __future__ import annotations

import dataclasses

import pytest

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.errors import EngineStartError
from oserve.testing.backend_check import BackendCheckError, acheck_backend, check_backend
from oserve.testing.fake_backend import FakeBackend, FakeReplica, FakeReplicaOptions

SPEC = ReplicaSpec(variant="tiny", model="fake", served_model_name="m", max_model_len=256, max_num_seqs=4)
OPTIONS = FakeReplicaOptions(token_delay_s=0.002)


def fake_factory(replica_cls: type[FakeReplica] = FakeReplica, **kwargs: object):
    """A factory of fake backends whose replicas are ``replica_cls``; the suite's failing spec fails."""

    class _Backend(FakeBackend):
        async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> FakeReplica:
            base = await super().start_replica(spec, replica_id)
            replica = replica_cls(spec, replica_id, base.options)
            self.replicas[replica_id] = replica
            return replica

    return lambda: _Backend(OPTIONS, fail_start_variants={"tiny-bad-start"}, **kwargs)


async def test_fake_backend_passes_the_suite() -> None:
    report = await acheck_backend(fake_factory(), SPEC, long_max_tokens=200, drain_timeout_s=0.05,
                                  step_timeout_s=10, check_restart=True)
    assert report.steps == ["start_failure", "start", "idle_stats", "count_tokens", "generate", "stream", "busy",
                            "abort", "disconnect", "bad_request", "drain", "stop", "release"]
    assert report.start_s is not None and report.decode_tokens_per_s is not None


def test_sync_entry_point_runs_outside_an_event_loop() -> None:
    report = check_backend(fake_factory(), SPEC, long_max_tokens=200, drain_timeout_s=0.05, step_timeout_s=10)
    assert "stop" in report.steps


# -- broken fakes: each breaks one clause of the contract -----------------------------------------
class _AbortIgnored(FakeReplica):
    async def abort(self, request_id: str) -> None:  # never frees the slot
        return None


class _DrainMiscounts(FakeReplica):
    async def drain(self, timeout_s: float) -> int:
        await super().drain(timeout_s)
        return 0


class _HealthyAfterStop(FakeReplica):
    async def health(self) -> bool:
        return True


class _BadRequestIsServerError(FakeReplica):
    def generate(self, request_id, prompt, params: SamplingParams):
        if isinstance(prompt, list) and len(prompt) + params.max_tokens > self.max_model_len:
            from oserve.errors import ReplicaError

            async def fail():
                raise ReplicaError("engine failed", replica_id=self.replica_id)
                yield  # pragma: no cover

            return fail()
        return super().generate(request_id, prompt, params)


class _ReportsNoPromptTokens(FakeReplica):
    async def _generate(self, request_id, prompt, params):
        async for chunk in super()._generate(request_id, prompt, params):
            yield dataclasses.replace(chunk, prompt_tokens=0)


class _StatsAlwaysIdle(FakeReplica):
    async def stats(self):
        s = await super().stats()
        s.running, s.waiting = 0, 0
        return s


class _KeepsServingWhileDraining(FakeReplica):
    async def drain(self, timeout_s: float) -> int:
        n = await super().drain(timeout_s)
        self._state = "ready"
        return n


@pytest.mark.parametrize(("replica_cls", "step"), [
    (_AbortIgnored, "abort"),
    (_DrainMiscounts, "drain"),
    (_HealthyAfterStop, "stop"),
    (_BadRequestIsServerError, "bad_request"),
    (_ReportsNoPromptTokens, "generate"),
    (_StatsAlwaysIdle, "busy"),
    (_KeepsServingWhileDraining, "drain"),
])
async def test_a_broken_fake_fails_at_the_right_step(replica_cls: type[FakeReplica], step: str) -> None:
    with pytest.raises(BackendCheckError) as info:
        await acheck_backend(fake_factory(replica_cls), SPEC, long_max_tokens=200, drain_timeout_s=0.05,
                             step_timeout_s=2)
    assert info.value.step == step


async def test_a_backend_that_starts_anything_fails_start_failure() -> None:
    with pytest.raises(BackendCheckError) as info:
        await acheck_backend(lambda: FakeBackend(OPTIONS), SPEC, step_timeout_s=2)
    assert info.value.step == "start_failure"


async def test_an_untyped_start_failure_fails() -> None:
    class _Raw(FakeBackend):
        async def start_replica(self, spec, replica_id):
            if spec.variant.endswith("bad-start"):
                raise FileNotFoundError(spec.model)
            return await super().start_replica(spec, replica_id)

    with pytest.raises(BackendCheckError, match="expected EngineStartError") as info:
        await acheck_backend(lambda: _Raw(OPTIONS), SPEC, step_timeout_s=2)
    assert info.value.step == "start_failure"


async def test_a_backend_whose_start_fails_fails_start() -> None:
    with pytest.raises(BackendCheckError) as info:
        await acheck_backend(lambda: FakeBackend(OPTIONS, fail_start_variants={"tiny", "tiny-bad-start"}), SPEC)
    assert info.value.step == "start"
    assert isinstance(info.value.__cause__, EngineStartError)
