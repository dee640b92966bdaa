"""The process backend on a fake engine server (a child process serving a fake model over HTTP):
it passes the conformance suite, detects a crashed child, and never leaves a child behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.backends.launch_templates import LaunchTemplate, MetricNames
from oserve.backends.process import ProcessBackend
from oserve.errors import EngineStartError, ReplicaError
from oserve.testing.backend_check import acheck_backend

SERVER = str(Path(__file__).with_name("fake_engine_server.py"))
SPEC = ReplicaSpec(variant="tiny", model="fake", served_model_name="m", max_model_len=256, max_num_seqs=4,
                   cpu_cores=(0,))


class WhitespaceTokenizer:
    """A fake tokenizer matching the fake server's whitespace tokenization."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(range(len(text.split())))


FAKE = LaunchTemplate(
    name="fake", argv=("{python}", SERVER, "--port", "{port}", "--max-model-len", "{max_model_len}",
                       "--max-num-seqs", "{max_num_seqs}"),
    metrics=MetricNames(running="fake_running", waiting="fake_waiting"), ready_timeout_s=60, stop_grace_s=5)


def backend(template: LaunchTemplate = FAKE, **kw: object) -> ProcessBackend:
    return ProcessBackend(template, tokenizer_loader=lambda model: WhitespaceTokenizer(), **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_process_backend_passes_the_suite() -> None:
    report = await acheck_backend(backend, SPEC, long_max_tokens=200, drain_timeout_s=0.05, step_timeout_s=30,
                                  start_timeout_s=90, check_restart=True)
    assert report.steps[-1] == "release" and "drain" in report.steps
    assert report.notes == []  # stats read from /metrics, token ids streamed


async def test_child_is_pinned_and_stopped_with_sigterm() -> None:
    b = backend()
    replica = await b.start_replica(SPEC, "r0")
    try:
        assert os.sched_getaffinity(replica.pid) == {0}
        assert (await replica.stats()).running == 0
    finally:
        await replica.stop()
    assert not alive(replica.pid)
    # the core is free again: a second replica on it starts
    again = await b.start_replica(SPEC, "r1")
    await again.stop()


async def test_a_taken_core_is_refused() -> None:
    b = backend()
    replica = await b.start_replica(SPEC, "r0")
    try:
        with pytest.raises(EngineStartError) as info:
            await b.start_replica(SPEC, "r1")
        assert info.value.cause == "resource_busy"
    finally:
        await replica.stop()


async def test_a_crashed_child_fails_the_replica_and_its_streams() -> None:
    replica = await backend().start_replica(SPEC, "r0")
    try:
        gen = replica.generate("q", "hello world", SamplingParams(max_tokens=200, ignore_eos=True))
        await gen.__anext__()
        os.kill(replica.pid, signal.SIGKILL)
        with pytest.raises(ReplicaError):
            async for _ in gen:
                pass
        for _ in range(100):
            if replica.state == "failed":
                break
            await asyncio.sleep(0.05)
        assert replica.state == "failed"
        assert not await replica.health()
    finally:
        await replica.stop()


async def test_a_child_that_exits_at_start_is_a_typed_error_quoting_its_log() -> None:
    dies = LaunchTemplate(name="dies", argv=("{python}", "-c", "import sys; print('no GPU found'); sys.exit(3)"))
    with pytest.raises(EngineStartError) as info:
        await backend(dies).start_replica(SPEC, "r0")
    assert info.value.cause == "engine_error" and "no GPU found" in str(info.value) and "exit code 3" in str(info.value)


async def test_a_child_never_ready_times_out_and_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hangs = LaunchTemplate(name="hangs", argv=("{python}", "-c", f"import os, time; open({str(pidfile)!r}, 'w')"
                                                                 ".write(str(os.getpid())); time.sleep(600)"),
                           ready_timeout_s=1.5, stop_grace_s=1)
    with pytest.raises(EngineStartError) as info:
        await backend(hangs).start_replica(SPEC, "r0")
    assert info.value.cause == "timeout"
    assert not alive(int(pidfile.read_text()))


async def test_a_missing_executable_and_a_missing_model_are_typed() -> None:
    missing = LaunchTemplate(name="missing", argv=("/nonexistent/engine-server", "--port", "{port}"))
    with pytest.raises(EngineStartError, match="cannot run"):
        await backend(missing).start_replica(SPEC, "r0")
    with pytest.raises(EngineStartError) as info:
        await backend().start_replica(SPEC.model_copy(update={"model": "/nonexistent/model"}), "r0")
    assert info.value.cause == "bad_model_path"


def test_the_child_dies_with_its_owner(tmp_path: Path) -> None:
    """SIGKILL the process that owns a replica: PR_SET_PDEATHSIG takes the engine server down too."""
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_process_backend import backend, SPEC

        async def main():
            replica = await backend().start_replica(SPEC, "r0")
            print(replica.pid, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child = int(owner.stdout.readline())
        assert alive(child)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 20
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        owner.kill()


async def test_the_effective_context_comes_from_the_server() -> None:
    smaller = FAKE.model_copy(update={"argv": (*FAKE.argv, "--effective-max-model-len", "100")})
    replica = await backend(smaller).start_replica(SPEC, "r0")
    try:
        assert replica.max_model_len == 100 and (await replica.stats()).max_model_len == 100
    finally:
        await replica.stop()
