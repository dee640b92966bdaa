"""The engine watchdog: when the owner is SIGKILLed, the engine processes it registered (and their
children) are killed and their /dev/shm segments removed. Uses stand-in engine processes (plain
Python processes holding a shared-memory segment), not vLLM; tests/integration/test_engine_orphans.py
does the same with a real engine."""

from __future__ import annotations

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

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (Linux)")

# The "engine": holds a shm segment mapped, starts a "worker" child, ignores SIGTERM, runs forever.
ENGINE = textwrap.dedent("""
    import signal, subprocess, sys, time
    from multiprocessing import shared_memory
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    shm = shared_memory.SharedMemory(create=True, size=4096, name=sys.argv[1])
    shm.buf[0] = 1
    worker = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(worker.pid, flush=True)
    time.sleep(600)
""")

OWNER = textwrap.dedent("""
    import json, subprocess, sys, time
    from oserve.backends.engine_watchdog import children, engine_watchdog, new_children
    wd = engine_watchdog()
    wd.ensure_started()
    before = children()
    engine = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
    worker = int(engine.stdout.readline())
    wd.watch(new_children(before))
    print(json.dumps({"engine": engine.pid, "worker": worker, "watchdog": wd.pid}), flush=True)
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkilled_owner_leaves_no_engine_process_or_shm_segment():
    name = f"oserve-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, ENGINE, name], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = json.loads(owner.stdout.readline())
        assert Path("/dev/shm", name).exists()
        assert not _gone(pids["engine"]) and not _gone(pids["worker"])
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_gone(pids[k]) for k in ("engine", "worker", "watchdog")):
            time.sleep(0.1)
        assert _gone(pids["engine"]) and _gone(pids["worker"]), "engine processes outlived their owner"
        assert _gone(pids["watchdog"]), "the watchdog exits once it has reaped"
        assert not Path("/dev/shm", name).exists(), "shared-memory segment left behind"
    finally:
        for key in ("engine", "worker", "watchdog"):
            try:
                psutil.Process(pids[key]).kill()
            except (psutil.Error, NameError, KeyError):
                pass
        owner.kill()
        Path("/dev/shm", name).unlink(missing_ok=True)


def test_watchdog_ignores_dead_and_reused_pids():
    from oserve.backends.engine_watchdog import reap

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = psutil.Process(proc.pid).create_time()
        assert reap({proc.pid: start - 100.0}) == ([], [])  # another process with that pid: left alone
        assert proc.poll() is None
        killed, _ = reap({proc.pid: start})
        assert killed == [proc.pid]
        proc.wait(10)
    finally:
        proc.kill()


def test_shm_files_of_reads_the_mappings_from_proc_maps_including_unlinked_segments():
    import mmap

    from oserve.backends.engine_watchdog import _mapped_paths, shm_files_of

    path = f"/dev/shm/oserve test {os.getpid()}-{time.monotonic_ns()}"  # a space in the name, as paths may have
    with open(path, "wb+") as f:
        f.truncate(4096)
        m = mmap.mmap(f.fileno(), 4096)
    try:
        me = psutil.Process()
        assert path in (_mapped_paths(me.pid) or [])
        assert path in shm_files_of(me)
        os.unlink(path)  # still mapped: /proc/PID/maps shows "<path> (deleted)"
        assert path in shm_files_of(me)
        assert {p for p in shm_files_of(me) if "oserve test" in p} == {path}
    finally:
        m.close()
        if os.path.exists(path):
            os.unlink(path)
    assert path not in shm_files_of(psutil.Process())
    assert _mapped_paths(2**22 + 12345) is None  # no such process
