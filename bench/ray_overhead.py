"""Ray overhead: per-token latency and output tokens/s through a Ray actor vs the same engine in-process.

Replicas of the same variant (the embedded SmolLM2-135M-Instruct, fp32, both pinned to the same
core) run side by side in one process tree:

- ``inprocess``: :class:`oserve.backends.vllm.VLLMBackend` in this process (the engine core in a
  child process, as ``oserve serve`` runs it);
- ``ray``: :class:`oserve.backends.ray.RayBackend` on a local one-node Ray instance: the same engine
  code in an actor, tokens streamed back through one Ray streaming generator per replica whose items
  are the chunks of one engine step (the default, ``multiplexed=True``);
- ``ray_per_request`` (``--per-request``, on by default): ``RayBackend(multiplexed=False)``, one Ray
  streaming generator per request (one Ray item per request and token).

Runs are interleaved (``inprocess`` and ``ray`` alternate, the order flipping each repetition) so
background load on this shared machine hits both alike; only one replica is under load at a time.
Each run sends ``concurrency`` requests at once (1 or 32), ``--tokens`` output tokens each
(``ignore_eos``, greedy), and measures per request TTFT and TPOT ((t_last - t_first) / (n - 1)),
and per run output tokens/s (all output tokens / wall time of the run).

Reported per path and concurrency: median over repetitions of tokens/s, p50/p90 of TPOT and p50 of
TTFT over all requests; ``tokens_per_s_ratio_1`` / ``tokens_per_s_ratio_32`` (ray / in-process)
and ``added_tpot_p50_ms_1`` / ``_32``; the machine's load average before and after; and Ray's
own per-item cost (``ray_stream_cost_no_engine``: an actor that only yields chunks, 1 and 32
streams, wall microseconds per item as the driver sees them). Goals (from the
Ray issue): ratio at 32 concurrent >= 0.95, added TPOT p50 < 2 ms.

Usage::

    python bench/ray_overhead.py [--reps 3] [--tokens 64] [--out bench/results/ray_overhead.json]
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

import numpy as np

from oserve.backends.base import Replica, ReplicaSpec, SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


async def _one(replica: Replica, rid: str, tokens: int) -> tuple[float, float, int]:
    """(TTFT s, TPOT s, output tokens) of one streamed request."""
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    first = last = None
    n = 0
    async for ch in replica.generate(rid, "Tell me a long story about a lighthouse keeper.", params):
        now = time.perf_counter()
        if ch.token_ids:
            first = first if first is not None else now
            last = now
        n = ch.completion_tokens
    assert first is not None and last is not None and n == tokens, (rid, n)
    return first - t0, (last - first) / max(1, n - 1), n


async def _run(replica: Replica, tag: str, concurrency: int, tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = await asyncio.gather(*(_one(replica, f"{tag}-{i}", tokens) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"tokens_per_s": sum(r[2] for r in res) / wall, "ttft_s": [r[0] for r in res],
            "tpot_s": [r[1] for r in res]}


class _ChunkSource:
    """An async actor that only yields ``TokenChunk`` objects: Ray's per-item streaming cost, no engine."""

    async def stream(self, n: int):
        from oserve.backends.base import TokenChunk

        for i in range(n):
            yield TokenChunk(text=" word", token_ids=(1234,), finished=i == n - 1, finish_reason=None,
                             prompt_tokens=12, completion_tokens=i + 1)


async def _stream_cost(items: int, streams: int) -> dict[str, float]:
    """Items/s and microseconds per item through Ray streaming generators from one actor."""
    import ray

    actor = ray.remote(_ChunkSource).options(num_cpus=0).remote()

    async def one() -> int:
        n = 0
        async for ref in actor.stream.options(num_returns="streaming").remote(items):
            await ref
            n += 1
        return n

    await one()  # warm-up: actor start
    t0 = time.perf_counter()
    total = sum(await asyncio.gather(*(one() for _ in range(streams))))
    wall = time.perf_counter() - t0
    ray.kill(actor)
    return {"streams": streams, "items": total, "items_per_s": total / wall, "us_per_item": wall / total * 1e6}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from oserve.backends.embedded_model import ensure_default_model
    from oserve.backends.ray import RayBackend
    from oserve.backends.vllm import VLLMBackend

    load_before = os.getloadavg()
    spec = ReplicaSpec(variant="smollm2-135m-fp32-1c-s32", model=str(ensure_default_model()),
                       served_model_name="smollm2-135m-instruct", dtype="float32", max_num_seqs=32,
                       max_num_batched_tokens=2048, max_model_len=1024, kv_cache_bytes=1 << 29,
                       cpu_cores=(args.core,))
    ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=80 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    ray_backend = RayBackend(cpus_per_core=0.5)
    ray_per_request = RayBackend(cpus_per_core=0.5, multiplexed=False)
    local_backend = VLLMBackend(allow_core_sharing=True)
    replicas: dict[str, Replica] = {}
    try:
        await ray_backend.start()
        replicas["inprocess"] = await local_backend.start_replica(spec, "local")
        replicas["ray"] = await ray_backend.start_replica(spec, "ray")
        if args.per_request:
            replicas["ray_per_request"] = await ray_per_request.start_replica(spec, "ray-per-request")
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {p: {1: [], 32: []} for p in replicas}
        for rep in range(args.reps):
            order = list(replicas) if rep % 2 == 0 else list(reversed(replicas))
            for conc in (1, 32):
                for path in order:
                    runs[path][conc].append(await _run(replicas[path], f"{path}-{rep}-{conc}", conc, args.tokens))
                    print(f"rep {rep} c={conc} {path}: {runs[path][conc][-1]['tokens_per_s']:.1f} tok/s", flush=True)
        stream_cost = [await _stream_cost(2000, 1), await _stream_cost(200, 32)]
    finally:
        for r in replicas.values():
            await r.stop()
        await ray_backend.close()
        ray.shutdown()
    out: dict[str, Any] = {"paths": {}, "ray_stream_cost_no_engine": stream_cost}
    for path, by_conc in runs.items():
        out["paths"][path] = {}
        for conc, rs in by_conc.items():
            tpot = [x for r in rs for x in r["tpot_s"]]
            ttft = [x for r in rs for x in r["ttft_s"]]
            out["paths"][path][str(conc)] = {
                "tokens_per_s_median": float(np.median([r["tokens_per_s"] for r in rs])),
                "tokens_per_s_runs": [round(r["tokens_per_s"], 2) for r in rs],
                "tpot_p50_ms": _pct(tpot, 50) * 1e3, "tpot_p90_ms": _pct(tpot, 90) * 1e3,
                "ttft_p50_ms": _pct(ttft, 50) * 1e3, "requests": len(tpot)}
    p = out["paths"]
    for conc in ("1", "32"):
        for path, suffix in (("ray", ""), ("ray_per_request", "_per_request")):
            if path in p:
                out[f"tokens_per_s_ratio_{conc}{suffix}"] = (p[path][conc]["tokens_per_s_median"]
                                                             / p["inprocess"][conc]["tokens_per_s_median"])
                out[f"added_tpot_p50_ms_{conc}{suffix}"] = p[path][conc]["tpot_p50_ms"] - p["inprocess"][conc]["tpot_p50_ms"]
                # Runs of one repetition ran back to back: their ratio is less exposed to load drift.
                pairs = zip(p[path][conc]["tokens_per_s_runs"], p["inprocess"][conc]["tokens_per_s_runs"], strict=True)
                out[f"tokens_per_s_ratio_{conc}{suffix}_paired_median"] = float(np.median([a / b for a, b in pairs]))
    out["goals"] = {"tokens_per_s_ratio_32_min": 0.95, "added_tpot_p50_ms_max": 2.0,
                    "ratio_32_met": out["tokens_per_s_ratio_32"] >= 0.95,
                    "added_tpot_met": max(out["added_tpot_p50_ms_1"], out["added_tpot_p50_ms_32"]) < 2.0}
    out["setup"] = {"reps": args.reps, "output_tokens": args.tokens, "core": args.core, "model": spec.variant,
                    "ray_version": ray.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                    "note": "shared machine; both replicas pinned to the same core, runs interleaved"}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each (path, concurrency) run")
    ap.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    ap.add_argument("--per-request", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure RayBackend(multiplexed=False): one Ray stream per request")
    ap.add_argument("--core", type=int, default=0, help="core both engines are pinned to")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray_overhead.json")
    a = ap.parse_args()
    result = asyncio.run(main(a))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "paths"}, indent=2))
