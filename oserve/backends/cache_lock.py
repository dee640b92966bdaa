"""One builder at a time for a cached checkpoint folder, across processes (pure effects helper).

The embedded model's checkpoints are built on first use into a shared cache (``~/.cache/oserve``) through
a ``<folder>.partial`` staging folder. Two processes building at once (parallel test workers, two
``oserve`` commands started together on a fresh machine) would remove each other's staging folder, so
the build holds an exclusive ``flock`` on ``<folder>.lock`` and re-checks the cache once it has it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["build_lock"]


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<folder>.lock`` (created, never removed) while building ``folder``.

    Blocks until no other process holds it; released when the block exits, also on error or process death.
    """
    lock = Path(folder).with_name(Path(folder).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
