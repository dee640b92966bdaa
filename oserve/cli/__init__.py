"""The ``oserve`` command line. Each subcommand lives in its own module of this package and
exposes ``register(subparsers) -> None``, which adds its parser and sets ``func`` (returning an
exit code)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from oserve.cli.errors import report
from oserve.errors import OserveError

__all__ = ["main"]

# module name -> subcommand(s) it registers; modules are imported only to build the parser.
_SUBCOMMAND_MODULES = (
    "serve",
    "status",
    "trace_stats",
    "replay",
    "forecast_backtest",
    "profile",
    "plan",
    "simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oserve", description="Heterogeneous LLM serving orchestrator")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    for mod_name in _SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(f"oserve.cli.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"oserve.cli.{mod_name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except (OserveError, OSError, ValueError, aiohttp_errors()) as exc:
        # A clear one-line error instead of a traceback; --log-level DEBUG keeps the traceback.
        if args.log_level == "DEBUG":
            raise
        return report(exc)


def aiohttp_errors() -> type[BaseException]:
    """aiohttp's client error class when aiohttp is installed (the replay client's transport)."""
    try:
        from aiohttp import ClientError
    except ImportError:
        return OSError
    return ClientError


if __name__ == "__main__":
    sys.exit(main())
