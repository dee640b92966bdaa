"""Engine processes never outlive their owner: a small watchdog process reaps orphaned engines.

vLLM starts each engine core in a child process (and its workers below it); they watch each other
but not the process that owns the engine. When that owner is killed hard (``SIGKILL``, the kernel's
out-of-memory killer) no Python code runs, so the engine core and its workers live on as orphans
holding their memory and ``/dev/shm`` segments. vLLM 0.32 offers no hook to set
``PR_SET_PDEATHSIG`` in the processes it spawns, so oserve starts one watchdog process per owner
(lazily, with the first engine) in its own session (a Ctrl-C to the terminal does not reach it):

- the owner registers each engine's process ids (with their start times, against pid reuse);
- the watchdog polls the owner every ``POLL_S`` seconds and notes, every few seconds, the
  ``/dev/shm`` files the registered processes and their descendants have mapped or open; once the
  owner is gone it kills those processes (``SIGKILL``; ``SIGTERM`` is ignored by a busy engine
  core), removes the segments and exits.

Run as ``python -m oserve.backends.engine_watchdog OWNER_PID``; it reads ``"<pid> <start time>"``
lines on stdin. Only the standard library and psutil are imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

__all__ = ["EngineWatchdog", "engine_watchdog", "shm_files_of", "shm_of_tree", "reap", "children", "new_children"]

log = logging.getLogger(__name__)

#: Seconds between two checks of the owner.
POLL_S = 0.25
#: Every this many polls the watchdog notes the engines' shm segments (an engine may exit before the reap).
SHM_EVERY_POLLS = 8
_SHM = "/dev/shm/"


def _mapped_paths(pid: int) -> list[str] | None:
    """Paths of the file mappings of ``pid`` from ``/proc/PID/maps``; None where it cannot be read.

    ``maps`` lists the mappings without walking the page tables (``psutil``'s ``memory_maps`` reads
    ``smaps``, which does, under the process's memory-map lock: 23 ms for a 1.5 GiB process here,
    paid every ``SHM_EVERY_POLLS x POLL_S`` seconds per engine process).
    """
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    # address perms offset dev inode [path]; the path may contain spaces
    return [parts[5].rstrip("\n") for parts in (line.split(maxsplit=5) for line in lines) if len(parts) == 6]


def shm_files_of(proc: psutil.Process) -> set[str]:
    """``/dev/shm`` files ``proc`` has mapped or open (empty when it cannot be read)."""
    found: set[str] = set()
    paths = _mapped_paths(proc.pid)
    if paths is None:  # no procfs: psutil's portable (slower) reader
        with contextlib.suppress(psutil.Error, OSError):
            paths = [m.path for m in proc.memory_maps(grouped=True)]
    for path in paths or ():
        if path.startswith(_SHM):
            found.add(path.split(" (deleted)")[0])
    with contextlib.suppress(psutil.Error, OSError):
        for f in proc.open_files():
            if f.path.startswith(_SHM):
                found.add(f.path)
    return found


def _alive(pid: int, start_time: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - start_time) > 1e-3 or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


def _tree(registered: dict[int, float]) -> dict[int, psutil.Process]:
    """The registered processes still alive and all their descendants, by pid."""
    procs: dict[int, psutil.Process] = {}
    for pid, start in registered.items():
        p = _alive(pid, start)
        if p is None:
            continue
        procs[p.pid] = p
        with contextlib.suppress(psutil.Error):
            for child in p.children(recursive=True):
                procs[child.pid] = child
    return procs


def shm_of_tree(registered: dict[int, float]) -> set[str]:
    """``/dev/shm`` files the registered processes and their descendants have mapped or open now."""
    found: set[str] = set()
    for p in _tree(registered).values():
        found |= shm_files_of(p)
    return found


def reap(registered: dict[int, float], known_shm: set[str] | None = None) -> tuple[list[int], list[str]]:
    """Kill the registered processes still alive and their descendants; remove their shm segments.

    Args:
        registered: pid -> process start time (``psutil.Process.create_time()``), s since the epoch.
        known_shm: segments seen mapped by these processes earlier (a process may already be gone).

    Returns:
        ``(pids killed, /dev/shm files removed)``.
    """
    procs = _tree(registered)
    shm = set(known_shm or ())
    for p in procs.values():
        shm |= shm_files_of(p)
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.kill()
    removed = []
    for path in sorted(shm):  # unlinking a mapped segment only removes its name; memory goes with the maps
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    psutil.wait_procs(list(procs.values()), timeout=10)
    return sorted(procs), removed


def _main(owner_pid: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides about Ctrl-C, not the terminal
    registered: dict[int, float] = {}
    lock = threading.Lock()

    def read() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2:
                with lock:
                    registered[int(parts[0])] = float(parts[1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        owner = psutil.Process(owner_pid)
    except psutil.Error:
        owner = None
    known_shm: set[str] = set()
    polls = 0
    while owner is not None and owner.is_running() and owner.status() != psutil.STATUS_ZOMBIE:
        time.sleep(POLL_S)
        polls += 1
        if polls % SHM_EVERY_POLLS == 0:  # remember segments while the engines are alive
            with lock:
                known_shm |= shm_of_tree(dict(registered))
    # The owner's end of the pipe is closed now: read what it registered before dying, to the end.
    reader.join(timeout=10)
    with lock:
        todo = dict(registered)
    killed, removed = reap(todo, known_shm)
    if killed:
        print(f"oserve engine watchdog: owner {owner_pid} is gone; killed engine processes {killed}, "
              f"removed {len(removed)} shared-memory segment(s)", file=sys.stderr)
    return 0


class EngineWatchdog:
    """The owner's handle on its watchdog process (started on the first :meth:`watch`)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        """Start the watchdog process if it is not running. Side effects: one child process."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "oserve.backends.engine_watchdog", str(os.getpid())],
                stdin=subprocess.PIPE, text=True, start_new_session=True, close_fds=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )

    @property
    def pid(self) -> int | None:
        """The watchdog's process id, or None before it started."""
        return None if self._proc is None else self._proc.pid

    def watch(self, pids: list[int]) -> None:
        """Register engine processes to kill if this process dies (unknown or gone pids are skipped)."""
        self.ensure_started()
        assert self._proc is not None and self._proc.stdin is not None
        lines = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                lines.append(f"{pid} {psutil.Process(pid).create_time()!r}\n")
        with self._lock, contextlib.suppress(OSError):
            self._proc.stdin.write("".join(lines))
            self._proc.stdin.flush()


_WATCHDOG = EngineWatchdog()


def engine_watchdog() -> EngineWatchdog:
    """This process's watchdog handle (one per process)."""
    return _WATCHDOG


def new_children(before: set[int]) -> list[int]:
    """Ids of this process's descendants not in ``before`` (the watchdog itself excluded)."""
    me = psutil.Process()
    with contextlib.suppress(psutil.Error):
        return [c.pid for c in me.children(recursive=True) if c.pid not in before and c.pid != _WATCHDOG.pid]
    return []


def children() -> set[int]:
    """Ids of this process's descendants now."""
    with contextlib.suppress(psutil.Error):
        return {c.pid for c in psutil.Process().children(recursive=True)}
    return set()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_main(int(sys.argv[1])))
