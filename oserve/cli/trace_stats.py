"""``oserve trace-stats TRACE...``: print a JSON summary of one or more request traces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oserve.errors import ConfigError, TraceError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``trace-stats`` subcommand."""
    p = subparsers.add_parser(
        "trace-stats",
        help="summarise request traces (JSON)",
        description="Print a JSON summary of a trace: requests, duration_s, rate_rps, rate_per_minute, "
        "interarrival_cv, input_tokens, output_tokens, classes. Several traces are merged on their common "
        "clock (each tagged with its file stem) unless --separate is given.",
    )
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace files (Azure, BurstGPT, Mooncake; auto-detected)")
    p.add_argument("--format", default="auto", choices=["auto", "azure", "burstgpt", "mooncake"],
                   help="trace format (default: detect from the header)")
    p.add_argument("--window", type=float, default=600.0, help="window of the per-class shares, seconds (600)")
    p.add_argument("--by", default="class", choices=["class", "source"],
                   help="group by request class (default scheme: input split at 2048, output at 256) or by source tag")
    p.add_argument("--separate", action="store_true", help="print one summary per file instead of merging them")
    p.add_argument("--indent", type=int, default=2, help="JSON indent (0 for one line)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, summarise and print; returns the exit code (2 on a trace or argument error)."""
    from oserve.workload.loaders import load_trace
    from oserve.workload.stats import trace_stats
    from oserve.workload.transforms import merge

    indent = args.indent or None
    try:
        traces = [load_trace(p, fmt=args.format) for p in args.traces]
        if args.separate:
            for path, tr in zip(args.traces, traces, strict=True):
                print(json.dumps({"trace": path, **trace_stats(tr, window_s=args.window, by=args.by)}, indent=indent))
            return 0
        tr = traces[0] if len(traces) == 1 else merge(traces, tags=[_tag(p, t) for p, t in zip(args.traces, traces, strict=True)])
        print(json.dumps(trace_stats(tr, window_s=args.window, by=args.by), indent=indent))
    except (TraceError, ConfigError) as exc:
        from oserve.cli.errors import report

        return report(exc)
    return 0


def _tag(path: str, trace: object) -> str:
    src = getattr(trace, "source", None)
    if src is not None and len(set(src.tolist())) == 1:
        return str(src[0])
    return Path(path).stem
