"""Fixtures of the endpoint unit tests (helpers live in ``oserve_server_support``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from oserve_server_support import RunningServer, serve_factory  # type: ignore[import-not-found]


@pytest.fixture
def serve() -> Callable[..., AbstractAsyncContextManager[RunningServer]]:
    """``async with serve(n_replicas=2, options=..., api_key=...) as srv:`` runs a server for one test."""
    return serve_factory()
