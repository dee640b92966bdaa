"""Synthetic prompts of an exact token length, for replaying traces that record lengths but not text.

:class:`PromptBuilder` draws single-token words (from the served model's tokenizer, or
:data:`FALLBACK_WORDS` without one) so a prompt of ``n`` tokens is ``n`` words.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from oserve.errors import ConfigError

__all__ = ["FALLBACK_WORDS", "PromptBuilder"]

log = logging.getLogger(__name__)

FALLBACK_WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "it", "that", "for", "was", "on", "are", "with", "as", "at",
    "be", "this", "have", "from", "or", "by", "not", "but", "what", "all", "were", "when", "we", "there",
    "can", "an", "your", "which", "their", "said", "if", "do", "will", "each", "about", "how", "up",
    "out", "them", "then", "she", "many", "some", "so", "these", "would", "other", "into", "has", "more",
    "her", "two", "like", "him", "see", "time", "could", "no", "make", "than", "first", "been", "its",
    "who", "now", "people", "my", "made", "over", "did", "down", "only", "way", "find", "use", "may",
    "water", "long", "little", "very", "after", "words", "called", "just", "where", "most", "know",
)
"""Words used without a tokenizer; each is one token with its leading space in common BPE vocabularies."""


class PromptBuilder:
    """Builds prompts of an exact token count (with a tokenizer) or an approximate one (without).

    Args:
        tokenizer: None, a local folder of a Hugging Face tokenizer (loaded with
            ``transformers.AutoTokenizer``), or an object with ``encode(text, add_special_tokens=...)``
            and ``decode``/``convert_ids_to_tokens``.
        seed: base seed; request ``i`` uses ``seed + i``.
        max_vocab_words: how many single-token words to collect from the vocabulary.
    """

    def __init__(self, tokenizer: Any = None, seed: int = 0, max_vocab_words: int = 4000) -> None:
        if isinstance(tokenizer, str | Path):
            from transformers import AutoTokenizer  # heavy: only when a tokenizer is used

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.tokenizer = tokenizer
        self.seed = seed
        self.exact = tokenizer is not None
        if tokenizer is None:
            self.words: tuple[str, ...] = FALLBACK_WORDS
            self.n_special = 1
        else:
            self.words = self._vocab_words(tokenizer, max_vocab_words)
            self.n_special = len(tokenizer.encode("", add_special_tokens=True))

    @staticmethod
    def _vocab_words(tok: Any, limit: int) -> tuple[str, ...]:
        words: list[str] = []
        size = len(tok)
        for tid in range(min(size, 60000)):
            text = tok.decode([tid])
            if len(text) < 3 or text[0] != " " or not text[1:].isalpha() or not text[1:].isascii():
                continue
            if tok.encode(text, add_special_tokens=False) != [tid]:
                continue
            words.append(text[1:])
            if len(words) >= limit:
                break
        if len(words) < 50:
            raise ConfigError("tokenizer has too few single-token words to synthesise prompts", field="tokenizer",
                              allowed="a BPE/SentencePiece tokenizer with word tokens")
        return tuple(words)

    def count(self, prompt: str) -> int:
        """Tokens the server would count for ``prompt`` (special tokens included); needs a tokenizer."""
        return len(self.tokenizer.encode(prompt, add_special_tokens=True))

    def build(self, n_tokens: int, index: int = 0) -> str:
        """A prompt of ``n_tokens`` tokens (exact with a tokenizer, approximate without)."""
        rng = np.random.default_rng(self.seed + index)
        n_words = max(1, n_tokens - self.n_special)
        picks = rng.integers(0, len(self.words), size=n_words + 16)
        words = [self.words[i] for i in picks]
        if not self.exact:
            return " " + " ".join(words[:n_words])
        m = n_words
        prompt = " " + " ".join(words[:m])
        for _ in range(8):
            got = self.count(prompt)
            if got == n_tokens or (got > n_tokens and m == 1):
                return prompt
            m = max(1, min(len(words), m + (n_tokens - got)))
            if m >= len(words):
                words.extend(self.words[i] for i in rng.integers(0, len(self.words), size=m - len(words) + 16))
            prompt = " " + " ".join(words[:m])
        log.warning("prompt for %d tokens came out at %d tokens", n_tokens, self.count(prompt))
        return prompt
