"""Run a serving stack on its own event loop in a background thread.

Tests and the demo talk to it over HTTP like any client (the official ``openai`` client, httpx)
and can still run coroutines on the stack's loop (``call``) to inspect replicas.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from oserve.backends.base import Backend
from oserve.config import ServeConfig

__all__ = ["StackThread"]

T = TypeVar("T")


class StackThread:
    """``with StackThread(config) as st: ... st.url ...``; stops the stack on exit.

    Args:
        config: the serve config (``server.port`` 0 picks a free port).
        backend: optional backend override (e.g. a fake one in unit tests).
        start_timeout_s: how long to wait for the stack to come up, seconds.

    Raises:
        Whatever :func:`oserve.compose.start_stack` raised, re-raised in the caller's thread.
    """

    def __init__(self, config: ServeConfig, *, backend: Backend | None = None, start_timeout_s: float = 900.0):
        self.config = config
        self.backend = backend
        self.start_timeout_s = start_timeout_s
        self.stack: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future[Any] = Future()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return str(self.stack.url)

    def _run(self) -> None:
        async def main() -> None:
            from oserve.compose import start_stack

            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.stack = await start_stack(self.config, backend=self.backend)
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            self._ready.set_result(self.stack)
            await self._stop.wait()
            await self.stack.stop()

        asyncio.run(main())

    def start(self) -> StackThread:
        self._thread = threading.Thread(target=self._run, name="oserve-stack", daemon=True)
        self._thread.start()
        self._ready.result(timeout=self.start_timeout_s)
        return self

    def call(self, fn: Callable[[], Awaitable[T]], timeout_s: float = 120.0) -> T:
        """Run ``fn()`` (a coroutine function) on the stack's loop and return its result."""
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(_await(fn), self.loop)
        return fut.result(timeout=timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=120)

    def __enter__(self) -> StackThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _await(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
