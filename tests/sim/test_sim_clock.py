"""The simulator's clock: sleeps and timeouts on simulated time, from the event heap."""

from __future__ import annotations

import asyncio

import pytest

from oserve.sim.clock import EventClock
from oserve.sim.events import EventKind, EventQueue


async def drive(q: EventQueue, clock: EventClock, task: asyncio.Future) -> list[float]:
    """Fire the heap's timers in order, as the engine does, until ``task`` is done; returns fire times."""
    fired = []
    for _ in range(50):
        await asyncio.sleep(0)
    while not task.done() and q.heap:
        t, _, _, kind, timer = q.pop()
        assert kind is EventKind.TIMER
        if timer.cancelled:
            continue
        clock.advance_to(t)
        timer.callback()
        fired.append(t)
        for _ in range(50):
            await asyncio.sleep(0)
    return fired


async def test_wait_for_times_out_on_simulated_time() -> None:
    q = EventQueue()
    clock = EventClock(q, lambda: None)

    async def slow() -> str:
        await clock.sleep(10.0)
        return "done"

    task = asyncio.ensure_future(clock.wait_for(slow(), 5.0))
    assert await drive(q, clock, task) == [5.0]
    with pytest.raises(TimeoutError):
        task.result()
    assert clock.now() == 5.0


async def test_wait_for_returns_before_the_timeout_and_drops_its_timer() -> None:
    q = EventQueue()
    clock = EventClock(q, lambda: None)

    async def quick() -> str:
        await clock.sleep(3.0)
        return "done"

    task = asyncio.ensure_future(clock.wait_for(quick(), 5.0))
    assert await drive(q, clock, task) == [3.0]
    assert task.result() == "done" and clock.now() == 3.0
    assert [timer.cancelled for *_, timer in q.heap] == [True]  # the 5 s timeout will not fire
