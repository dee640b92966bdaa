"""Measure the quality of a profile table's precision variants on real vLLM engines and store it.

Quality depends on the checkpoint and the engine dtype, not on cores or batch limits, so each
distinct precision of a table is scored once: the reference precision (fp32) and every other one
score the fixed text of :mod:`oserve.profiles.quality` in an offline ``vllm.LLM`` started in its own
process (one at a time, bound to one core), and each variant of that precision gets the
:class:`~oserve.profiles.quality.VariantQuality` against the reference. The reference's own entry is
the perfect score (it is compared with itself).

Usage::

    python -m oserve.backends.quality_probe examples/profiles/cpu-smollm2.json [-o OUT] [--core 0]

Side effects: starts one engine per precision (each 1-3 min on a loaded 2-core machine) and writes
the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from oserve.errors import ProfileError
from oserve.profiles.quality import TextScores, VariantQuality, compare, parse_prompt_logprobs, reference_text
from oserve.profiles.table import ProfileTable

log = logging.getLogger(__name__)

__all__ = ["ENGINE_DTYPE", "score_text", "score_checkpoint", "measure_table_quality"]

#: engine dtype per precision: int8 W8A8 keeps fp32 for what it does not quantize (the checkpoint's dtype).
ENGINE_DTYPE: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "int8": "float32"}


def score_text(llm: Any, token_ids: list[int]) -> TextScores:
    """Score ``token_ids`` with a running vLLM engine (offline ``vllm.LLM``).

    Args:
        llm: a ``vllm.LLM``; one request with ``prompt_logprobs=1`` and ``max_tokens=1`` is sent.
        token_ids: the text's token ids (at most the engine's ``max_model_len - 1``).

    Raises:
        ValueError: the engine returned no or malformed prompt logprobs.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    out = llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))],
                       SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1), use_tqdm=False)
    if not out or out[0].prompt_logprobs is None:
        raise ValueError("the engine returned no prompt_logprobs")
    return parse_prompt_logprobs(list(token_ids), list(out[0].prompt_logprobs))


def _worker(spec: dict) -> None:
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(spec["core"])
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    llm = LLM(model=spec["model"], dtype=spec["dtype"], max_model_len=2048, max_num_seqs=1,
              enforce_eager=True, enable_prefix_caching=False, seed=0)
    ids = llm.get_tokenizer().encode(reference_text())
    s = score_text(llm, ids)
    Path(spec["out"]).write_text(json.dumps({"token_ids": list(s.token_ids), "logprobs": list(s.logprobs),
                                             "top1_ids": list(s.top1_ids)}))


def score_checkpoint(model: str, dtype: str, core: int = 0, timeout_s: float = 1200) -> TextScores:
    """Score the reference text with ``model`` at ``dtype`` in a fresh engine process.

    Args:
        model: checkpoint folder.
        dtype: engine dtype (``float32``, ``bfloat16``).
        core: CPU core the engine's threads are bound to.
        timeout_s: give up after this long, s.

    Raises:
        ProfileError: the engine process failed or timed out (the tail of its log is included).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.json"
        spec = {"model": model, "dtype": dtype, "core": core, "out": str(out)}
        try:
            proc = subprocess.run([sys.executable, "-m", "oserve.backends.quality_probe", "--worker",
                                   json.dumps(spec)], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ProfileError(f"scoring {model} ({dtype}) timed out after {timeout_s:.0f} s") from exc
        if not out.exists():
            raise ProfileError(f"scoring {model} ({dtype}) failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
        if proc.returncode != 0:  # the scores were written whole (one write) before the process ended
            log.warning("scoring %s (%s): the engine process ended with rc %d after writing its scores",
                        model, dtype, proc.returncode)
        raw = json.loads(out.read_text())
    return TextScores(tuple(raw["token_ids"]), tuple(raw["logprobs"]), tuple(raw["top1_ids"]))


def measure_table_quality(table: ProfileTable, model: str = "default", reference: str = "fp32",
                          core: int = 0) -> ProfileTable:
    """Return ``table`` with ``quality`` set on every variant whose precision has a checkpoint.

    Args:
        table: the profile table (CPU variants of the embedded model, or of ``model``).
        model: ``"default"`` (the embedded SmolLM2: one checkpoint per precision,
            :func:`oserve.backends.embedded_model.ensure_precision_checkpoint`) or one full-precision checkpoint
            folder (then only fp32 and bf16 can be scored, by engine dtype).
        reference: the precision every other one is compared with.
        core: CPU core the engines use.

    Raises:
        ProfileError: an engine failed, or a precision has no checkpoint for ``model``.
    """
    precisions = sorted({v.precision for v in table.variants.values()} | {reference},
                        key=lambda p: (p != reference, p))
    paths: dict[str, str] = {}
    for p in precisions:  # resolve every checkpoint before starting any engine
        if p not in ENGINE_DTYPE:
            raise ProfileError(f"no engine dtype for precision {p!r}; known: {sorted(ENGINE_DTYPE)}")
        if model == "default":
            from oserve.backends.embedded_model import ensure_precision_checkpoint

            paths[p] = str(ensure_precision_checkpoint(p))
        elif p == "int8":
            raise ProfileError("int8 quality needs the embedded model's int8 checkpoint (model: default)")
        else:
            paths[p] = model
    scores = {p: score_checkpoint(path, ENGINE_DTYPE[p], core) for p, path in paths.items()}
    quality: dict[str, VariantQuality] = {p: compare(scores[reference], s, reference) for p, s in scores.items()}
    variants = {n: v.model_copy(update={"quality": quality[v.precision]}) for n, v in table.variants.items()}
    return table.model_copy(update={"variants": variants})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure precision variants' quality and store it in a profile table")
    ap.add_argument("table", nargs="?")
    ap.add_argument("-o", "--out", default=None, help="output table (default: overwrite TABLE)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return
    if not args.table:
        ap.error("TABLE is required")
    table = measure_table_quality(ProfileTable.load(args.table), args.model, core=args.core)
    table.save(args.out or args.table)
    for name, v in sorted(table.variants.items()):
        q = v.quality
        print(f"{name}: top-1 agreement {q.top1_agreement:.3f}, mean |dlogprob| {q.mean_abs_logprob_diff:.4f}, "
              f"perplexity ratio {q.perplexity_ratio:.4f}" if q else f"{name}: -")


if __name__ == "__main__":
    main()
