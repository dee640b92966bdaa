"""``oserve forecast-backtest TRACE... [--window 10] [--horizons 30,60,300] [--forecasters ...]``.

Bins each trace into per-class arrival rates, replays them through the forecasters (rolling origin,
one tick per bin) and writes the JSON report of :func:`oserve.forecast.backtest.backtest` to
``--output`` (default ``forecast-backtest.json``). It shows a progress bar on stderr and prints a
short table on stdout: per series and forecaster, the class-MAE-sum ratio to ``last`` per horizon,
the under-forecast requests in bursts at the longest horizon and the time per tick (``--json``
prints the whole report instead). With several traces, a merged trace (all on one clock) is added.

The default forecasters (``last,ewma,ewma-auto``) finish in under a minute on the two Azure 2023
traces; ``arima`` refits a model every 120 ticks per class and takes several minutes per series
(add it with ``--forecasters last,ewma,ewma-auto,arima``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
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
    from oserve.cli.errors import report as report_error
    from oserve.forecast.backtest import backtest, total_ticks

    try:
        horizons = parse_csv_floats(args.horizons, "horizons")
        if not args.window > 0:
            raise ConfigError(f"--window must be > 0 seconds, got {args.window}", field="window", allowed="> 0")
        names = [n.strip() for n in args.forecasters.split(",") if n.strip()]
        series = load_series(args.traces, args.window, merged=not args.no_merge)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=total_ticks(series, names), desc="backtest", unit="tick", file=sys.stderr)
        try:
            report = backtest(series, names, horizons, eval_start=args.eval_start, timer=time.perf_counter,
                              progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    except OserveError as exc:
        return report_error(exc)
    text = json.dumps(report, indent=2)
    out = Path(args.output)
    out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    else:
        print_summary(report)
    print(f"oserve forecast-backtest: wrote the full report to {out.resolve()}", file=sys.stderr)
    return 0


def print_summary(report: dict[str, Any]) -> None:
    """Print the short table of :func:`oserve.forecast.backtest.summary_rows` with rich, on stdout."""
    from rich.console import Console
    from rich.table import Table

    from oserve.forecast.backtest import summary_rows

    horizons = [f"{h:g}" for h in report["horizons_s"]]
    longest = horizons[-1]
    t = Table(title=f"forecast backtest: class-MAE-sum ratio to {report['baseline']} (< 1 is better)")
    for col in ("series", "forecaster", *(f"{h} s" for h in horizons), f"burst under @{longest} s (req)",
                "ms/tick"):
        t.add_column(col, justify="left" if col in ("series", "forecaster") else "right")

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for row in summary_rows(report):
        t.add_row(row["series"], row["forecaster"], *(num(row[f"ratio@{h}"], ".3f") for h in horizons),
                  num(row[f"burst_under@{longest}"], ".0f"), num(row["ms_per_tick"], ".2f"))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(t)


def register(subparsers: Any) -> None:
    """Add the ``forecast-backtest`` subcommand."""
    p = subparsers.add_parser("forecast-backtest", help="backtest forecasters on per-class rates of traces",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace files (Azure CSV, BurstGPT, ...)")
    p.add_argument("--window", type=float, default=10.0, help="bin width in seconds (default 10)")
    p.add_argument("--horizons", default="30,60,300", help="forecast horizons in seconds (default 30,60,300)")
    p.add_argument("--forecasters", default="last,ewma,ewma-auto",
                   help="comma-separated registry names (default last,ewma,ewma-auto; arima takes minutes)")
    p.add_argument("--eval-start", type=int, default=30, help="first scored tick (default 30)")
    p.add_argument("--no-merge", action="store_true", help="do not add the merged trace")
    p.add_argument("--output", default="forecast-backtest.json",
                   help="where to write the full JSON report (default forecast-backtest.json)")
    p.add_argument("--json", action="store_true", help="print the full JSON report instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
