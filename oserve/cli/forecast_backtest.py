"""``oserve forecast-backtest TRACE... [--window 10] [--horizons 30,60,300] [--forecasters ...]``.

Bins each trace into per-class arrival rates, replays them through the forecasters (rolling origin,
one tick per bin) and prints the JSON report of :func:`oserve.forecast.backtest.backtest`. With
several traces, a merged trace (all of them on one clock) is added.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from oserve.errors import ConfigError, OserveError

__all__ = ["register", "load_series", "parse_csv_floats"]


def parse_csv_floats(text: str, field: str) -> list[float]:
    """Parse ``"30,60,300"``. Raises ConfigError naming ``field`` on bad or non-positive values."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{field} must be comma-separated numbers, got {text!r}", field=field,
                          allowed="e.g. 30,60,300") from exc
    if not vals or any(not v > 0 for v in vals):
        raise ConfigError(f"{field} must be positive numbers, got {text!r}", field=field, allowed="> 0")
    return vals


def load_series(paths: list[str], window_s: float, merged: bool = True) -> list[Any]:
    """Load traces and bin them into :class:`~oserve.forecast.backtest.RateSeries` (default class scheme).

    Args:
        paths: trace files (any format ``oserve.workload.loaders.load_trace`` reads).
        window_s: bin width, seconds.
        merged: with two or more traces, also add their merge on the common clock.
    """
    from oserve.forecast.backtest import RateSeries
    from oserve.types import DEFAULT_SCHEME
    from oserve.workload.binning import rates_per_class
    from oserve.workload.loaders import load_trace
    from oserve.workload.transforms import merge

    traces = [load_trace(p) for p in paths]
    named = [(_short_name(p), tr) for p, tr in zip(paths, traces, strict=True)]
    if merged and len(traces) >= 2:
        named.append(("merged", merge(traces, [n for n, _ in named])))
    out = []
    for name, tr in named:
        t, r, _, _ = rates_per_class(tr, DEFAULT_SCHEME, window_s, include_partial=False)
        out.append(RateSeries(name, t, r, tuple(DEFAULT_SCHEME.names), float(window_s)))
    return out


def _short_name(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].split(".")[0]
    for tag in ("code", "conv"):
        if stem.lower().endswith(f"_{tag}"):
            return tag
    return stem


def _run(args: argparse.Namespace) -> int:
    from oserve.forecast.backtest import backtest

    try:
        horizons = parse_csv_floats(args.horizons, "horizons")
        if not args.window > 0:
            raise ConfigError(f"--window must be > 0 seconds, got {args.window}", field="window", allowed="> 0")
        names = [n.strip() for n in args.forecasters.split(",") if n.strip()]
        series = load_series(args.traces, args.window, merged=not args.no_merge)
        report = backtest(series, names, horizons, eval_start=args.eval_start, timer=time.perf_counter)
    except OserveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``forecast-backtest`` subcommand."""
    p = subparsers.add_parser("forecast-backtest", help="backtest forecasters on per-class rates of traces",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace files (Azure CSV, BurstGPT, ...)")
    p.add_argument("--window", type=float, default=10.0, help="bin width in seconds (default 10)")
    p.add_argument("--horizons", default="30,60,300", help="forecast horizons in seconds (default 30,60,300)")
    p.add_argument("--forecasters", default="last,ewma,ewma-auto,arima",
                   help="comma-separated registry names (default last,ewma,ewma-auto,arima)")
    p.add_argument("--eval-start", type=int, default=30, help="first scored tick (default 30)")
    p.add_argument("--no-merge", action="store_true", help="do not add the merged trace")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    p.set_defaults(func=_run)
