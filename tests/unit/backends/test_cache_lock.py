"""build_lock serialises checkpoint builders across processes (parallel test workers, two commands at once)."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from oserve.backends.cache_lock import build_lock


def _hold(folder: str, log: str, name: str) -> None:
    with build_lock(Path(folder)):
        start = time.monotonic()
        time.sleep(2.0)  # longer than the gap between the two spawns
        with open(log, "a") as fh:
            fh.write(f"{name} {start} {time.monotonic()}\n")


def test_two_processes_never_build_at_once(tmp_path):
    folder, log = tmp_path / "models" / "ckpt", tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=(str(folder), str(log), n)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    spans = sorted((float(s), float(e)) for _, s, e in (line.split() for line in log.read_text().splitlines()))
    assert len(spans) == 2 and spans[1][0] >= spans[0][1]  # the second started after the first released
    assert (tmp_path / "models" / "ckpt.lock").is_file() and not folder.exists()


def test_lock_released_on_error(tmp_path):
    folder = tmp_path / "ckpt"
    try:
        with build_lock(folder):
            raise RuntimeError("build failed")
    except RuntimeError:
        pass
    with build_lock(folder):  # would block forever if the failed build kept it
        pass
