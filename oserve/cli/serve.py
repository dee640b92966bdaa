"""``oserve serve CONFIG.yaml``: start the replicas, the orchestrator and the OpenAI endpoint."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model behind one OpenAI-compatible endpoint")
    p.add_argument("config", help="YAML config (see docs/configuration.md)")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (also OSERVE_API_KEY)")
    p.add_argument("--static", action="store_true", help="ignore the orchestrator section: a fixed deployment")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> int:
    from oserve.cli.preflight import ensure_port_free
    from oserve.compose import start_stack
    from oserve.config import load_config

    # vLLM logs to stdout by default (its engine processes inherit this): logs belong on stderr.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    cfg = load_config(args.config)
    server = cfg.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port),
                                                           ("api_key", args.api_key)) if v is not None})
    cfg = cfg.model_copy(update={"server": server, **({"orchestrator": None} if args.static else {})})
    ensure_port_free(cfg.server.host, cfg.server.port)  # before the engines start, not a minute later
    # Ctrl-C / SIGTERM (handled from here on, start-up included) stop the engines explicitly before
    # the interpreter exits; a second Ctrl-C falls back to the default (the engine watchdog reaps).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        stop.set()
        loop.remove_signal_handler(sig)
        # A terminal's Ctrl-C also reaches the engine processes (same process group; vLLM installs
        # its own SIGINT handler there), so their output handlers log the expected engine death.
        logging.getLogger("vllm.v1.engine.async_llm").setLevel(logging.CRITICAL)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.ensure_future(start_stack(cfg))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # interrupted during start-up: start_stack stops what it started
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        print("oserve: interrupted while starting; stopped", file=sys.stderr, flush=True)
        return 130
    stack = starting.result()
    print(f"oserve: serving {cfg.model.served_name} on {stack.url}/v1 (Ctrl-C to stop)", flush=True)
    await stopping
    print("oserve: stopping (draining requests, shutting down engines)", file=sys.stderr, flush=True)
    await stack.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    from oserve.cli.errors import report
    from oserve.errors import OserveError

    try:
        return asyncio.run(_serve(args))
    except OserveError as exc:
        return report(exc)
