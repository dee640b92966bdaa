"""Resuming a request on another replica after its replica aborted it mid-stream (pure).

A replica aborts its in-flight requests when it drains: at once when the orchestrator migrates
them (``orchestrator.migrate_on_drain``: a precision switch on a shared CPU core, or a GPU replica
going to sleep, should not wait for the longest in-flight decode), else at the drain timeout. Before
the first token the endpoint simply retries the request elsewhere. After it, the request continues
on another replica from where it stopped: the new replica prefills the prompt followed by the output
streamed so far, and generates the remaining ``max_tokens``. This is recompute migration (Llumnix,
OSDI 2024, compares it with KV-cache transfer: the cost is one prefill of prompt + output so far).

What the client sees: the stream goes on; usage counts the original prompt and every output token.
Known differences from an uninterrupted request (documented in docs/serving.md): a text prompt is
continued as text (prompt + output text, tokenized again by the new replica, which may split the seam
differently than the original tokens); sampling with a ``seed`` draws a different random stream after
the seam; presence/frequency penalties see the earlier output as prompt, not output; a stop string
spanning the seam is not matched; with stop strings set, vLLM holds back the last characters of the
text it streams (they might begin a stop string), and a text prompt resumed at that moment continues
without them (the resumed prompt is built from the text streamed, ``max_tokens`` from the tokens).
"""

from __future__ import annotations

from dataclasses import replace

from oserve.backends.base import SamplingParams, TokenChunk

__all__ = ["MAX_RESUMES", "continuation", "shift_chunk"]

#: resumes per request at most: each costs a prefill; more than a few means replicas keep aborting it
MAX_RESUMES = 3


def continuation(prompt: str | list[int], output_text: str, output_ids: list[int], params: SamplingParams
                 ) -> tuple[str | list[int], SamplingParams] | None:
    """The prompt and sampling parameters that continue a request after ``output_ids``.

    Args:
        prompt: the request's original prompt (text, or token ids).
        output_text / output_ids: what was streamed so far (text, token ids).
        params: the original sampling parameters.

    Returns:
        ``(prompt, params)`` for the new replica (``max_tokens`` less the tokens already out), or None
        when nothing is left to generate (the request had reached ``max_tokens``).
    """
    left = params.max_tokens - len(output_ids)
    if left <= 0:
        return None
    new_prompt: str | list[int] = list(prompt) + list(output_ids) if isinstance(prompt, list) else prompt + output_text
    return new_prompt, replace(params, max_tokens=left)


def shift_chunk(chunk: TokenChunk, tokens_before: int, prompt_tokens: int) -> TokenChunk:
    """A resumed replica's chunk as the client's request sees it.

    Args:
        chunk: the chunk from the replica that continues the request.
        tokens_before: output tokens streamed before the resume.
        prompt_tokens: the original prompt's token count (the resumed prompt also holds the earlier output).

    Returns:
        The chunk with ``completion_tokens`` counted from the request's start and the original
        ``prompt_tokens``.
    """
    if tokens_before <= 0:
        return chunk
    return replace(chunk, completion_tokens=chunk.completion_tokens + tokens_before, prompt_tokens=prompt_tokens)
