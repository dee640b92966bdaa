"""The one clock: wall time when live, simulated time in the simulator.

Policies never read a clock; the orchestrator and the effects (backends, HTTP) read time
only through a :class:`Clock`, so the same control code runs on both.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

__all__ = ["Clock", "WallClock", "SimClock"]


class Clock(ABC):
    """Source of time in seconds (a monotonic float; only differences matter)."""

    @abstractmethod
    def now(self) -> float:
        """Current time in seconds."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class WallClock(Clock):
    """Real time from ``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimClock(Clock):
    """A manually advanced clock for the simulator and for tests.

    ``sleep`` is not supported in async form for discrete-event use: the simulator advances
    time with :meth:`advance_to`. ``sleep`` here advances the clock at once, which keeps simple
    async tests deterministic.
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
