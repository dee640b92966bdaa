"""Process backend vs in-process vLLM backend: what the HTTP hop to the engine's own server costs.

Both backends run the embedded SmolLM2-135M-Instruct checkpoint with the same engine settings
(float32, ``max_num_seqs`` 32, ``max_model_len`` 1024, eager mode, 1 GiB KV cache) and the engine's
OpenMP threads bound to ONE core (``VLLM_CPU_OMP_THREADS_BIND``):

- ``in_process``: :class:`oserve.backends.vllm.VLLMBackend` (vLLM's ``AsyncLLM`` in this process);
- ``process``: :class:`oserve.backends.process.ProcessBackend` with the ``vllm`` launch template
  (``python -m vllm.entrypoints.openai.api_server`` as a child process, requests over HTTP/SSE). Its
  server process is not pinned (``pin_process=False``), like the in-process backend's front end,
  which runs in this process: only the engine core is bound to the core in both.

Both replicas are started first, then measured one after the other, never at once, alternating the
order each round (ABBA over ``--rounds``) so that background load that rises or falls hits both
alike. Load is driven at the :class:`~oserve.backends.base.Replica` level (``replica.generate``), so
the numbers isolate the backend: a fixed prompt (about 40 tokens), ``max_tokens`` 64,
``temperature`` 0, ``ignore_eos``; concurrency 1 (8 requests one at a time) and concurrency 32
(64 requests, 32 in flight). Reported per backend and concurrency (pooled over rounds):
requests/s and output tokens/s (wall time from the first request sent to the last one finished),
TTFT p50/p99 (s, to the first chunk) and TPOT p50/p99 (s, (last - first chunk) / (tokens - 1)).
``added`` is process minus in-process; ``tokens_per_s_ratio_32`` is process / in-process output
tokens/s at concurrency 32, pooled over rounds (the goal: >= 0.95), and
``tokens_per_s_ratio_32_per_round`` the same ratio within each round. The 1-minute load average is recorded at the start
of every run: the machine is shared, so compare the two backends within a round.

Usage::

    nice python bench/process_backend.py [--rounds 2] [--out bench/results/process_backend.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from oserve.backends.base import Replica, ReplicaSpec, SamplingParams
from oserve.backends.embedded_model import ensure_default_model
from oserve.backends.launch_templates import get_template
from oserve.backends.process import ProcessBackend
from oserve.backends.vllm import VLLMBackend

PROMPT = ("You are a helpful assistant. Summarise the following in one paragraph: the history of the "
          "printing press, from Gutenberg's movable type to the industrial presses of the nineteenth century.")
MAX_TOKENS = 64


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def one(replica: Replica, rid: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    async for chunk in replica.generate(rid, PROMPT, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0,
                                                                   ignore_eos=True)):
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        tokens = chunk.completion_tokens
    return {"ttft_s": first - t0, "tpot_s": (last - first) / max(1, tokens - 1), "tokens": tokens, "end": last}


async def run(replica: Replica, concurrency: int, n: int, tag: str) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> dict[str, Any]:
        async with sem:
            return await one(replica, f"{tag}-{i}")

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    results = await asyncio.gather(*(limited(i) for i in range(n)))
    wall = max(r["end"] for r in results) - t0
    return {"concurrency": concurrency, "requests": n, "wall_s": wall, "load_avg_1m": load,
            "requests_per_s": n / wall, "output_tokens_per_s": sum(r["tokens"] for r in results) / wall,
            "ttft_s": [r["ttft_s"] for r in results], "tpot_s": [r["tpot_s"] for r in results]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [x for r in runs for x in r["ttft_s"]]
    tpot = [x for r in runs for x in r["tpot_s"]]
    wall = sum(r["wall_s"] for r in runs)
    return {"requests": sum(r["requests"] for r in runs), "requests_per_s": sum(r["requests"] for r in runs) / wall,
            "output_tokens_per_s": sum(r["output_tokens_per_s"] * r["wall_s"] for r in runs) / wall,
            "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99),
            "tpot_p50_s": pct(tpot, 0.5), "tpot_p99_s": pct(tpot, 0.99),
            "per_round_output_tokens_per_s": [r["output_tokens_per_s"] for r in runs],
            "load_avg_1m": [r["load_avg_1m"] for r in runs]}


async def main(rounds: int, out: Path, core: int) -> None:
    spec = ReplicaSpec(variant="fp32-s32", model=str(ensure_default_model()), served_model_name="smollm2",
                       dtype="float32", max_num_seqs=32, max_model_len=1024, kv_cache_bytes=1 << 30,
                       cpu_cores=(core,))
    template = get_template("vllm").model_copy(update={"pin_process": False})
    backends = {"in_process": VLLMBackend(start_timeout_s=600), "process": ProcessBackend(template, ready_timeout_s=600)}
    replicas: dict[str, Replica] = {}
    start_s: dict[str, float] = {}
    try:
        for kind, backend in backends.items():
            t0 = time.perf_counter()
            replicas[kind] = await backend.start_replica(spec, f"bench-{kind}")
            start_s[kind] = time.perf_counter() - t0
            print(f"{kind}: started in {start_s[kind]:.1f} s", flush=True)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {k: {1: [], 32: []} for k in backends}
        order = list(backends)
        for rnd in range(rounds):
            for kind in (order if rnd % 2 == 0 else order[::-1]):
                for conc, n in ((1, 8), (32, 64)):
                    r = await run(replicas[kind], conc, n, f"{kind}-{rnd}-{conc}")
                    runs[kind][conc].append(r)
                    print(f"round {rnd} {kind} c={conc}: {r['output_tokens_per_s']:.1f} tok/s, "
                          f"{r['requests_per_s']:.2f} req/s, load {r['load_avg_1m']:.2f}", flush=True)
    finally:
        for r in replicas.values():
            await r.stop()
    results = {k: {f"c{c}": summarise(v) for c, v in per.items()} for k, per in runs.items()}
    added = {f"c{c}": {key: results["process"][f"c{c}"][key] - results["in_process"][f"c{c}"][key]
                       for key in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")} for c in (1, 32)}
    ratio = results["process"]["c32"]["output_tokens_per_s"] / results["in_process"]["c32"]["output_tokens_per_s"]
    doc = {
        "benchmark": "process backend (vLLM's OpenAI server as a child process) vs in-process vLLM backend",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"processor": platform.processor(), "cpu_count": os.cpu_count(), "engine_core": core},
        "settings": {"model": "SmolLM2-135M-Instruct (embedded)", "dtype": "float32", "max_num_seqs": 32,
                     "max_model_len": 1024, "kv_cache_bytes": 1 << 30, "max_tokens": MAX_TOKENS, "rounds": rounds,
                     "order": "ABBA", "process_server_pinned": False},
        "start_s": start_s,
        "results": results,
        "added": added,
        "tokens_per_s_ratio_32": ratio,
        # the same ratio within each round (the two backends measured back to back): robust to load drift
        "tokens_per_s_ratio_32_per_round": [p["output_tokens_per_s"] / i["output_tokens_per_s"]
                                            for p, i in zip(runs["process"][32], runs["in_process"][32], strict=True)],
        "tokens_per_s_ratio_1": (results["process"]["c1"]["output_tokens_per_s"]
                                 / results["in_process"]["c1"]["output_tokens_per_s"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"tokens_per_s_ratio_32": ratio, "added": added}, indent=2))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--core", type=int, default=(os.cpu_count() or 1) - 1, help="core the engines are bound to")
    p.add_argument("--out", type=Path, default=Path("bench/results/process_backend.json"))
    a = p.parse_args()
    asyncio.run(main(a.rounds, a.out, a.core))
