"""Acquire a replica for an HTTP request, waiting in the router-side queue while watching the client.

The endpoint's fast path takes a free slot at once (:meth:`~oserve.server.router.Router.try_acquire`,
no task created); only a request that must wait gets a wait task raced against the client's
disconnect, so a client that leaves while queued leaves the queue at once.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from oserve.backends.base import Replica
from oserve.server.router import Router

__all__ = ["ClientGone", "acquire_watching", "disconnected"]


class ClientGone(Exception):
    """The client disconnected while its request waited in the router-side queue."""


async def disconnected(raw: Request) -> None:
    """Return when the client disconnects (the request body has been read already)."""
    while (await raw.receive())["type"] != "http.disconnect":
        pass


async def acquire_watching(router: Router, request_class: str, needed: int, prompt_tokens: int, prompt_param: str,
                           raw: Request | None, *, request_id: str | None = None) -> Replica:
    """A replica for the request: at once when one has a free slot, else after queueing.

    Args:
        router: the router.
        request_class: the request's class name.
        needed: prompt tokens + ``max_tokens``.
        prompt_tokens / prompt_param: for the 400 naming the field when nothing fits.
        raw: the HTTP request whose disconnect ends the wait (None: no watch).
        request_id: the request's id, to count its prompt as pending prefill tokens on the replica
            (see :meth:`~oserve.server.router.Router.acquire`).

    Raises:
        ClientGone: the client disconnected while queued (its entry was removed).
        the errors of :meth:`~oserve.server.router.Router.acquire_queued`.
    """
    replica = router.try_acquire(request_class, needed, prompt_tokens=prompt_tokens, prompt_param=prompt_param,
                                 request_id=request_id)
    if replica is not None:
        return replica
    wait = asyncio.ensure_future(router.acquire_queued(request_class, needed, prompt_tokens=prompt_tokens,
                                                       prompt_param=prompt_param, request_id=request_id))
    if raw is None:
        return await wait
    watch = asyncio.ensure_future(disconnected(raw))
    returned = False
    try:
        await asyncio.wait({wait, watch}, return_when=asyncio.FIRST_COMPLETED)
        returned = True
    finally:
        watch.cancel()
        if not wait.done():
            wait.cancel()  # the router removes the entry (and releases a slot given meanwhile)
            await asyncio.gather(wait, return_exceptions=True)
        if not returned and wait.done() and not wait.cancelled() and wait.exception() is None:
            # the caller itself was cancelled after the router gave the request a replica (Python 3.11's
            # wait_for returns it even when cancelled): nobody will use or release it but us
            router.release(wait.result().replica_id, request_id)
    if wait.cancelled():
        raise ClientGone
    return wait.result()
