"""The router-side wait queue: requests waiting for a free replica slot, first in, first out.

A request waits here when every ready replica that may serve it is at its in-flight limit (its
variant's batch limit, ``max_num_seqs``), or when no replica is ready yet but one is starting.
Waiting here instead of in one engine's queue lets a replica that frees a slot, or a new replica
that becomes ready, take the oldest waiting work at once.

:class:`WaitQueue` only keeps the entries (bounded, FIFO, O(1) removal, their ages); the
:class:`~oserve.server.router.Router` decides which entry a freed slot serves.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from oserve.backends.base import Replica

__all__ = ["WaitQueue", "Waiter"]


@dataclass(eq=False)
class Waiter:
    """One queued request.

    Attributes:
        request_class: its class name, or None.
        needed_tokens: prompt tokens + ``max_tokens``.
        exclude: replica ids it must not go to.
        enqueued_s: when it joined the queue (the router's clock), seconds.
        future: resolved with the replica it was dispatched to (already counted outstanding).
        prompt_tokens: its prompt's tokens (pending prefill tokens once dispatched), or None.
        request_id: its id for the pending prefill tokens, or None.
    """

    request_class: str | None
    needed_tokens: int
    exclude: frozenset[str]
    enqueued_s: float
    future: asyncio.Future[Replica] = field(repr=False)
    key: int = 0
    prompt_tokens: int | None = None
    request_id: str | None = None


class WaitQueue:
    """A bounded FIFO of :class:`Waiter` entries.

    Args:
        max_len: most entries, requests (>= 0; 0 means nothing may wait).

    Attributes:
        max_len: the bound.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = int(max_len)
        self._entries: dict[int, Waiter] = {}
        self._keys = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Waiter]:
        """Entries oldest first (a copy: entries may be removed while iterating)."""
        return iter(list(self._entries.values()))

    def full(self) -> bool:
        """True when no more entries fit."""
        return len(self._entries) >= self.max_len

    def push(self, waiter: Waiter) -> None:
        """Append ``waiter`` (the caller checks :meth:`full` first)."""
        waiter.key = next(self._keys)
        self._entries[waiter.key] = waiter

    def remove(self, waiter: Waiter) -> bool:
        """Remove ``waiter``; False when it was not queued (already dispatched or removed)."""
        return self._entries.pop(waiter.key, None) is not None

    def length(self, request_class: str | None = None) -> int:
        """Entries waiting, of one class or of all when ``request_class`` is None."""
        if request_class is None:
            return len(self._entries)
        return sum(1 for w in self._entries.values() if w.request_class == request_class)

    def oldest_age_s(self, now_s: float) -> float:
        """Age of the oldest entry at ``now_s``, seconds (0 when empty)."""
        for w in self._entries.values():
            return max(0.0, now_s - w.enqueued_s)
        return 0.0

    def by_class(self, now_s: float) -> dict[str, tuple[int, float]]:
        """Per class name (``""`` for None): ``(entries, oldest age at now_s in seconds)``."""
        out: dict[str, tuple[int, float]] = {}
        for w in self._entries.values():
            key = w.request_class or ""
            n, age = out.get(key, (0, 0.0))
            out[key] = (n + 1, max(age, now_s - w.enqueued_s))
        return out
