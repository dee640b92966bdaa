"""The endpoint keeps idle keep-alive connections longer than client pools reuse them.

With uvicorn's 5-s default, a client pool that keeps idle connections longer (aiohttp: 15 s) may send on a
connection the server is closing and get "connection reset by peer": a lost request (seen once in a demo run).
"""

from __future__ import annotations

import asyncio

import pytest

from oserve.compose.stack import KEEP_ALIVE_S, start_stack
from oserve.config import ServeConfig
from oserve.workload.replay import CLIENT_KEEPALIVE_S

pytestmark = pytest.mark.timeout(60)


def _config() -> ServeConfig:
    return ServeConfig.model_validate({
        "model": {"served_name": "m", "path": "unused"},
        "server": {"host": "127.0.0.1", "port": 0},
        "backend": {"kind": "fake"},
        "cluster": {"nodes": [{"name": "local", "device_type": "cpu", "devices": 1, "device_memory_bytes": 2**32}]},
        "variants": {"v": {}},
        "deployment": [{"variant": "v", "node": "local", "device_ids": [0]}],
    })


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    return head.split(b"\r\n")[0]


async def test_an_idle_connection_is_still_open_after_uvicorns_default_keep_alive() -> None:
    assert CLIENT_KEEPALIVE_S < 5.0 < KEEP_ALIVE_S  # the replay client expires idle connections before servers do
    stack = await start_stack(_config())
    try:
        host, port = stack.url.removeprefix("http://").split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        assert b"200" in await _get(reader, writer)
        await asyncio.sleep(5.5)  # past uvicorn's default keep-alive: the server would have closed it
        assert b"200" in await _get(reader, writer)  # the same connection serves again
        writer.close()
    finally:
        await stack.stop()
