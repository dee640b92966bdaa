"""The simulator's events as data, and the heap that orders them.

An event is ``(time_s, priority, seq, kind, payload)`` on a heap (Vidur and SimPy order events the
same way): ``seq`` is a per-run counter, so ties resolve in insertion order and a run is
deterministic. At equal times the order is: replica ready, replica stopped / drain timeout / clock
timer, arrival, iteration end, control tick (:class:`Priority`). Arrivals are read from the sorted
trace arrays instead of the heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import IntEnum
from typing import Any

__all__ = ["Priority", "EventKind", "Timer", "EventQueue"]


class Priority(IntEnum):
    """Order of events at equal times (lower first)."""

    READY = 0
    STOP = 1
    ARRIVAL = 2
    ITER = 3
    TICK = 4


class EventKind(IntEnum):
    """What an event is; the engine dispatches on it.

    Payloads: ``ITER``: ``(SimReplica, version)``; ``TICK``: None; ``READY`` / ``STOPPED`` /
    ``DRAIN_TIMEOUT``: the :class:`oserve.sim.backend.SimReplicaHandle`; ``TIMER``: a :class:`Timer`.
    """

    ITER = 0
    TICK = 1
    READY = 2
    STOPPED = 3
    DRAIN_TIMEOUT = 4
    TIMER = 5


class Timer:
    """A clock wake-up on the heap (``EventClock.sleep``); cancelled ones are dropped unseen.

    Args:
        callback: called when the timer fires.
    """

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the timer; it neither fires nor counts as an event."""
        self.cancelled = True


class EventQueue:
    """A heap of events with a per-run sequence counter."""

    __slots__ = ("heap", "_seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, EventKind, Any]] = []
        self._seq = 0

    def push(self, t: float, prio: Priority, kind: EventKind, payload: Any = None) -> None:
        """Add an event at ``t`` seconds."""
        self._seq += 1
        heapq.heappush(self.heap, (t, prio, self._seq, kind, payload))

    def timer(self, t: float, callback: Callable[[], None]) -> Timer:
        """Add a :class:`Timer` firing at ``t`` seconds; returns it (to cancel)."""
        timer = Timer(callback)
        self.push(t, Priority.STOP, EventKind.TIMER, timer)
        return timer

    def pop(self) -> tuple[float, int, int, EventKind, Any]:
        """Remove and return the earliest event."""
        return heapq.heappop(self.heap)
