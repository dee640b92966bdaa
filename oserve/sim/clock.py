"""The discrete-event simulator's clock: simulated time with timers on the event heap.

:class:`EventClock` is the :class:`~oserve.clock.Clock` the simulator hands to the real
:class:`~oserve.control.switcher.Switcher` (and the workload monitor): ``now()`` is the time of the
event being processed, ``sleep(d)`` wakes when the simulator reaches ``now + d``, and so
``wait_for`` (the base class's race of an awaitable against ``sleep``) times out on simulated time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from oserve.clock import Clock, SimClock
from oserve.sim.events import EventQueue

__all__ = ["EventClock"]


class EventClock(SimClock):
    """Simulated time advanced by the event loop; ``sleep`` and timeouts wake from the heap.

    Args:
        events: the simulator's event queue (timers go there).
        on_wake: called when a timer resolves a waiting coroutine (the engine then lets the
            event loop run before the next event).
        start_s: initial time, seconds.
    """

    def __init__(self, events: EventQueue, on_wake: Callable[[], None], start_s: float = 0.0) -> None:
        super().__init__(start_s)
        self._events = events
        self._on_wake = on_wake

    async def sleep(self, seconds: float) -> None:
        """Wait until the simulator reaches ``now + seconds``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)
                self._on_wake()

        timer = self._events.timer(self._now + max(0.0, seconds), wake)
        try:
            await fut
        finally:
            timer.cancel()

    wait_for = Clock.wait_for  # the race against this clock's sleep: timeouts on simulated time
