"""``oserve replay TRACE --url URL``: replay a trace open-loop against an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json

from oserve.errors import ConfigError, TraceError

__all__ = ["register", "run"]

_SUMMARY_LINES = (
    ("requests", "Requests sent", "{:d}"),
    ("skipped_failed", "Failed trace rows skipped", "{:d}"),
    ("completed", "Successful requests", "{:d}"),
    ("failed", "Failed requests (incl. refused)", "{:d}"),
    ("refused", "Refused requests (HTTP 429/503)", "{:d}"),
    ("duration", "Benchmark duration (s)", "{:.2f}"),
    ("total_input_tokens", "Total input tokens", "{:d}"),
    ("total_output_tokens", "Total generated tokens", "{:d}"),
    ("request_throughput", "Request throughput (req/s)", "{:.2f}"),
    ("output_throughput", "Output token throughput (tok/s)", "{:.2f}"),
    ("total_token_throughput", "Total token throughput (tok/s)", "{:.2f}"),
    ("request_goodput", "Request goodput (req/s)", "{:.2f}"),
    ("slo_attainment", "SLO attainment", "{:.3f}"),
    ("mean_ttft_ms", "Mean TTFT (ms)", "{:.2f}"),
    ("median_ttft_ms", "Median TTFT (ms)", "{:.2f}"),
    ("p99_ttft_ms", "P99 TTFT (ms)", "{:.2f}"),
    ("mean_tpot_ms", "Mean TPOT (ms)", "{:.2f}"),
    ("median_tpot_ms", "Median TPOT (ms)", "{:.2f}"),
    ("p99_tpot_ms", "P99 TPOT (ms)", "{:.2f}"),
    ("mean_itl_ms", "Mean ITL (ms)", "{:.2f}"),
    ("median_itl_ms", "Median ITL (ms)", "{:.2f}"),
    ("p99_itl_ms", "P99 ITL (ms)", "{:.2f}"),
    ("mean_e2el_ms", "Mean E2EL (ms)", "{:.2f}"),
    ("median_e2el_ms", "Median E2EL (ms)", "{:.2f}"),
    ("p99_e2el_ms", "P99 E2EL (ms)", "{:.2f}"),
    ("p50_lateness_ms", "P50 send lateness (ms)", "{:.2f}"),
    ("p99_lateness_ms", "P99 send lateness (ms)", "{:.2f}"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser(
        "replay",
        help="replay a trace open-loop against an OpenAI-compatible endpoint",
        description="Send each request of TRACE at its arrival time (open loop) as a streaming /v1/completions "
        "request with max_tokens = the trace's output tokens and ignore_eos, and report vllm-bench-serve "
        "metrics plus goodput and SLO attainment.",
    )
    p.add_argument("trace", metavar="TRACE", help="trace file (Azure, BurstGPT, Mooncake; auto-detected)")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="model id (default: first of GET /v1/models)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="speed-up: send at arrival/X seconds (2 = twice as fast; default 1)")
    p.add_argument("--duration", type=float, default=None, help="send only requests due in the first S seconds")
    p.add_argument("--start", type=float, default=0.0, help="skip the trace's first S seconds (default 0)")
    p.add_argument("--out", default=None, help="write records + summary (.json, or .jsonl one record per line)")
    p.add_argument("--slo", default=None, help="SLOs in seconds, e.g. ttft=2.0,tpot=0.2[,e2e=30]")
    p.add_argument("--tokenizer", default=None,
                   help="local Hugging Face tokenizer folder for exact prompt lengths (default: approximate, "
                   "one common English word per token)")
    p.add_argument("--max-input", type=int, default=None, help="clip input tokens to fit the model")
    p.add_argument("--max-output", type=int, default=None, help="clip output tokens")
    p.add_argument("--max-total", type=int, default=None, help="clip input+output to the model's context")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send the vLLM ignore_eos extension field")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request read timeout, s (600)")
    p.add_argument("--transport", default="auto", choices=["auto", "aiohttp", "httpx"], help="HTTP client")
    p.add_argument("--api-key", default=None, help="bearer token")
    p.add_argument("--seed", type=int, default=0, help="prompt synthesis seed")
    p.add_argument("--include-failed", action="store_true",
                   help="also send the rows the trace marks as failed (BurstGPT: 0 response tokens; any format: "
                   "0 output tokens); by default they are skipped and counted, as vLLM's BurstGPT loader does")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, replay, print the summary, write records; exit code 2 on bad input, 1 if every request failed."""
    from oserve.workload.loaders import load_trace
    from oserve.workload.replay import parse_slo, replay
    from oserve.workload.transforms import clip_tokens, window

    try:
        slo = parse_slo(args.slo)
        trace = load_trace(args.trace)
        if args.start > 0:
            trace = window(trace, args.start, float("inf"))
        if args.max_input or args.max_output or args.max_total:
            trace = clip_tokens(trace, args.max_input, args.max_output, args.max_total)
        result = asyncio.run(replay(
            trace, args.url, args.model, time_scale=args.time_scale, duration_s=args.duration, slo=slo,
            tokenizer=args.tokenizer, ignore_eos=not args.no_ignore_eos, timeout_s=args.timeout,
            api_key=args.api_key, seed=args.seed, transport=args.transport, include_failed=args.include_failed,
        ))
    except (TraceError, ConfigError) as exc:
        from oserve.cli.errors import report

        return report(exc)
    s = result.summary
    print("============ Serving Benchmark Result ============")
    for key, label, fmt in _SUMMARY_LINES:
        v = s.get(key)
        print(f"{label:<40}{'n/a' if v is None else fmt.format(v):>12}")
    if s.get("slo"):
        print(f"{'SLOs (s)':<40}{json.dumps(s['slo']):>12}")
    for err, count in s.get("errors", {}).items():
        print(f"error x{count}: {err}")
    print("==================================================")
    if args.out:
        result.write(args.out)
        print(f"records written to {args.out}")
    return 1 if s["completed"] == 0 else 0
