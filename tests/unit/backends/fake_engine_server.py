"""A fake engine's OpenAI-compatible server, for the process backend's unit tests.

Named *fake*: it serves :class:`~oserve.testing.fake_backend.FakeReplica` (no model) over the same
HTTP surface vLLM's server offers: ``/health``, Prometheus ``/metrics``, and ``/v1/completions``
with server-sent-event streaming, OpenAI's error envelope on a 400, and the request aborted when the
client disconnects.

Run: ``python fake_engine_server.py --port 8000 --max-model-len 256 --max-num-seqs 4``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from oserve.backends.base import ReplicaSpec, SamplingParams
from oserve.errors import InvalidRequestError
from oserve.testing.fake_backend import FakeReplica, FakeReplicaOptions


def make_app(replica: FakeReplica) -> FastAPI:
    app = FastAPI()
    counter = {"n": 0}

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("", status_code=200)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": replica.max_model_len}]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        s = await replica.stats()
        text = (f"# TYPE fake_running gauge\nfake_running{{model=\"m\"}} {s.running or 0}\n"
                f"# TYPE fake_waiting gauge\nfake_waiting{{model=\"m\"}} {s.waiting or 0}\n")
        return PlainTextResponse(text)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        counter["n"] += 1
        params = SamplingParams(max_tokens=int(body["max_tokens"]), temperature=float(body.get("temperature", 1)),
                                ignore_eos=bool(body.get("ignore_eos", False)))
        gen = replica.generate(f"req-{counter['n']}", body["prompt"], params)
        try:
            first = await gen.__anext__()
        except InvalidRequestError as exc:
            return JSONResponse({"error": {"message": exc.message, "type": "BadRequestError", "param": exc.param,
                                           "code": exc.code}}, status_code=400)

        def sse(chunk: Any) -> str:
            return "data: " + json.dumps({
                "choices": [{"index": 0, "text": chunk.text, "finish_reason": chunk.finish_reason,
                             "token_ids": list(chunk.token_ids)}],
                "usage": {"prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens},
            }) + "\n\n"

        async def stream() -> Any:
            try:
                yield sse(first)
                async for chunk in gen:
                    yield sse(chunk)
                yield "data: [DONE]\n\n"
            finally:
                await gen.aclose()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-model-len", type=int, default=256)
    p.add_argument("--max-num-seqs", type=int, default=4)
    p.add_argument("--token-delay-s", type=float, default=0.002)
    p.add_argument("--effective-max-model-len", type=int, default=None, help="context the fake engine 'fits'")
    a = p.parse_args()
    spec = ReplicaSpec(variant="fake", model="fake", served_model_name="m", max_model_len=a.max_model_len,
                       max_num_seqs=a.max_num_seqs)
    replica = FakeReplica(spec, "fake-0", FakeReplicaOptions(token_delay_s=a.token_delay_s,
                                                                   effective_max_model_len=a.effective_max_model_len))
    uvicorn.run(make_app(replica), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
