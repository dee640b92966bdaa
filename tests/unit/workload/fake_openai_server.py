"""FakeOpenAIServer: a tiny OpenAI-compatible completions server for replay tests and benchmarks.

Raw asyncio HTTP/1.1 (keep-alive, chunked SSE), loopback only. It streams ``max_tokens`` chunks
of one token each (``token_delay_s`` apart), then a usage chunk and ``[DONE]``. It counts a
prompt's tokens as its whitespace-separated words plus one (a BOS). ``refuse_every=n`` answers
every n-th request with HTTP 503 (to test that refusals are counted).
"""

from __future__ import annotations

import asyncio
import json
import threading


class FakeOpenAIServer:
    """Serve ``POST /v1/completions`` (streaming) and ``GET /v1/models`` on 127.0.0.1.

    Args:
        token_delay_s: pause between streamed tokens, seconds.
        refuse_every: answer every n-th completion with 503 (0 = never).
        model: id listed by ``/v1/models``.
    """

    def __init__(self, token_delay_s: float = 0.0, refuse_every: int = 0, model: str = "fake-model") -> None:
        self.token_delay_s = token_delay_s
        self.refuse_every = refuse_every
        self.model = model
        self.requests_seen = 0
        self.bodies: list[dict] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode().split(" ", 2)
                length = 0
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path.startswith("/v1/models"):
                    self._send_json(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
                elif method == "POST" and path.startswith("/v1/completions"):
                    await self._completion(writer, json.loads(body))
                else:
                    self._send_json(writer, 404, {"error": {"message": f"no route {path}"}})
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _send_json(writer: asyncio.StreamWriter, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)

    async def _completion(self, writer: asyncio.StreamWriter, req: dict) -> None:
        self.requests_seen += 1
        self.bodies.append({k: v for k, v in req.items() if k != "prompt"} | {"prompt_words": len(req["prompt"].split())})
        if self.refuse_every and self.requests_seen % self.refuse_every == 0:
            self._send_json(writer, 503, {"error": {"message": "no replica ready", "code": "no_replica_ready"}})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        n_out = int(req.get("max_tokens", 16))
        n_in = len(req["prompt"].split()) + 1

        def chunk(obj: object) -> bytes:
            payload = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"

        for i in range(n_out):
            if self.token_delay_s > 0:
                await asyncio.sleep(self.token_delay_s)
            writer.write(chunk({"id": "c", "object": "text_completion", "model": self.model,
                                "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]}))
            await writer.drain()
        writer.write(chunk({"id": "c", "object": "text_completion", "model": self.model, "choices": [],
                            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                                      "total_tokens": n_in + n_out}}))
        writer.write(chunk(b"[DONE]") + b"0\r\n\r\n")


class FakeOpenAIServerThread:
    """Run a :class:`FakeOpenAIServer` on its own event loop in a daemon thread (so the client's loop
    does not share CPU time slices with the server's). Use as a context manager; ``url`` is set on entry."""

    def __init__(self, **kwargs: object) -> None:
        self.server = FakeOpenAIServer(**kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> FakeOpenAIServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
