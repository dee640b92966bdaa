"""Token counting and chat rendering with a Hugging Face tokenizer, shared by the replicas of every
engine that loads a checkpoint (vLLM in-process, an engine's own server as a child process, TensorRT-LLM)."""

from __future__ import annotations

from typing import Any

__all__ = ["HFTokenizerMixin"]


class HFTokenizerMixin:
    """Mixed into a :class:`~oserve.backends.base.Replica` whose ``_tokenizer`` is a Hugging Face tokenizer:
    provides ``tokenizer``, :meth:`count_tokens` and :meth:`render_chat`."""

    _tokenizer: Any

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def count_tokens(self, prompt: str | list[int]) -> int:
        """Prompt tokens: the length of a token-id list, or the tokenizer's count without special tokens."""
        if isinstance(prompt, list):
            return len(prompt)
        return len(self._tokenizer.encode(prompt, add_special_tokens=False))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Apply the model's chat template, ending with the assistant generation prompt."""
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
