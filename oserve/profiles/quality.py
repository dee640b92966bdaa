"""Quality of a precision variant against the reference precision, on a fixed text.

A variant (int8 W8A8, bf16) changes the numbers the model computes; how much that matters is
measured, not assumed. The engine scores the fixed reference text shipped with oserve
(``oserve/data/quality_reference.txt``, 492 SmolLM2 tokens of plain English prose) with vLLM's
``prompt_logprobs``: for every position ``i >= 1`` it returns the log-probability of the text's token
``i`` given tokens ``< i`` and the model's most likely (greedy) next token. Comparing a variant's
numbers with those of the reference precision (fp32) gives:

* ``mean_abs_logprob_diff``: mean over positions of ``|lp_variant(i) - lp_ref(i)|`` (nats);
* ``perplexity_ratio``: ``ppl_variant / ppl_ref`` with ``ppl = exp(-mean_i lp(i))``; above 1 is worse;
* ``top1_agreement``: share of positions where the greedy next token equals the reference's.

``top1_agreement`` is the variant's ``score`` (1.0 for the reference itself): it is what a request
class's ``min_quality`` is compared with. These are the usual ways quantization is checked without a
task benchmark (perplexity and logit/top-1 agreement against the unquantized model, as in
llm-compressor's and GPTQ's evaluations), here on a text short enough to score in seconds on a CPU.

The comparison is pure (:func:`compare`); scoring talks to an engine (:func:`score_text`, a vLLM
``LLM`` object passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REFERENCE_TEXT",
    "reference_text",
    "TextScores",
    "VariantQuality",
    "parse_prompt_logprobs",
    "compare",
]

#: file name of the reference text inside ``oserve/data``.
REFERENCE_TEXT = "quality_reference.txt"


def reference_text() -> str:
    """The fixed text variants are scored on (shipped in ``oserve/data``)."""
    return resources.files("oserve").joinpath("data", REFERENCE_TEXT).read_text(encoding="utf-8")


@dataclass(frozen=True)
class TextScores:
    """An engine's scores of one text.

    Attributes:
        token_ids: the text's token ids (N,).
        logprobs: log-probability of ``token_ids[i]`` given the tokens before it, nats (N-1,), i >= 1.
        top1_ids: the most likely token at position ``i`` given the tokens before it (N-1,), i >= 1.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    top1_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.token_ids) - 1
        if n < 1 or len(self.logprobs) != n or len(self.top1_ids) != n:
            raise ValueError(f"TextScores: need N >= 2 token ids and N-1 logprobs/top1 ids, got "
                             f"{len(self.token_ids)}, {len(self.logprobs)}, {len(self.top1_ids)}")


class VariantQuality(BaseModel):
    """Quality of one variant against the reference precision, as stored in the profile table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    reference: str = Field(..., description="precision compared with, e.g. 'fp32'")
    text: str = Field(REFERENCE_TEXT, description="the scored text (a file of oserve/data)")
    tokens: int = Field(..., ge=1, description="positions compared, tokens")
    mean_abs_logprob_diff: float = Field(..., ge=0, description="mean |logprob difference| per token, nats")
    perplexity_ratio: float = Field(..., gt=0, description="perplexity of the variant / of the reference")
    top1_agreement: float = Field(..., ge=0, le=1, description="share of positions with the same greedy token")

    @property
    def score(self) -> float:
        """The quality a request class's ``min_quality`` is compared with: ``top1_agreement``, 0-1."""
        return self.top1_agreement


def parse_prompt_logprobs(token_ids: list[int], prompt_logprobs: list[Any]) -> TextScores:
    """Turn vLLM's ``RequestOutput.prompt_logprobs`` into :class:`TextScores`.

    Args:
        token_ids: the prompt's token ids (N,).
        prompt_logprobs: vLLM's list (N,): ``None`` for position 0, then per position a mapping
            token id -> object with ``.logprob`` and ``.rank`` (rank 1 = most likely); it holds the
            prompt's token and the top-k (request ``prompt_logprobs=1`` or more).

    Raises:
        ValueError: lengths differ, or a position lacks the prompt token or a rank-1 entry.
    """
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"prompt_logprobs has {len(prompt_logprobs)} entries for {len(token_ids)} tokens")
    lps: list[float] = []
    top1: list[int] = []
    for i in range(1, len(token_ids)):
        entry = prompt_logprobs[i]
        if entry is None or token_ids[i] not in entry:
            raise ValueError(f"prompt_logprobs[{i}] lacks the prompt token {token_ids[i]}")
        lps.append(float(entry[token_ids[i]].logprob))
        best = [tid for tid, lp in entry.items() if getattr(lp, "rank", None) == 1]
        if not best:
            raise ValueError(f"prompt_logprobs[{i}] has no rank-1 token; request prompt_logprobs >= 1")
        top1.append(int(best[0]))
    return TextScores(tuple(token_ids), tuple(lps), tuple(top1))


def compare(reference: TextScores, variant: TextScores, reference_name: str = "fp32") -> VariantQuality:
    """Quality of ``variant`` against ``reference`` (both scores of the same text).

    Raises:
        ValueError: the two scored different token sequences.
    """
    if reference.token_ids != variant.token_ids:
        raise ValueError("reference and variant scored different token sequences (different tokenizer or text)")
    n = len(reference.logprobs)
    diff = sum(abs(a - b) for a, b in zip(reference.logprobs, variant.logprobs, strict=True)) / n
    # ppl_v / ppl_ref = exp(mean(lp_ref) - mean(lp_v))
    ratio = math.exp((sum(reference.logprobs) - sum(variant.logprobs)) / n)
    agree = sum(a == b for a, b in zip(reference.top1_ids, variant.top1_ids, strict=True)) / n
    return VariantQuality(reference=reference_name, tokens=n, mean_abs_logprob_diff=diff,
                          perplexity_ratio=ratio, top1_agreement=agree)
