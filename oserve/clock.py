"""The one clock: wall time when live, simulated time in the simulator.

Policies never read a clock; the orchestrator, the switcher and the effects (backends, HTTP) read
time, wait and time out only through a :class:`Clock`, so the same control code runs on both:

- :class:`WallClock`: real time (``time.monotonic``, ``asyncio.sleep``, ``asyncio.wait_for``).
- :class:`SimClock`: a manually advanced clock for tests: ``sleep`` moves time forward at once.
  It has no timers of its own, so :meth:`SimClock.wait_for` times out on real time.
- :class:`oserve.sim.clock.EventClock` (a ``SimClock``): the discrete-event simulator's clock; its
  ``sleep`` and ``wait_for`` wake on simulated time, from the simulator's event heap.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Clock", "WallClock", "SimClock"]

T = TypeVar("T")


class Clock(ABC):
    """Source of time in seconds (a monotonic float; only differences matter)."""

    @abstractmethod
    def now(self) -> float:
        """Current time in seconds."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    async def wait_for(self, aw: Awaitable[T], timeout_s: float | None) -> T:
        """Await ``aw`` for at most ``timeout_s`` of this clock's time.

        The default races ``aw`` against :meth:`sleep`, so any clock whose ``sleep`` really waits
        gets timeouts on its own time. Like ``asyncio.wait_for``, ``aw`` is cancelled (and awaited)
        on a timeout, and cancelling the caller cancels it.

        Args:
            aw: a coroutine, task or future.
            timeout_s: seconds of this clock; None waits without limit.

        Returns:
            ``aw``'s result.

        Raises:
            TimeoutError: ``aw`` did not finish within ``timeout_s``.
            Exception: whatever ``aw`` raises.
        """
        if timeout_s is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.sleep(timeout_s))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            timer.cancel()
            await asyncio.gather(task, timer, return_exceptions=True)
            raise
        if task.done():
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise TimeoutError(f"timed out after {timeout_s} s")


class WallClock(Clock):
    """Real time from ``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_for(self, aw: Awaitable[T], timeout_s: float | None) -> T:
        """``asyncio.wait_for`` on real time (see :meth:`Clock.wait_for`)."""
        return await asyncio.wait_for(aw, timeout_s)


class SimClock(Clock):
    """A manually advanced clock for tests (and the base of the simulator's clock).

    ``sleep`` advances the clock at once (and yields to the event loop once), which keeps simple
    async tests deterministic; time otherwise moves only by :meth:`advance_to`. Having no timers,
    :meth:`wait_for` times out on real (wall) time, so a hung call cannot hang a test.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)

    def now(self) -> float:
        return self._now

    def advance_to(self, t_s: float) -> None:
        """Move time forward to ``t_s``. Raises ValueError if ``t_s`` is in the past."""
        if t_s < self._now:
            raise ValueError(f"time cannot go backwards: {t_s} < {self._now}")
        self._now = float(t_s)

    async def sleep(self, seconds: float) -> None:
        self.advance_to(self._now + max(0.0, seconds))
        await asyncio.sleep(0)

    async def wait_for(self, aw: Awaitable[T], timeout_s: float | None) -> T:
        """``asyncio.wait_for`` with ``timeout_s`` read as real seconds (this clock has no timers)."""
        return await asyncio.wait_for(aw, timeout_s)
